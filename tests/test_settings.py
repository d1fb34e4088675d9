"""Settings read every variable from the environment or `.env`, derive defaults, and refuse bad values in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from settings import DEFAULT_ALGORITHMS, Settings, SettingsError, load_settings

EVERY_VARIABLE = {
    "OAUTH_PROVIDER": "cognito",
    "OAUTH_DOMAIN": "login.example.com",
    "OAUTH_AUTH_SERVER_ID": "aus1a2b3c4d",
    "OAUTH_TENANT_ID": "6F1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D",
    "OAUTH_ALLOWED_TENANTS": "11111111-2222-4333-8444-555555555555, AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE",
    "OAUTH_REGION": "eu-west-1",
    "OAUTH_USER_POOL_ID": "eu-west-1_AbCdEf123",
    "OAUTH_CLIENT_IDS": "app-one, ,app-two",
    "OAUTH_REQUIRED_TYP": "at+jwt",
    "OAUTH_SCOPE_PREFIX": "mcp-api/",
    "OAUTH_ISSUER": "https://idp.example.com/",
    "OAUTH_AUDIENCE": "api://mcp,https://mcp.example.com/mcp",
    "OAUTH_JWKS_URI": "https://idp.example.com/.well-known/jwks.json",
    "OAUTH_WELL_KNOWN_URL": "https://idp.example.com/.well-known/openid-configuration",
    "OAUTH_ALGORITHMS": "ES256,RS256",
    "OAUTH_LEEWAY_SECONDS": "5",
    "OAUTH_REQUIRED_SCOPES": "mcp:read,mcp:write",
    "OAUTH_JWKS_CACHE_SECONDS": "120",
    "OAUTH_JWKS_REFRESH_COOLDOWN_SECONDS": "2.5",
    "OAUTH_JWKS_MAX_STALE_SECONDS": "60",
    "OAUTH_HTTP_TIMEOUT_SECONDS": "3",
    "OAUTH_MAX_TOKEN_BYTES": "4096",
    "OAUTH_TOKEN_CACHE_ENTRIES": "500",
    "OAUTH_TOKEN_CACHE_SECONDS": "60",
    "OAUTH_REFUSAL_CACHE_SECONDS": "0",
    "OAUTH_MTLS_CLIENT_CERT_HEADER": " X-Client-Cert ",
    "OAUTH_MTLS_CLIENT_CERT_FORMAT": "PEM-URLencoded",
    "OAUTH_INTROSPECTION_ENDPOINT": "https://idp.example.com/oauth2/v1/introspect",
    "OAUTH_INTROSPECTION_CLIENT_ID": "mcp-introspection",
    "OAUTH_INTROSPECTION_CLIENT_SECRET": "introspection-secret",
    "OAUTH_INTROSPECTION_AUTH_METHOD": "client_secret_post",
    "OAUTH_INTROSPECTION_CACHE_SECONDS": "30",
    "OAUTH_INTROSPECTION_AUDIENCE_OPTIONAL": "true",
    "OAUTH_INTROSPECT_JWTS": "true",
    "OAUTH_ISSUERS_FILE": "",  # set with the per-issuer variables above, a file is refused
    "OAUTH_DPOP": " Required",
    "OAUTH_DPOP_ALGORITHMS": "ES256, EdDSA",
    "OAUTH_DPOP_MAX_AGE_SECONDS": "120",
    "OAUTH_DPOP_NONCE": "true",
    "OAUTH_DPOP_NONCE_SECRET": "n" * 32,
    "MCP_SERVER_URL": "https://mcp.example.com/mcp",
    "MCP_STATELESS": "false",
    "MCP_ALLOWED_HOSTS": "gateway.internal,mcp.example.com",
    "MCP_MAX_BODY_BYTES": "2048",
    "CORS_ALLOW_ORIGINS": "https://app.example.com,http://localhost:6274",
    "HOST": "0.0.0.0",
    "PORT": "9100",
    "SHUTDOWN_GRACE_SECONDS": "7",
    "LOG_LEVEL": "warning",
    "FORWARDED_ALLOW_IPS": "10.0.0.0/8, ,192.168.1.10",
    "LOG_FORMAT": "JSON",
    "LOG_FLUSH_SECONDS": "0.5",
    "METRICS_TOKEN": "scrape-token-0123456789",
    "OTEL_SDK_DISABLED": "true",
    "OTEL_TRACES_EXPORTER": "OTLP, console,otlp",
    "OTEL_EXPORTER_OTLP_ENDPOINT": " http://otel-collector:4318 ",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example.com/v1/traces",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "HTTP/protobuf",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    "OTEL_SERVICE_NAME": "mcp-eu-1",
    "DEV_CLIENT_ID": "my-dev-client",
    "DEV_CLIENT_SECRET": "my-dev-secret",
    "DEV_TOKEN_LIFETIME_SECONDS": "600",
    "DEV_TOKEN_FORMAT": "opaque",
    "NOTES_READ_SCOPE": "notes.read",
    "NOTES_WRITE_SCOPE": "api://notes/write",
    "CALCULATOR_SCOPE": "",
    "NOTES_DB_PATH": "/var/lib/mcp/notes.db",
    "NOTES_MAX_TITLE_CHARS": "80",
    "NOTES_MAX_CONTENT_CHARS": "5000",
    "NOTES_MAX_PER_OWNER": "2000",
    "NOTES_DATABASE_URL": "postgresql://notes:pw@db.internal:5433/notes?sslmode=require",
    "NOTES_DB_POOL_MIN": "2",
    "NOTES_DB_POOL_MAX": "20",
    "NOTES_DB_TIMEOUT_SECONDS": "2.5",
}

EXPECTED_VALUES = {
    "oauth_provider": "cognito",
    "oauth_domain": "login.example.com",
    "oauth_auth_server_id": "aus1a2b3c4d",
    "oauth_tenant_id": "6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    "oauth_allowed_tenants": ["11111111-2222-4333-8444-555555555555", "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"],
    "oauth_region": "eu-west-1",
    "oauth_user_pool_id": "eu-west-1_AbCdEf123",
    "oauth_client_ids": ["app-one", "app-two"],
    "oauth_required_typ": "at+jwt",
    "oauth_scope_prefix": "mcp-api/",
    "oauth_issuer": "https://idp.example.com/",  # set explicitly: wins over the cognito preset's issuer
    "oauth_audience": ["api://mcp", "https://mcp.example.com/mcp"],
    "oauth_jwks_uri": "https://idp.example.com/.well-known/jwks.json",
    "oauth_well_known_url": "https://idp.example.com/.well-known/openid-configuration",
    "oauth_algorithms": ["ES256", "RS256"],
    "oauth_leeway_seconds": 5,
    "oauth_required_scopes": ["mcp:read", "mcp:write"],
    "oauth_jwks_cache_seconds": 120,
    "oauth_jwks_refresh_cooldown_seconds": 2.5,
    "oauth_jwks_max_stale_seconds": 60,
    "oauth_http_timeout_seconds": 3.0,
    "oauth_max_token_bytes": 4096,
    "oauth_token_cache_entries": 500,
    "oauth_token_cache_seconds": 60.0,
    "oauth_refusal_cache_seconds": 0.0,
    "oauth_mtls_client_cert_header": "X-Client-Cert",
    "oauth_mtls_client_cert_format": "pem-urlencoded",
    "oauth_introspection_endpoint": "https://idp.example.com/oauth2/v1/introspect",
    "oauth_introspection_client_id": "mcp-introspection",
    "oauth_introspection_client_secret": SecretStr("introspection-secret"),
    "oauth_introspection_auth_method": "client_secret_post",
    "oauth_introspection_cache_seconds": 30.0,
    "oauth_introspection_audience_optional": True,
    "oauth_introspect_jwts": True,
    "oauth_issuers_file": "",
    "oauth_dpop": "required",
    "oauth_dpop_algorithms": ["ES256", "EdDSA"],
    "oauth_dpop_max_age_seconds": 120,
    "oauth_dpop_nonce": True,
    "oauth_dpop_nonce_secret": SecretStr("n" * 32),
    "mcp_server_url": "https://mcp.example.com/mcp",
    "mcp_stateless": False,
    "mcp_allowed_hosts": ["gateway.internal", "mcp.example.com"],
    "mcp_max_body_bytes": 2048,
    "cors_allow_origins": ["https://app.example.com", "http://localhost:6274"],
    "host": "0.0.0.0",
    "port": 9100,
    "shutdown_grace_seconds": 7.0,
    "log_level": "WARNING",
    "forwarded_allow_ips": ["10.0.0.0/8", "192.168.1.10"],
    "log_format": "json",
    "log_flush_seconds": 0.5,
    "metrics_token": SecretStr("scrape-token-0123456789"),
    "otel_sdk_disabled": True,
    "otel_traces_exporter": ["otlp", "console"],
    "otel_exporter_otlp_endpoint": "http://otel-collector:4318",
    "otel_exporter_otlp_traces_endpoint": "https://traces.example.com/v1/traces",
    "otel_exporter_otlp_protocol": "http/protobuf",
    "otel_exporter_otlp_traces_protocol": "http/protobuf",
    "otel_service_name": "mcp-eu-1",
    "dev_client_id": "my-dev-client",
    "dev_token_lifetime_seconds": 600,
    "dev_token_format": "opaque",
    "notes_read_scope": "notes.read",
    "notes_write_scope": "api://notes/write",
    "calculator_scope": "",
    "notes_db_path": "/var/lib/mcp/notes.db",
    "notes_max_title_chars": 80,
    "notes_max_content_chars": 5000,
    "notes_max_per_owner": 2000,
    "notes_database_url": SecretStr("postgresql://notes:pw@db.internal:5433/notes?sslmode=require"),
    "notes_db_pool_min": 2,
    "notes_db_pool_max": 20,
    "notes_db_timeout_seconds": 2.5,
}


def write_dotenv(directory: Path, values: dict[str, str]) -> None:
    lines = [f"{name}={value}" for name, value in values.items()]
    (directory / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(params=["environment", "dotenv"])
def configure(request, monkeypatch, tmp_path):
    """Sets variables either in the process environment or in a `.env` file in the cwd."""

    def apply(values: dict[str, str]) -> None:
        if request.param == "environment":
            for name, value in values.items():
                monkeypatch.setenv(name, value)
        else:
            write_dotenv(tmp_path, values)

    return apply


def settings_error(values: dict[str, str], monkeypatch) -> str:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return str(caught.value)


# --- reading ---------------------------------------------------------------------------------------


def test_the_test_table_covers_every_field():
    assert {name.upper() for name in Settings.model_fields} == set(EVERY_VARIABLE)
    assert set(Settings.model_fields) == {*EXPECTED_VALUES, "dev_client_secret"}


def test_every_variable_is_read(configure):
    configure(EVERY_VARIABLE)
    settings = load_settings()
    for field, expected in EXPECTED_VALUES.items():
        assert getattr(settings, field) == expected, field
    assert settings.dev_client_secret.get_secret_value() == "my-dev-secret"


def test_defaults_without_any_variable():
    settings = load_settings()
    assert settings.oauth_issuer == ""
    assert settings.oauth_algorithms == list(DEFAULT_ALGORITHMS)
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.mcp_server_url == "http://127.0.0.1:8000/mcp"
    assert settings.oauth_audience == ["http://127.0.0.1:8000/mcp"]
    assert settings.oauth_required_scopes == []
    assert settings.cors_allow_origins == []
    assert settings.oauth_jwks_uri is None
    assert settings.oauth_leeway_seconds == 30
    assert settings.log_level == "INFO"
    assert settings.oauth_provider == "oidc"
    assert settings.oauth_auth_server_id == "default"
    assert settings.oauth_client_ids == []
    assert settings.oauth_required_typ == ""


@pytest.mark.parametrize(
    ("variable", "raw", "parsed"),
    [
        ("OAUTH_ALGORITHMS", " RS256 ,, ES256 , ,PS256,", ["RS256", "ES256", "PS256"]),
        ("OAUTH_ALGORITHMS", "RS256,ES256,RS256", ["RS256", "ES256"]),
        ("OAUTH_AUDIENCE", " api://one , ,api://two ", ["api://one", "api://two"]),
        ("OAUTH_REQUIRED_SCOPES", "mcp:read, ,mcp:write ,", ["mcp:read", "mcp:write"]),
        ("MCP_ALLOWED_HOSTS", ",gateway.internal , proxy.internal:8443", ["gateway.internal", "proxy.internal:8443"]),
        ("CORS_ALLOW_ORIGINS", " https://a.example.com ,,*", ["https://a.example.com", "*"]),
        ("CORS_ALLOW_ORIGINS", " , ", []),
    ],
)
def test_comma_separated_lists_are_trimmed_and_empty_items_dropped(configure, variable, raw, parsed):
    configure({variable: raw})
    assert getattr(load_settings(), variable.lower()) == parsed


def test_audience_defaults_to_the_server_url(configure):
    configure({"MCP_SERVER_URL": "https://mcp.example.com/tenant-a/mcp"})
    assert load_settings().oauth_audience == ["https://mcp.example.com/tenant-a/mcp"]


def test_empty_audience_falls_back_to_the_server_url(configure):
    configure({"MCP_SERVER_URL": "https://mcp.example.com/mcp", "OAUTH_AUDIENCE": " , "})
    assert load_settings().oauth_audience == ["https://mcp.example.com/mcp"]


def test_explicit_audience_wins_over_the_server_url(configure):
    configure({"MCP_SERVER_URL": "https://mcp.example.com/mcp", "OAUTH_AUDIENCE": "api://mcp"})
    assert load_settings().oauth_audience == ["api://mcp"]


@pytest.mark.parametrize(
    ("host", "port", "server_url"),
    [
        ("127.0.0.1", "8000", "http://127.0.0.1:8000/mcp"),
        ("localhost", "9001", "http://localhost:9001/mcp"),
        ("0.0.0.0", "9002", "http://localhost:9002/mcp"),
        ("::", "9003", "http://localhost:9003/mcp"),
        ("::1", "9004", "http://[::1]:9004/mcp"),
    ],
)
def test_server_url_defaults_to_host_and_port(configure, host, port, server_url):
    configure({"HOST": host, "PORT": port})
    settings = load_settings()
    assert settings.mcp_server_url == server_url
    assert settings.oauth_audience == [server_url]


@pytest.mark.parametrize(
    "issuer",
    [
        "https://your-tenant.auth0.com/",
        "https://org.okta.com/oauth2/default",
        "https://login.microsoftonline.com/tenant-id/v2.0",
        "https://idp.example.com//",
        "http://127.0.0.1:9000/realms/dev/",
        "http://localhost:8080",
    ],
)
def test_issuer_is_kept_exactly(configure, issuer):
    configure({"OAUTH_ISSUER": issuer})
    settings = load_settings()
    assert settings.oauth_issuer == issuer
    settings.require_issuer()


def test_metadata_url_is_derived_from_the_issuer_unless_configured(monkeypatch):
    monkeypatch.setenv("OAUTH_ISSUER", "https://idp.example.com/")
    assert load_settings().metadata_url == "https://idp.example.com/.well-known/openid-configuration"
    monkeypatch.setenv("OAUTH_WELL_KNOWN_URL", "https://idp.example.com/.well-known/oauth-authorization-server")
    assert load_settings().metadata_url == "https://idp.example.com/.well-known/oauth-authorization-server"


def test_environment_overrides_dotenv(monkeypatch, tmp_path):
    write_dotenv(
        tmp_path,
        {
            "OAUTH_ISSUER": "https://from-dotenv.example.com/",
            "PORT": "9001",
            "OAUTH_REQUIRED_SCOPES": "from:dotenv",
            "LOG_LEVEL": "DEBUG",
        },
    )
    monkeypatch.setenv("OAUTH_ISSUER", "https://from-env.example.com/")
    monkeypatch.setenv("OAUTH_REQUIRED_SCOPES", "from:env")
    settings = load_settings()
    assert settings.oauth_issuer == "https://from-env.example.com/"
    assert settings.oauth_required_scopes == ["from:env"]
    assert settings.port == 9001  # not overridden: still read from .env
    assert settings.log_level == "DEBUG"


def test_dotenv_is_read_from_the_working_directory_only(monkeypatch, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_dotenv(tmp_path, {"PORT": "9001"})
    monkeypatch.chdir(elsewhere)
    assert load_settings().port == 8000


def test_dotenv_unknown_names_and_comments_are_ignored(tmp_path):
    (tmp_path / ".env").write_text(
        "# a comment\nSOMETHING_ELSE=1\nexport PORT=9005\nOAUTH_ISSUER='https://idp.example.com/'\n",
        encoding="utf-8",
    )
    settings = load_settings()
    assert settings.port == 9005
    assert settings.oauth_issuer == "https://idp.example.com/"


def test_lowercase_log_level_is_normalised(configure):
    configure({"LOG_LEVEL": "debug"})
    assert load_settings().log_level == "DEBUG"


def test_dev_client_secret_is_secret(monkeypatch):
    monkeypatch.setenv("DEV_CLIENT_SECRET", "hunter2-secret")
    settings = load_settings()
    assert isinstance(settings.dev_client_secret, SecretStr)
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings.model_dump())


def test_introspection_is_off_by_default_and_on_with_a_client_id(monkeypatch):
    assert not load_settings().introspection_enabled
    monkeypatch.setenv("OAUTH_INTROSPECTION_CLIENT_ID", "mcp")
    monkeypatch.setenv("OAUTH_INTROSPECTION_CLIENT_SECRET", "s3cret-value")
    settings = load_settings()
    assert settings.introspection_enabled
    assert settings.oauth_introspection_auth_method == "client_secret_basic"
    assert settings.oauth_introspection_cache_seconds == 60
    assert "s3cret-value" not in repr(settings)


def test_an_introspection_client_without_a_secret_is_refused(monkeypatch):
    for blank in ("", "  "):
        line = settings_error(
            {"OAUTH_INTROSPECTION_CLIENT_ID": "mcp", "OAUTH_INTROSPECTION_CLIENT_SECRET": blank}, monkeypatch
        )
        assert line.startswith("OAUTH_INTROSPECTION_CLIENT_SECRET: missing")


def test_the_introspection_secret_may_come_from_a_file(monkeypatch, tmp_path):
    (tmp_path / "secret").write_text("from-a-file\n", encoding="utf-8")
    monkeypatch.setenv("OAUTH_INTROSPECTION_CLIENT_ID", "mcp")
    monkeypatch.setenv("OAUTH_INTROSPECTION_CLIENT_SECRET_FILE", str(tmp_path / "secret"))
    secret = load_settings().oauth_introspection_client_secret
    assert secret is not None and secret.get_secret_value() == "from-a-file"


def test_introspection_answers_without_an_audience_need_client_ids(monkeypatch):
    values = {
        "OAUTH_INTROSPECTION_CLIENT_ID": "mcp",
        "OAUTH_INTROSPECTION_CLIENT_SECRET": "s3cret",
        "OAUTH_INTROSPECTION_AUDIENCE_OPTIONAL": "true",
    }
    assert settings_error(values, monkeypatch).startswith(
        "OAUTH_INTROSPECTION_AUDIENCE_OPTIONAL: needs OAUTH_CLIENT_IDS"
    )


@pytest.mark.parametrize("name", ["OAUTH_INTROSPECT_JWTS", "OAUTH_INTROSPECTION_AUDIENCE_OPTIONAL"])
def test_introspection_options_without_introspection_are_refused(monkeypatch, name):
    line = settings_error({name: "true", "OAUTH_CLIENT_IDS": "app"}, monkeypatch)
    assert line == f"{name}: needs OAUTH_INTROSPECTION_CLIENT_ID (introspection is off)"


def test_dpop_nonces_with_dpop_off_are_refused(monkeypatch):
    line = settings_error({"OAUTH_DPOP": "off", "OAUTH_DPOP_NONCE": "true"}, monkeypatch)
    assert line == "OAUTH_DPOP_NONCE: needs OAUTH_DPOP allowed or required (DPoP is off, so no nonce is ever asked for)"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OAUTH_INTROSPECTION_AUTH_METHOD", "private_key_jwt"),
        ("OAUTH_INTROSPECTION_ENDPOINT", "http://idp.example.com/introspect"),
        ("OAUTH_INTROSPECTION_CACHE_SECONDS", "0"),
        ("DEV_TOKEN_FORMAT", "paseto"),
    ],
)
def test_bad_introspection_values_name_their_variable(monkeypatch, name, value):
    assert settings_error({name: value}, monkeypatch).startswith(name + ":")


def test_settings_are_frozen(monkeypatch):
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1


# --- errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("OAUTH_ALGORITHMS", "HS256", "only asymmetric algorithms"),
        ("OAUTH_ALGORITHMS", "RS256,none", "only asymmetric algorithms"),
        ("OAUTH_ALGORITHMS", "hs512", "only asymmetric algorithms"),
        ("OAUTH_ALGORITHMS", "NONE", "only asymmetric algorithms"),
        ("OAUTH_ALGORITHMS", "RS999", "expected some of"),
        ("OAUTH_ALGORITHMS", "rs256", "expected some of"),
        ("OAUTH_ALGORITHMS", " , ", "expected at least one algorithm"),
        ("OAUTH_DPOP", "sometimes", "expected allowed, required or off"),
        ("OAUTH_DPOP_ALGORITHMS", "ES256,HS256", "only asymmetric algorithms"),
        ("OAUTH_DPOP_ALGORITHMS", "none", "only asymmetric algorithms"),
        ("OAUTH_DPOP_MAX_AGE_SECONDS", "0", "greater than or equal to 1"),
        ("OAUTH_DPOP_ALGORITHMS", "ES256 RS256", "(the list is comma-separated)"),
        ("OAUTH_DPOP_NONCE_SECRET", "short", "at least 32 characters"),
        ("PORT", "abc", "valid integer"),
        ("PORT", "0", "greater than or equal to 1"),
        ("PORT", "70000", "less than or equal to 65535"),
        ("OAUTH_LEEWAY_SECONDS", "-1", "greater than or equal to 0"),
        ("OAUTH_JWKS_CACHE_SECONDS", "0", "greater than or equal to 1"),
        ("OAUTH_ISSUER", "not-a-url", "expected an absolute https:// URL"),
        ("OAUTH_ISSUER", "idp.example.com", "expected an absolute https:// URL"),
        ("OAUTH_ISSUER", "ftp://idp.example.com/", "expected an absolute https:// URL"),
        ("OAUTH_ISSUER", "http://idp.example.com/", "plain http is allowed only on loopback"),
        ("OAUTH_ISSUER", "http://localhost.evil.example/", "plain http is allowed only on loopback"),
        ("OAUTH_ISSUER", " https://idp.example.com/", "whitespace"),
        ("OAUTH_ISSUER", "https://idp.example.com/ ", "whitespace"),
        ("OAUTH_ISSUER", "https://idp example.com/", "whitespace"),
        ("OAUTH_ISSUER", "https://idp.exa\tmple.com/", "whitespace"),
        ("OAUTH_ISSUER", "https://idp.example.com/?tenant=a", "without query or fragment"),
        ("OAUTH_ISSUER", "https://idp.example.com/#frag", "without query or fragment"),
        ("OAUTH_ISSUER", "https://idp.example.com/authorize", "not an endpoint or metadata URL"),
        ("OAUTH_ISSUER", "https://idp.example.com/oauth2/token", "not an endpoint or metadata URL"),
        ("OAUTH_ISSUER", "https://idp.example.com/keys/", "not an endpoint or metadata URL"),
        (
            "OAUTH_ISSUER",
            "https://idp.example.com/.well-known/openid-configuration",
            "not an endpoint or metadata URL",
        ),
        ("OAUTH_JWKS_URI", "http://idp.example.com/jwks", "plain http is allowed only on loopback"),
        ("OAUTH_WELL_KNOWN_URL", "idp.example.com/.well-known/x", "expected an absolute https:// URL"),
        ("MCP_SERVER_URL", "https://mcp.example.com/mcp/", "without a trailing slash"),
        ("MCP_SERVER_URL", "mcp.example.com/mcp", "expected an absolute https:// URL"),
        ("MCP_SERVER_URL", "https://mcp example.com/mcp", "whitespace"),
        ("OAUTH_REQUIRED_SCOPES", 'mcp:read,"mcp:write"', "not a valid OAuth scope token"),
        ("OAUTH_REQUIRED_SCOPES", "mcp:read mcp:write", "not a valid OAuth scope token"),
        ("OAUTH_AUDIENCE", 'api://"mcp"', "quote or backslash"),
        ("CORS_ALLOW_ORIGINS", "https://app.example.com/path", "expected origins like https://app.example.com"),
        ("CORS_ALLOW_ORIGINS", "https://app.example.com/", "expected origins like https://app.example.com"),
        ("CORS_ALLOW_ORIGINS", "app.example.com", "expected origins like https://app.example.com"),
        ("LOG_LEVEL", "verbose", "expected DEBUG, INFO, WARNING, ERROR or CRITICAL"),
        ("LOG_FLUSH_SECONDS", "-1", "greater than or equal to 0"),
        ("LOG_FLUSH_SECONDS", "soon", "valid number"),
        ("MCP_STATELESS", "maybe", "valid boolean"),
        ("DEV_CLIENT_ID", "dev:client", "without ':'"),
        ("NOTES_WRITE_SCOPE", "write notes", "not a valid OAuth scope token"),
        ("CALCULATOR_SCOPE", 'use:"calc"', "not a valid OAuth scope token"),
        ("NOTES_DB_PATH", "   ", "expected a file path"),
        ("NOTES_MAX_PER_OWNER", "0", "greater than or equal to 1"),
        ("NOTES_MAX_TITLE_CHARS", "many", "valid integer"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(monkeypatch, variable, value, expected):
    message = settings_error({variable: value}, monkeypatch)
    assert message.startswith(f"{variable}: "), message
    assert expected in message
    assert "\n" not in message
    assert "validation error" not in message  # pydantic's multi-line report is not what users see


def test_bad_value_in_dotenv_names_the_variable(tmp_path):
    write_dotenv(tmp_path, {"OAUTH_ISSUER": "https://idp.example.com/", "OAUTH_ALGORITHMS": "RS256,HS256"})
    with pytest.raises(SettingsError, match=r"^OAUTH_ALGORITHMS: HS256 is not allowed"):
        load_settings()


def test_a_newline_inside_a_value_stays_on_one_line(monkeypatch):
    message = settings_error({"OAUTH_ISSUER": "https://idp.example.com/\nx/"}, monkeypatch)
    assert message.startswith("OAUTH_ISSUER: ")
    assert "\n" not in message


def test_several_bad_values_are_reported_on_one_line(monkeypatch):
    message = settings_error({"PORT": "abc", "LOG_LEVEL": "verbose"}, monkeypatch)
    assert "\n" not in message
    assert "PORT: " in message
    assert "LOG_LEVEL: " in message


@pytest.mark.parametrize("issuer", [None, ""])
def test_missing_issuer_is_refused_with_a_pointer_to_dev_mode(monkeypatch, issuer):
    if issuer is not None:
        monkeypatch.setenv("OAUTH_ISSUER", issuer)
    settings = load_settings()  # a missing issuer is fine for --dev, so loading succeeds
    with pytest.raises(SettingsError) as caught:
        settings.require_issuer()
    message = str(caught.value)
    assert message.startswith("OAUTH_ISSUER: ")
    assert "--dev" in message
    assert "\n" not in message

"""The one settings object: every value comes from the environment or `.env`, read once at start-up."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from auth import providers
from auth.providers import Provider
from secret_files import SecretFileError, SecretFileSettings, file_variable

if TYPE_CHECKING:
    from auth.issuer_config import IssuerConfig

# Asymmetric JWS algorithms this server can verify; HS* and "none" are never among them.
SUPPORTED_ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
    }
)
DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
DEFAULT_DPOP_ALGORITHMS = ("ES256", "ES384", "RS256", "PS256", "EdDSA")
DpopMode = Literal["allowed", "required", "off"]
MIN_DPOP_NONCE_SECRET_CHARS = 32

LogFormat = Literal["text", "json"]
IntrospectionAuthMethod = Literal["client_secret_basic", "client_secret_post"]
LOOPBACK_PROXIES = ("127.0.0.1", "::1")
MIN_METRICS_TOKEN_CHARS = 16
TRACES_EXPORTERS = ("otlp", "console", "none")
OTLP_PROTOCOL = "http/protobuf"
ClientCertFormat = Literal["rfc9440", "pem-urlencoded"]

# RFC 9110 section 5.1: field-name = token; tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
# "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Headers this server reads for another purpose: none of them can carry the client certificate.
_RESERVED_HEADERS = frozenset(
    {"authorization", "dpop", "host", "origin", "cookie", "content-type", "content-length", "transfer-encoding"}
    | {"forwarded", "x-forwarded-for", "x-forwarded-proto", "x-request-id", "mcp-session-id", "mcp-protocol-version"}
)

# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")

CommaList = Annotated[list[str], NoDecode]


class SettingsError(Exception):
    """A configuration value is missing or invalid; the message is one line naming the variable."""


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _check_url(value: str) -> str:
    """An absolute http(s) URL without query or fragment; plain http only on loopback."""
    if any(char.isspace() for char in value):  # urlsplit silently drops tabs and newlines
        raise ValueError(f"expected a URL without whitespace, got {value!r}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an absolute https:// URL, got {value!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"expected a URL without query or fragment, got {value!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError(f"expected https:// (plain http is allowed only on loopback), got {value!r}")
    return value


def _checked_secret(value: Any, check: Callable[[str], None]) -> Any:
    """A secret setting's input: None when it is unset or blank, else passed on once `check` accepts its text."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, str):
        check(raw)
    return value


def _check_database_url(raw: str) -> None:
    # Imported here: psycopg (which parses the URL as libpq does) is needed only when a URL is set.
    from tools.pg_url import check_database_url

    check_database_url(raw)  # its message never repeats the URL: it holds a password


def _check_dpop_nonce_secret(raw: str) -> None:
    if len(raw) < MIN_DPOP_NONCE_SECRET_CHARS:
        raise ValueError(f"expected at least {MIN_DPOP_NONCE_SECRET_CHARS} characters (e.g. openssl rand -hex 32)")


def _check_metrics_token(raw: str) -> None:
    # The value itself never goes into the message: it is a secret.
    if raw != raw.strip() or any(char.isspace() or not char.isprintable() for char in raw):
        raise ValueError("expected a token without spaces or control characters")
    if len(raw) < MIN_METRICS_TOKEN_CHARS:
        raise ValueError(f"expected at least {MIN_METRICS_TOKEN_CHARS} characters (e.g. openssl rand -hex 32)")


class Settings(SecretFileSettings):
    """Configuration of the resource server. Field names are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        frozen=True,
    )

    # --- identity provider -------------------------------------------------------------------
    # A preset derives issuer and JWKS URL from the values in the IdP's console and applies its rules;
    # OAUTH_ISSUER and OAUTH_JWKS_URI, when set, win over what the preset derives.
    oauth_provider: Provider = "oidc"
    oauth_domain: str = ""
    oauth_auth_server_id: str = "default"
    oauth_tenant_id: str = ""
    oauth_allowed_tenants: CommaList = Field(default_factory=list)
    oauth_region: str = ""
    oauth_user_pool_id: str = ""
    oauth_client_ids: CommaList = Field(default_factory=list)
    oauth_required_typ: str = ""
    oauth_scope_prefix: str = ""
    oauth_issuer: str = Field(
        default="",
        description="the IdP's issuer, exactly as it appears in the tokens' iss claim",
    )
    oauth_audience: CommaList = Field(default_factory=list)
    oauth_jwks_uri: str | None = None
    oauth_well_known_url: str | None = None
    oauth_algorithms: CommaList = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS))
    oauth_leeway_seconds: int = Field(default=30, ge=0, le=600)
    oauth_required_scopes: CommaList = Field(default_factory=list)
    oauth_jwks_cache_seconds: int = Field(default=600, ge=1, le=7 * 86400)
    oauth_jwks_refresh_cooldown_seconds: float = Field(default=10.0, ge=0, le=3600)
    oauth_jwks_max_stale_seconds: int = Field(default=6 * 3600, ge=0, le=7 * 86400)
    oauth_http_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    oauth_max_token_bytes: int = Field(default=16384, ge=1024, le=65536)
    # Verification results remembered, keyed by the whole token text (0 turns it off); never past exp or key removal.
    oauth_token_cache_entries: int = Field(default=10_000, ge=0, le=1_000_000)
    oauth_token_cache_seconds: float = Field(default=300, gt=0, le=3600)
    oauth_refusal_cache_seconds: float = Field(default=5, ge=0, le=60)

    # --- opaque tokens: introspection (RFC 7662) ---------------------------------------------------
    # On when the client id is set: a token that is not a JWT (or a JWT the server cannot judge locally) is then
    # asked about at the IdP's introspection endpoint (from discovery unless set), with this client's credentials.
    oauth_introspection_endpoint: str | None = None
    oauth_introspection_client_id: str = ""
    oauth_introspection_client_secret: SecretStr | None = None
    oauth_introspection_auth_method: IntrospectionAuthMethod = "client_secret_basic"
    oauth_introspection_cache_seconds: float = Field(default=60, gt=0, le=3600)
    # Some IdPs' answers carry no `aud` (Okta's org server, Keycloak without an audience mapper): then only the
    # client ids in OAUTH_CLIENT_IDS decide, and a present `aud` must still name this resource.
    oauth_introspection_audience_optional: bool = False
    # JWTs too, after they verify locally: a revoked JWT is refused within OAUTH_INTROSPECTION_CACHE_SECONDS.
    oauth_introspect_jwts: bool = False

    # --- several trusted issuers ----------------------------------------------------------------
    # A TOML file with one [[issuer]] table per trusted issuer (auth/issuer_config.py); each table holds the
    # per-issuer settings above, so those variables are refused next to it (OAUTH_ISSUER among them).
    oauth_issuers_file: str = ""
    _file_issuers: tuple[IssuerConfig, ...] = PrivateAttr(default=())

    # --- DPoP, sender-constrained tokens (RFC 9449; auth/binding.py) ------------------------------
    # allowed: DPoP-bound tokens with proofs and unbound Bearer tokens; required: DPoP only; off: Bearer only.
    oauth_dpop: DpopMode = "allowed"
    oauth_dpop_algorithms: CommaList = Field(default_factory=lambda: list(DEFAULT_DPOP_ALGORITHMS))
    # A proof's iat may be this far behind or ahead of the server's clock; its jti is remembered as long.
    oauth_dpop_max_age_seconds: int = Field(default=300, ge=1, le=3600)
    # Server nonces (RFC 9449 section 8): an HMAC'd timestamp, valid on every replica holding the same secret.
    oauth_dpop_nonce: bool = False
    oauth_dpop_nonce_secret: SecretStr | None = None

    # --- this server ---------------------------------------------------------------------------
    mcp_server_url: str = ""
    mcp_stateless: bool = True
    mcp_allowed_hosts: CommaList = Field(default_factory=list)
    mcp_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    cors_allow_origins: CommaList = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0, le=3600)
    # Peers whose X-Forwarded-For/-Proto are believed (IPs or CIDR networks, or *); empty: none.
    forwarded_allow_ips: CommaList = Field(default_factory=lambda: list(LOOPBACK_PROXIES))
    log_level: str = "INFO"
    log_format: LogFormat = "text"
    # Log lines are written in batches at most this late (WARNING and worse at once); 0 writes each line at once.
    log_flush_seconds: float = Field(default=0.2, ge=0, le=10)
    # When set, GET /metrics needs `Authorization: Bearer <token>`; when unset, only loopback may scrape.
    metrics_token: SecretStr | None = None

    # --- certificate-bound tokens (RFC 8705, behind a gateway that terminates client TLS) -----------------
    # The request header in which the gateway forwards the client's certificate, e.g. Client-Cert; believed only
    # from FORWARDED_ALLOW_IPS peers. Empty (the default): tokens bound to a certificate (cnf.x5t#S256) are refused.
    oauth_mtls_client_cert_header: str = ""
    # How the gateway writes the certificate in that header: rfc9440 (`:base64 of the DER:`, RFC 9440) or
    # pem-urlencoded (NGINX's $ssl_client_escaped_cert, Envoy's %DOWNSTREAM_PEER_CERT%, AWS ALB's).
    oauth_mtls_client_cert_format: ClientCertFormat = "rfc9440"

    # --- tracing (OpenTelemetry's standard variables; web/tracing.py decides from them) ---------------
    # On when OTEL_TRACES_EXPORTER names an exporter (otlp, console) or an OTLP endpoint is set; `none` wins.
    # The SDK reads its other standard variables itself (OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, OTEL_BSP_*).
    otel_sdk_disabled: bool = False
    otel_traces_exporter: CommaList = Field(default_factory=list)
    otel_exporter_otlp_endpoint: str = ""
    otel_exporter_otlp_traces_endpoint: str = ""
    otel_exporter_otlp_protocol: str = ""
    otel_exporter_otlp_traces_protocol: str = ""
    otel_service_name: str = ""

    # --- tools ---------------------------------------------------------------------------------
    # Scope each tool group needs; an empty value means the group needs none.
    notes_read_scope: str = "read:notes"
    notes_write_scope: str = "write:notes"
    calculator_scope: str = "use:calculator"
    notes_db_path: str = "./data/notes.db"
    notes_max_title_chars: int = Field(default=200, ge=1, le=10_000)
    notes_max_content_chars: int = Field(default=100_000, ge=1, le=10_000_000)
    notes_max_per_owner: int = Field(default=1000, ge=1, le=10_000_000)
    # postgresql://user:password@host:port/database (libpq parameters such as ?sslmode=require pass through);
    # when set, notes live in PostgreSQL, shared by every replica, and NOTES_DB_PATH is ignored.
    notes_database_url: SecretStr | None = None
    notes_db_pool_min: int = Field(default=1, ge=0, le=1000)
    notes_db_pool_max: int = Field(default=10, ge=1, le=1000)
    # The longest a notes call waits for the database (a pooled connection, then the query) before a tool error.
    notes_db_timeout_seconds: float = Field(default=5.0, gt=0, le=300)

    # --- embedded development issuer (python server.py --dev only) ------------------------------
    dev_client_id: str = "dev-client"
    dev_client_secret: SecretStr = SecretStr("dev-secret")
    dev_token_lifetime_seconds: int = Field(default=3600, ge=60, le=86400)
    # opaque: random tokens the dev issuer answers for at its introspection endpoint (RFC 7662)
    dev_token_format: Literal["jwt", "opaque"] = "jwt"  # noqa: S105 - a format name, not a secret

    @field_validator(
        "oauth_audience",
        "oauth_allowed_tenants",
        "oauth_client_ids",
        "oauth_algorithms",
        "oauth_dpop_algorithms",
        "oauth_required_scopes",
        "mcp_allowed_hosts",
        "cors_allow_origins",
        "forwarded_allow_ips",
        "otel_traces_exporter",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("oauth_issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        # Never normalised: the issuer is compared to `iss` as an exact string.
        if not value:
            return value
        if value != value.strip():
            raise ValueError("expected no surrounding whitespace")
        _check_url(value)
        path = urlsplit(value).path
        if "/.well-known/" in path or path.rstrip("/").endswith(("/authorize", "/token", "/keys", "/jwks")):
            raise ValueError(f"expected the issuer URL, not an endpoint or metadata URL, got {value!r}")
        return value

    @field_validator("oauth_jwks_uri", "oauth_well_known_url", "oauth_introspection_endpoint")
    @classmethod
    def _optional_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        return _check_url(value)

    @field_validator("mcp_server_url")
    @classmethod
    def _server_url(cls, value: str) -> str:
        if value:
            _check_url(value)
            if value.endswith("/") and urlsplit(value).path != "/":
                raise ValueError(f"expected the MCP endpoint URL without a trailing slash, got {value!r}")
        return value

    @field_validator("oauth_algorithms", "oauth_dpop_algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one algorithm")
        for alg in value:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(f"{alg} is not allowed: only asymmetric algorithms are accepted")
            if alg not in SUPPORTED_ALGORITHMS:
                hint = " (the list is comma-separated)" if any(char.isspace() for char in alg) else ""
                raise ValueError(
                    f"unknown algorithm {alg!r}{hint}; expected some of {', '.join(sorted(SUPPORTED_ALGORITHMS))}"
                )
        return list(dict.fromkeys(value))

    @field_validator("oauth_required_scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not _SCOPE_TOKEN.match(scope):
                raise ValueError(f"{scope!r} is not a valid OAuth scope token")
        return value

    @field_validator("notes_read_scope", "notes_write_scope", "calculator_scope")
    @classmethod
    def _tool_scope(cls, value: str) -> str:
        value = value.strip()
        if value and not _SCOPE_TOKEN.match(value):
            raise ValueError(f"{value!r} is not a valid OAuth scope token (one scope, no spaces or quotes)")
        return value

    @field_validator("notes_db_path")
    @classmethod
    def _db_path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError('expected a file path, or ":memory:" for a throwaway database')
        return value

    @field_validator("oauth_introspection_client_secret", mode="before")
    @classmethod
    def _introspection_secret(cls, value: Any) -> Any:
        return _checked_secret(value, lambda raw: None)  # any text the IdP issued; blank counts as unset

    @field_validator("notes_database_url", mode="before")
    @classmethod
    def _database_url(cls, value: Any) -> Any:
        return _checked_secret(value, _check_database_url)

    @field_validator("oauth_audience")
    @classmethod
    def _audiences(cls, value: list[str]) -> list[str]:
        for aud in value:
            if '"' in aud or "\\" in aud:
                raise ValueError(f"{aud!r} contains a quote or backslash")
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*":
                parts = urlsplit(origin)
                if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or origin.endswith("/"):
                    raise ValueError(f"expected origins like https://app.example.com or *, got {origin!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}")
        return level

    @field_validator("log_format", "oauth_mtls_client_cert_format", "oauth_dpop", mode="before")
    @classmethod
    def _choice(cls, value: Any, info: ValidationInfo) -> Any:
        """One of a Literal field's names, in any case and with blanks around it; the error lists the names."""
        if isinstance(value, str):
            value = value.strip().lower()
            choices = get_args(cls.model_fields[info.field_name or ""].annotation)
            if value not in choices:
                listed = " or ".join(filter(None, (", ".join(choices[:-1]), choices[-1])))
                raise ValueError(f"expected {listed}, got {value!r}")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _forwarded_allow_ips(cls, value: list[str]) -> list[str]:
        if "*" in value:
            if len(value) > 1:
                raise ValueError("expected * alone (trust every peer) or a list of IPs and CIDR networks")
            return value
        for item in value:
            try:
                if "/" in item:
                    ipaddress.ip_network(item, strict=False)
                else:
                    ipaddress.ip_address(item)
            except ValueError:
                raise ValueError(f"expected IP addresses or CIDR networks like 10.0.0.0/8, got {item!r}") from None
        return value

    @field_validator("oauth_mtls_client_cert_header")
    @classmethod
    def _client_cert_header(cls, value: str) -> str:
        value = value.strip()
        if value and not _HEADER_NAME.match(value):
            raise ValueError(f"expected an HTTP header name like Client-Cert, got {value!r}")
        if value.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{value} is read by this server for another purpose; expected e.g. Client-Cert")
        return value

    @field_validator("oauth_dpop_nonce_secret", mode="before")
    @classmethod
    def _dpop_nonce_secret(cls, value: Any) -> Any:
        return _checked_secret(value, _check_dpop_nonce_secret)

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _metrics_token(cls, value: Any) -> Any:
        return _checked_secret(value, _check_metrics_token)

    @field_validator("otel_traces_exporter")
    @classmethod
    def _traces_exporter(cls, value: list[str]) -> list[str]:
        names = [name.lower() for name in value]
        for name in names:
            if name not in TRACES_EXPORTERS:
                raise ValueError(f"expected otlp, console or none (comma-separated), got {name!r}")
        return list(dict.fromkeys(names))

    @field_validator("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint")
    @classmethod
    def _otlp_endpoint(cls, value: str) -> str:
        value = value.strip()
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
                raise ValueError(f"expected an http:// or https:// URL like http://otel-collector:4318, got {value!r}")
        return value

    @field_validator("otel_exporter_otlp_protocol", "otel_exporter_otlp_traces_protocol")
    @classmethod
    def _otlp_protocol(cls, value: str) -> str:
        value = value.strip().lower()
        if value and value != OTLP_PROTOCOL:
            raise ValueError(f"only {OTLP_PROTOCOL} is supported (the OTLP/HTTP exporter is installed), got {value!r}")
        return value

    # The presets' own values: each check lives with its preset in auth/providers.py.
    @field_validator("oauth_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return providers.check_domain(value)

    @field_validator("oauth_tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        return providers.check_tenant(value)

    @field_validator("oauth_allowed_tenants")
    @classmethod
    def _allowed_tenants(cls, value: list[str]) -> list[str]:
        return providers.check_allowed_tenants(value)

    @field_validator("oauth_region")
    @classmethod
    def _region(cls, value: str) -> str:
        return providers.check_region(value)

    @field_validator("oauth_user_pool_id")
    @classmethod
    def _user_pool(cls, value: str) -> str:
        return providers.check_user_pool(value)

    @field_validator("oauth_auth_server_id")
    @classmethod
    def _auth_server_id(cls, value: str) -> str:
        return providers.check_auth_server_id(value)

    @field_validator("dev_client_id")
    @classmethod
    def _dev_client_id(cls, value: str) -> str:
        if not value or ":" in value:
            raise ValueError("expected a non-empty client id without ':'")
        return value

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        # Derived values are computed here once; frozen settings need object.__setattr__.
        for name, value in providers.derived_values(self).items():
            if not getattr(self, name):
                object.__setattr__(self, name, value)
        providers.check_preset(self)
        if not self.mcp_server_url:
            host = self.host
            if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard bind has no public name
                host = "localhost"
            elif ":" in host and not host.startswith("["):
                host = f"[{host}]"
            object.__setattr__(self, "mcp_server_url", f"http://{host}:{self.port}/mcp")
        if not self.oauth_audience:
            object.__setattr__(self, "oauth_audience", [self.mcp_server_url])
        self._check_introspection()
        if self.oauth_issuers_file:
            # Imported here: the loader validates each table with this very class.
            from auth.issuer_config import load_issuers_file

            self._file_issuers = load_issuers_file(self)
        if self.notes_db_pool_min > self.notes_db_pool_max:
            raise ValueError(
                f"NOTES_DB_POOL_MIN: {self.notes_db_pool_min} is more than NOTES_DB_POOL_MAX ({self.notes_db_pool_max})"
            )
        return self

    @model_validator(mode="after")
    def _client_cert_needs_a_gateway(self) -> Settings:
        if self.oauth_mtls_client_cert_header and not self.forwarded_allow_ips:
            raise ValueError(
                "OAUTH_MTLS_CLIENT_CERT_HEADER: set, but FORWARDED_ALLOW_IPS is empty, so the header would never be "
                "believed; list the gateway's addresses in FORWARDED_ALLOW_IPS"
            )
        return self

    @model_validator(mode="after")
    def _nonces_need_dpop(self) -> Settings:
        if self.oauth_dpop_nonce and self.oauth_dpop == "off":
            raise ValueError(
                "OAUTH_DPOP_NONCE: needs OAUTH_DPOP allowed or required (DPoP is off, so no nonce is ever asked for)"
            )
        return self

    def _check_introspection(self) -> None:
        if not self.oauth_introspection_client_id:
            for name in ("oauth_introspect_jwts", "oauth_introspection_audience_optional"):
                if getattr(self, name):
                    raise ValueError(f"{name.upper()}: needs OAUTH_INTROSPECTION_CLIENT_ID (introspection is off)")
            return
        if self.oauth_introspection_client_secret is None:
            raise ValueError(
                "OAUTH_INTROSPECTION_CLIENT_SECRET: missing; required when OAUTH_INTROSPECTION_CLIENT_ID is set "
                "(or set OAUTH_INTROSPECTION_CLIENT_SECRET_FILE)"
            )
        if self.oauth_introspection_audience_optional and not self.oauth_client_ids:
            raise ValueError(
                "OAUTH_INTROSPECTION_AUDIENCE_OPTIONAL: needs OAUTH_CLIENT_IDS (when answers may lack an audience, "
                "the client ids decide which tokens are for this server)"
            )

    # --- derived views -------------------------------------------------------------------------
    @property
    def introspection_enabled(self) -> bool:
        return bool(self.oauth_introspection_client_id)

    @property
    def issuers(self) -> tuple[IssuerConfig, ...]:
        """Every trusted issuer: the [[issuer]] tables of OAUTH_ISSUERS_FILE in file order, else the one the
        OAUTH_* variables describe."""
        if self.oauth_issuers_file:
            return self._file_issuers
        from auth.issuer_config import IssuerConfig

        return (IssuerConfig.from_settings(self),)

    @property
    def entra_multi_tenant(self) -> bool:
        return providers.is_entra_multi_tenant(self.oauth_provider, self.oauth_tenant_id)

    @property
    def accepted_issuers(self) -> tuple[str, ...]:
        """Exact `iss` values accepted (a preset may accept more than OAUTH_ISSUER)."""
        return providers.accepted_issuers(self)

    @property
    def checks_audience(self) -> bool:
        return providers.checks_audience(self.oauth_provider)

    @property
    def scope_prefix(self) -> str:
        """The prefix of the scopes advertised to clients: the first issuer's (OAUTH_SCOPE_PREFIX without a file)."""
        return self.issuers[0].scope_prefix

    def public_scope(self, scope: str) -> str:
        """A scope as clients must ask the IdP for it (Cognito: `{resource-server-id}/{scope}`)."""
        prefix = self.scope_prefix
        return f"{prefix}{scope}" if prefix else scope

    @property
    def metadata_url(self) -> str:
        """Where the (first) issuer's discovery document is (configured, else the OIDC location)."""
        return self.issuers[0].metadata_url

    def require_issuer(self) -> None:
        if not self.oauth_issuer and not self.oauth_issuers_file:
            raise SettingsError(
                "OAUTH_ISSUER: missing; expected your IdP's issuer URL "
                "(e.g. https://your-tenant.auth0.com/), or run `python server.py --dev` for the local dev issuer"
            )


def _env_name(loc: tuple[Any, ...], value: Any) -> str:
    name = str(loc[0]).upper() if loc else "configuration"
    source = file_variable(value)
    return f"{name} (from {source})" if source else name


def load_settings(**overrides: Any) -> Settings:
    """Read the environment and `.env` once; raise SettingsError with one line on a bad value."""
    try:
        return Settings(**overrides)
    except SecretFileError as exc:
        raise SettingsError(str(exc)) from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{_env_name(error['loc'], error.get('input'))}: {message}" if error["loc"] else message)
        raise SettingsError("; ".join(problems)) from None

"""OAUTH_ISSUERS_FILE: [[issuer]] tables validated as the OAUTH_* variables are, one line for a bad file, and the
environment-only set-up equal to a file with one table."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auth.issuer_config import KNOWN_KEYS, TABLE_KEYS, IssuerConfig, IssuersFileError, parse_issuers
from auth.token_rules import TokenRules
from settings import Settings, SettingsError, load_settings
from tests.support import ISSUER, JWKS_URI, SERVER_URL

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"
ASSIGNMENT = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
TENANT = "6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
OTHER = "https://login.partner.example.org/"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "issuers.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def load_file(tmp_path: Path, text: str, **env: Any) -> Settings:
    return load_settings(oauth_issuers_file=write(tmp_path, text), mcp_server_url=SERVER_URL, _env_file=None, **env)


def refusal(tmp_path: Path, text: str, **env: Any) -> str:
    with pytest.raises(SettingsError) as caught:
        load_file(tmp_path, text, **env)
    message = str(caught.value)
    assert "\n" not in message
    return message


TABLE = f'[[issuer]]\nissuer = "{ISSUER}"\n'


TWO_ISSUERS = f"""
[[issuer]]
issuer = "{ISSUER}"
jwks_uri = "{JWKS_URI}"

[[issuer]]
issuer = "{OTHER}"
audience = ["api://mcp", "{SERVER_URL}"]
client_ids = ["m2m-1"]
required_typ = "at+jwt"
"""


def test_each_table_is_one_trusted_issuer_in_file_order(tmp_path):
    first, second = load_file(tmp_path, TWO_ISSUERS).issuers
    assert (first.issuer, first.jwks_uri, first.audience) == (ISSUER, JWKS_URI, (SERVER_URL,))  # MCP_SERVER_URL
    assert (second.issuer, second.jwks_uri, second.audience) == (OTHER, None, ("api://mcp", SERVER_URL))
    assert second.token_rules().client_ids == {"m2m-1"} and second.token_rules().required_typ == "at+jwt"
    assert second.metadata_url == f"{OTHER}.well-known/openid-configuration"


def test_presets_apply_per_table(tmp_path):
    text = f"""
[[issuer]]
provider = "auth0"
domain = "acme.eu.auth0.com"
audience = "https://api.acme.example"

[[issuer]]
provider = "entra"
tenant_id = "{TENANT.upper()}"

[[issuer]]
provider = "cognito"
region = "eu-west-1"
user_pool_id = "eu-west-1_AbCdEf123"
client_ids = "app-1, app-2"
scope_prefix = "mcp/"
"""
    auth0, entra, cognito = load_file(tmp_path, text).issuers
    assert auth0.issuer == "https://acme.eu.auth0.com/"
    assert auth0.jwks_uri == "https://acme.eu.auth0.com/.well-known/jwks.json"
    assert auth0.audience == ("https://api.acme.example",)
    assert entra.accepted_issuers == (
        f"https://login.microsoftonline.com/{TENANT}/v2.0",
        f"https://sts.windows.net/{TENANT}/",
    )
    assert cognito.client_ids == ("app-1", "app-2") and not cognito.checks_audience
    assert cognito.token_rules().token_use == "access"


def test_an_entra_multi_tenant_table_is_routed_by_each_allowed_tenants_issuers(tmp_path):
    text = f'[[issuer]]\nprovider = "entra"\ntenant_id = "organizations"\nallowed_tenants = ["{TENANT}"]\n'
    [config] = load_file(tmp_path, text).issuers
    assert config.routing_issuers == (
        f"https://login.microsoftonline.com/{TENANT}/v2.0",
        f"https://sts.windows.net/{TENANT}/",
    )
    assert config.token_rules().issuer.allowed_tenants == {TENANT}


def test_the_secret_may_come_from_a_file(tmp_path):  # its path, like a *_FILE variable's, is from the working dir
    (tmp_path / "secret").write_text("s3cret\n", encoding="utf-8")
    text = TABLE + 'introspection_client_id = "rs"\nintrospection_client_secret_file = "secret"\n'
    [config] = load_file(tmp_path, text).issuers
    assert config.introspects and config.introspection_client_secret is not None
    assert config.introspection_client_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)


# --- the environment-only set-up is a file with one table ---------------------------------------------------


def env_example(name: str) -> dict[str, str]:
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    lines = (ASSIGNMENT.match(line.strip()) for line in text.splitlines())
    return {match["name"]: match["value"] for match in lines if match}


@pytest.mark.parametrize("name", sorted(path.name for path in EXAMPLES.glob("*.env")))
def test_each_example_gives_the_same_issuer_from_the_environment_and_from_a_table(tmp_path, monkeypatch, name):
    variables = env_example(name)
    per_issuer = {key: value for key, value in variables.items() if key.removeprefix("OAUTH_").lower() in TABLE_KEYS}
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    from_env = load_settings(_env_file=None)
    for key in per_issuer:
        monkeypatch.delenv(key)
    table = "".join(f'{key.removeprefix("OAUTH_").lower()} = "{value}"\n' for key, value in per_issuer.items())
    from_file = load_settings(oauth_issuers_file=write(tmp_path, "[[issuer]]\n" + table), _env_file=None)

    assert from_file.issuers == from_env.issuers == (IssuerConfig.from_settings(from_env),)
    assert from_file.issuers[0].token_rules() == TokenRules.from_settings(from_env)
    assert from_file.scope_prefix == from_env.oauth_scope_prefix


def test_without_the_file_the_one_issuer_is_the_environments(monkeypatch):
    monkeypatch.setenv("OAUTH_ISSUER", ISSUER)
    monkeypatch.setenv("OAUTH_AUDIENCE", "a,b")
    monkeypatch.setenv("OAUTH_LEEWAY_SECONDS", "5")
    [config] = load_settings(_env_file=None).issuers
    assert (config.issuer, config.audience, config.leeway_seconds) == (ISSUER, ("a", "b"), 5)


# --- a bad file: one line naming OAUTH_ISSUERS_FILE, the table and the key ------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            TABLE + '[[issuer]]\nissuer = "https://b.example.com/"\nIssuer = "x"\n',
            "OAUTH_ISSUERS_FILE: [[issuer]] #2, key 'Issuer': unknown key; expected some of issuer, provider, ",
        ),
        (
            '[[issuer]]\naudience = "x"\n',
            "OAUTH_ISSUERS_FILE: [[issuer]] #1, key 'issuer': missing; expected the issuer",
        ),
        (
            TABLE + TABLE,
            f"OAUTH_ISSUERS_FILE: [[issuer]] #2, key 'issuer': '{ISSUER}' is already trusted by [[issuer]] #1",
        ),
        (TABLE + 'leeway_seconds = "soon"\n', "OAUTH_ISSUERS_FILE: [[issuer]] #1, key 'leeway_seconds': Input should"),
        (TABLE + "audience = 5\n", "OAUTH_ISSUERS_FILE: [[issuer]] #1, key 'audience': Input should be a valid list"),
        (
            TABLE + "audience = [1]\n",
            "OAUTH_ISSUERS_FILE: [[issuer]] #1, key 'audience': Input should be a valid string",
        ),
        (
            TABLE + "leeway_seconds = true\n",
            "OAUTH_ISSUERS_FILE: [[issuer]] #1, key 'leeway_seconds': expected a value",
        ),
        (
            TABLE + 'algorithms = ["HS256"]\n',
            "OAUTH_ISSUERS_FILE: [[issuer]] #1, key 'algorithms': HS256 is not allowed: only asymmetric algorithms",
        ),
        (
            '[[issuer]]\nissuer = "https://idp.example.com/.well-known/openid-configuration"\n',
            "OAUTH_ISSUERS_FILE: [[issuer]] #1, key 'issuer': expected the issuer URL, not an endpoint",
        ),
        (
            '[[issuer]]\nprovider = "entra"\n',
            "OAUTH_ISSUERS_FILE: [[issuer]] #1, key 'tenant_id': the entra preset needs the directory (tenant) id",
        ),
        (
            '[[issuer]]\nprovider = "entra"\ntenant_id = "common"\n',
            "OAUTH_ISSUERS_FILE: [[issuer]] #1, key 'allowed_tenants': OAUTH_TENANT_ID=common accepts tokens",
        ),
        (
            TABLE + 'introspection_endpoint = "http://idp.example.com/introspect"\n',
            "OAUTH_ISSUERS_FILE: [[issuer]] #1, key 'introspection_endpoint': expected https://",
        ),
        (
            TABLE + 'introspection_client_secret = "a"\nintrospection_client_secret_file = "b"\n',
            "OAUTH_ISSUERS_FILE: [[issuer]] #1, key 'introspection_client_secret_file': introspection_client_secret is",
        ),
        (
            TABLE + 'introspection_client_secret_file = "missing"\n',
            "OAUTH_ISSUERS_FILE: [[issuer]] #1, key 'introspection_client_secret_file': cannot read 'missing'",
        ),
        ('issuer = "https://a.example.com/"\n', "OAUTH_ISSUERS_FILE: expected one [[issuer]] table per trusted issuer"),
        ("", "OAUTH_ISSUERS_FILE: expected one [[issuer]] table per trusted issuer"),
        (TABLE.replace("[[issuer]]", "[[issuers]]"), "OAUTH_ISSUERS_FILE: unknown top-level key 'issuers'"),
        ("[[issuer]\nissuer = 1\n", "OAUTH_ISSUERS_FILE: "),
    ],
)
def test_a_bad_file_is_one_line_naming_the_table_and_the_key(tmp_path, text, expected):
    assert refusal(tmp_path, text).startswith(expected)


def test_the_unknown_key_message_lists_the_secret_file_key_too(tmp_path):
    message = refusal(tmp_path, TABLE + "introspection_secret_file = 'x'\n")
    assert "introspection_client_secret, introspection_client_secret_file, " in message


def test_a_toml_syntax_error_names_the_file_and_the_place(tmp_path):
    message = refusal(tmp_path, TABLE + "audience = = 1\n")
    assert message.startswith(f"OAUTH_ISSUERS_FILE: '{tmp_path / 'issuers.toml'}' is not valid TOML: ")
    assert "line" in message


def test_an_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(SettingsError) as caught:
        load_settings(oauth_issuers_file=str(tmp_path / "nope.toml"), _env_file=None)
    assert str(caught.value) == f"OAUTH_ISSUERS_FILE: cannot read '{tmp_path / 'nope.toml'}': No such file or directory"


@pytest.mark.parametrize("variable", ["oauth_issuer", "oauth_jwks_uri", "oauth_audience", "oauth_provider"])
def test_the_file_with_per_issuer_variables_is_refused(tmp_path, variable):
    value = {"oauth_provider": "oidc", "oauth_audience": "x"}.get(variable, ISSUER)
    message = refusal(tmp_path, TABLE, **{variable: value})
    assert message.startswith(f"OAUTH_ISSUERS_FILE: {variable.upper()} set too")


def test_with_the_file_no_oauth_issuer_is_needed(tmp_path):
    load_file(tmp_path, TABLE).require_issuer()


def test_a_key_written_with_a_newline_stays_on_one_line(tmp_path):
    message = refusal(tmp_path, TABLE + '"bad\\nkey" = 1\n')
    assert message == (
        "OAUTH_ISSUERS_FILE: [[issuer]] #1, key 'bad\\nkey': unknown key; expected some of " + ", ".join(KNOWN_KEYS)
    )


# --- any table content: an IssuerConfig or one line, never a traceback -----------------------------------------

TOML_SCALARS = (
    st.text(max_size=40)
    | st.sampled_from([ISSUER, "https://b.example.com", "auth0", "entra", "cognito", "organizations", TENANT, "RS256"])
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True)
    | st.booleans()
    | st.datetimes(max_value=datetime.datetime(9999, 1, 1))
    | st.dates()
    | st.times()
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
TABLES = st.dictionaries(
    st.sampled_from([*TABLE_KEYS, "introspection_client_secret_file"]) | st.text(max_size=12), TOML_VALUES, max_size=6
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables=st.lists(TABLES, min_size=1, max_size=3))
def test_any_table_content_gives_issuers_or_one_line(tables):
    try:
        configs = parse_issuers({"issuer": tables}, server_url=SERVER_URL)
    except IssuersFileError as exc:
        message = str(exc)
        assert message.startswith("OAUTH_ISSUERS_FILE: [[issuer]] #") and "\n" not in message and "\r" not in message
    else:
        assert len(configs) == len(tables)
        assert all(config.issuer and config.audience for config in configs)

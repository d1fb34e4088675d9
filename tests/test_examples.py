"""The example `.env` files and the IdP guide load as valid configurations with the issuer each one promises."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from settings import Settings, load_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = PROJECT_ROOT / "examples"
GUIDE = PROJECT_ROOT / "docs" / "identity-providers.md"
ASSIGNMENT = re.compile(r"^(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")

TENANT = "00000000-0000-0000-0000-000000000000"
API_APP_ID = "11111111-1111-1111-1111-111111111111"
COGNITO_ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123"

# example file -> (provider, issuer, JWKS URL, accepted issuers)
EXPECTED = {
    "auth0.env": (
        "auth0",
        "https://your-tenant.us.auth0.com/",
        "https://your-tenant.us.auth0.com/.well-known/jwks.json",
        ("https://your-tenant.us.auth0.com/",),
    ),
    "okta.env": (
        "okta",
        "https://your-org.okta.com/oauth2/aus1a2b3c4d5e6f7g8h9",
        "https://your-org.okta.com/oauth2/aus1a2b3c4d5e6f7g8h9/v1/keys",
        ("https://your-org.okta.com/oauth2/aus1a2b3c4d5e6f7g8h9",),
    ),
    "entra.env": (
        "entra",
        f"https://login.microsoftonline.com/{TENANT}/v2.0",
        f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys",
        (f"https://login.microsoftonline.com/{TENANT}/v2.0", f"https://sts.windows.net/{TENANT}/"),
    ),
    "entra-multitenant.env": (
        "entra",
        "https://login.microsoftonline.com/organizations/v2.0",
        "https://login.microsoftonline.com/organizations/discovery/v2.0/keys",
        ("https://login.microsoftonline.com/organizations/v2.0",),
    ),
    "cognito.env": ("cognito", COGNITO_ISSUER, f"{COGNITO_ISSUER}/.well-known/jwks.json", (COGNITO_ISSUER,)),
    "oidc.env": ("oidc", "https://login.example.com/realms/mcp", None, ("https://login.example.com/realms/mcp",)),
}


def load_example(tmp_path: Path, text: str) -> Settings:
    # The autouse fixture has emptied the environment and made tmp_path the working directory.
    (tmp_path / ".env").write_text(text, encoding="utf-8")
    return load_settings()


def assignments(text: str) -> list[re.Match[str]]:
    return [match for line in text.splitlines() if (match := ASSIGNMENT.match(line.strip()))]


def test_every_example_is_covered() -> None:
    assert sorted(path.name for path in EXAMPLES.glob("*.env")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_is_a_valid_configuration_with_the_expected_issuer(tmp_path: Path, name: str) -> None:
    provider, issuer, jwks_uri, accepted = EXPECTED[name]

    settings = load_example(tmp_path, (EXAMPLES / name).read_text(encoding="utf-8"))

    assert settings.oauth_provider == provider
    assert settings.oauth_issuer == issuer
    assert settings.oauth_jwks_uri == jwks_uri
    assert settings.accepted_issuers == accepted
    assert settings.mcp_server_url == "https://mcp.example.com/mcp"
    settings.require_issuer()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_names_only_real_variables(name: str) -> None:
    fields = {field.upper() for field in Settings.model_fields}
    names = [match["name"] for match in assignments((EXAMPLES / name).read_text(encoding="utf-8"))]

    assert names, "no assignments found"
    assert [n for n in names if n not in fields] == []
    assert len(names) == len(set(names)), "a variable is set twice"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_commented_alternative_is_valid_when_uncommented(tmp_path: Path, name: str) -> None:
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    commented = [match for match in assignments(text) if match["comment"]]

    for match in commented:
        settings = load_example(tmp_path, text.replace(match.group(0), f"{match['name']}={match['value']}"))
        assert getattr(settings, match["name"].lower()), f"{match['name']} did not take effect"


def test_entra_examples_accept_the_api_in_both_token_versions(tmp_path: Path) -> None:
    single = load_example(tmp_path, (EXAMPLES / "entra.env").read_text(encoding="utf-8"))
    multi = load_example(tmp_path, (EXAMPLES / "entra-multitenant.env").read_text(encoding="utf-8"))

    assert single.oauth_audience == [API_APP_ID, f"api://{API_APP_ID}"]
    assert not single.entra_multi_tenant
    assert multi.entra_multi_tenant
    assert multi.oauth_allowed_tenants == [
        "33333333-3333-3333-3333-333333333333",
        "44444444-4444-4444-4444-444444444444",
    ]


def test_cognito_example_checks_the_client_and_advertises_prefixed_scopes(tmp_path: Path) -> None:
    settings = load_example(tmp_path, (EXAMPLES / "cognito.env").read_text(encoding="utf-8"))

    assert not settings.checks_audience
    assert settings.oauth_client_ids == ["1example23456789abcdefghij"]
    assert settings.public_scope("read:notes") == "mcp-notes/read:notes"


def test_guide_links_every_example_and_names_only_real_variables() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    fields = {field.upper() for field in Settings.model_fields}
    named = set(re.findall(r"\b((?:OAUTH|MCP|NOTES)_[A-Z0-9_]+)\b", guide))

    for name in EXPECTED:
        assert f"(../examples/{name})" in guide
    assert sorted(named - fields) == []


def test_the_issuers_file_example_loads_with_each_tables_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTH_ISSUERS_FILE", str(EXAMPLES / "issuers.toml"))
    monkeypatch.setenv("MCP_SERVER_URL", "https://mcp.example.com/mcp")
    auth0, entra, internal = load_settings().issuers
    assert auth0.issuer == "https://your-tenant.us.auth0.com/"
    assert entra.accepted_issuers == EXPECTED["entra.env"][3]
    assert internal.client_ids == ("billing-batch", "reporting") and internal.required_typ == "at+jwt"
    assert "(../examples/issuers.toml)" in GUIDE.read_text(encoding="utf-8")


def test_the_guides_toml_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    [toml] = re.findall(r"```toml\n(.*?)```", guide, flags=re.DOTALL)
    (tmp_path / "issuers.toml").write_text(toml, encoding="utf-8")
    monkeypatch.setenv("OAUTH_ISSUERS_FILE", str(tmp_path / "issuers.toml"))
    assert [config.provider for config in load_settings().issuers] == ["auth0", "okta", "entra", "oidc"]


def test_the_readmes_toml_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    [toml] = re.findall(r"```toml\n(.*?)```", readme, flags=re.DOTALL)
    (tmp_path / "issuers.toml").write_text(toml, encoding="utf-8")
    monkeypatch.setenv("OAUTH_ISSUERS_FILE", str(tmp_path / "issuers.toml"))
    assert [config.issuer for config in load_settings().issuers] == [
        "https://acme.eu.auth0.com/",
        "https://login.internal.example.com/realms/machines",
    ]

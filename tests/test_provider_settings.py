"""OAUTH_PROVIDER presets derive issuer and JWKS URL from console values, and refuse what cannot work in one line."""

from __future__ import annotations

import pytest

from auth.token_rules import TokenRules
from settings import Settings, SettingsError, load_settings

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
POOL = "eu-west-1_AbCdEf123"
COGNITO_ISSUER = f"https://cognito-idp.eu-west-1.amazonaws.com/{POOL}"


def load(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def refusal(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    with pytest.raises(SettingsError) as caught:
        load(monkeypatch, **variables)
    message = str(caught.value)
    assert "\n" not in message
    assert "validation error" not in message
    return message


# --- auth0 ---------------------------------------------------------------------------------------


def test_auth0_domain_derives_issuer_with_its_trailing_slash_and_jwks(monkeypatch):
    settings = load(monkeypatch, OAUTH_PROVIDER="auth0", OAUTH_DOMAIN="acme.us.auth0.com")
    assert settings.oauth_issuer == "https://acme.us.auth0.com/"
    assert settings.oauth_jwks_uri == "https://acme.us.auth0.com/.well-known/jwks.json"
    assert settings.accepted_issuers == ("https://acme.us.auth0.com/",)
    assert settings.checks_audience
    assert settings.metadata_url == "https://acme.us.auth0.com/.well-known/openid-configuration"


def test_auth0_custom_domain_issuer_is_kept_exactly(monkeypatch):
    settings = load(monkeypatch, OAUTH_PROVIDER="auth0", OAUTH_ISSUER="https://login.acme.com/")
    assert settings.oauth_issuer == "https://login.acme.com/"
    assert settings.oauth_jwks_uri is None  # found through the issuer's discovery document


def test_auth0_without_domain_or_issuer_is_refused(monkeypatch):
    message = refusal(monkeypatch, OAUTH_PROVIDER="auth0")
    assert message.startswith("OAUTH_DOMAIN: ")
    assert "auth0" in message


# --- okta ----------------------------------------------------------------------------------------


def test_okta_domain_derives_the_default_custom_authorization_server(monkeypatch):
    settings = load(monkeypatch, OAUTH_PROVIDER="okta", OAUTH_DOMAIN="acme.okta.com")
    assert settings.oauth_issuer == "https://acme.okta.com/oauth2/default"
    assert settings.oauth_jwks_uri == "https://acme.okta.com/oauth2/default/v1/keys"
    assert settings.accepted_issuers == ("https://acme.okta.com/oauth2/default",)


def test_okta_auth_server_id_picks_another_custom_authorization_server(monkeypatch):
    settings = load(monkeypatch, OAUTH_PROVIDER="okta", OAUTH_DOMAIN="acme.okta.com", OAUTH_AUTH_SERVER_ID="aus1a2b3c")
    assert settings.oauth_issuer == "https://acme.okta.com/oauth2/aus1a2b3c"
    assert settings.oauth_jwks_uri == "https://acme.okta.com/oauth2/aus1a2b3c/v1/keys"


def test_okta_custom_url_issuer_derives_its_jwks_next_to_it(monkeypatch):
    settings = load(
        monkeypatch,
        OAUTH_PROVIDER="okta",
        OAUTH_DOMAIN="acme.okta.com",
        OAUTH_ISSUER="https://id.acme.com/oauth2/aus9z",
    )
    assert settings.oauth_issuer == "https://id.acme.com/oauth2/aus9z"
    assert settings.oauth_jwks_uri == "https://id.acme.com/oauth2/aus9z/v1/keys"


def test_okta_issuer_alone_finds_its_jwks_by_discovery(monkeypatch):
    settings = load(monkeypatch, OAUTH_PROVIDER="okta", OAUTH_ISSUER="https://id.acme.com/oauth2/aus9z")
    assert settings.oauth_issuer == "https://id.acme.com/oauth2/aus9z"
    assert settings.oauth_jwks_uri is None


@pytest.mark.parametrize("issuer", ["https://acme.okta.com", "https://acme.okta.com/"])
@pytest.mark.parametrize("domain", [None, "acme.okta.com"])
def test_okta_org_authorization_server_is_refused_at_start_up(monkeypatch, issuer, domain):
    variables = {"OAUTH_PROVIDER": "okta", "OAUTH_ISSUER": issuer}
    if domain:
        variables["OAUTH_DOMAIN"] = domain
    message = refusal(monkeypatch, **variables)
    assert message.startswith("OAUTH_ISSUER: ")
    assert "org authorization server" in message
    assert "cannot be validated" in message
    assert "OAUTH_AUTH_SERVER_ID" in message


def test_okta_without_domain_or_issuer_is_refused(monkeypatch):
    assert refusal(monkeypatch, OAUTH_PROVIDER="okta").startswith("OAUTH_DOMAIN: ")


# --- entra ---------------------------------------------------------------------------------------


def test_entra_tenant_derives_v2_issuer_and_accepts_v1_too(monkeypatch):
    settings = load(monkeypatch, OAUTH_PROVIDER="entra", OAUTH_TENANT_ID=TENANT)
    assert settings.oauth_issuer == f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert settings.oauth_jwks_uri == f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"
    assert settings.accepted_issuers == (
        f"https://login.microsoftonline.com/{TENANT}/v2.0",
        f"https://sts.windows.net/{TENANT}/",
    )
    assert not settings.entra_multi_tenant


def test_entra_tenant_guid_is_lowercased_like_the_tokens_say_it(monkeypatch):
    settings = load(monkeypatch, OAUTH_PROVIDER="entra", OAUTH_TENANT_ID=TENANT.upper())
    assert settings.oauth_tenant_id == TENANT
    assert settings.oauth_issuer == f"https://login.microsoftonline.com/{TENANT}/v2.0"


def test_entra_explicit_v1_issuer_still_accepts_both_versions(monkeypatch):
    v1 = f"https://sts.windows.net/{TENANT}/"
    settings = load(monkeypatch, OAUTH_PROVIDER="entra", OAUTH_TENANT_ID=TENANT, OAUTH_ISSUER=v1)
    assert settings.oauth_issuer == v1
    assert set(settings.accepted_issuers) == {v1, f"https://login.microsoftonline.com/{TENANT}/v2.0"}


def test_entra_without_tenant_is_refused(monkeypatch):
    assert refusal(monkeypatch, OAUTH_PROVIDER="entra").startswith("OAUTH_TENANT_ID: ")


@pytest.mark.parametrize("tenant", ["organizations", "common", "Organizations"])
def test_entra_multi_tenant_needs_the_list_of_trusted_tenants(monkeypatch, tenant):
    message = refusal(monkeypatch, OAUTH_PROVIDER="entra", OAUTH_TENANT_ID=tenant)
    assert message.startswith("OAUTH_ALLOWED_TENANTS: ")
    assert tenant.lower() in message


def test_entra_multi_tenant_checks_tenants_not_one_issuer(monkeypatch):
    settings = load(
        monkeypatch,
        OAUTH_PROVIDER="entra",
        OAUTH_TENANT_ID="organizations",
        OAUTH_ALLOWED_TENANTS=f"{TENANT},{OTHER_TENANT.upper()}",
        OAUTH_AUDIENCE="api://mcp",
    )
    assert settings.entra_multi_tenant
    assert settings.oauth_jwks_uri == "https://login.microsoftonline.com/organizations/discovery/v2.0/keys"
    rules = TokenRules.from_settings(settings)
    assert rules.issuer.issuers == ()
    assert rules.issuer.allowed_tenants == {TENANT, OTHER_TENANT}


def test_allowed_tenants_are_ignored_by_a_single_tenant_config(monkeypatch):
    settings = load(monkeypatch, OAUTH_PROVIDER="entra", OAUTH_TENANT_ID=TENANT, OAUTH_ALLOWED_TENANTS=OTHER_TENANT)
    assert TokenRules.from_settings(settings).issuer.allowed_tenants == frozenset()


# --- cognito -------------------------------------------------------------------------------------


def test_cognito_region_and_pool_derive_issuer_without_slash_and_jwks(monkeypatch):
    settings = load(
        monkeypatch,
        OAUTH_PROVIDER="cognito",
        OAUTH_REGION="eu-west-1",
        OAUTH_USER_POOL_ID=POOL,
        OAUTH_CLIENT_IDS="4h5j6k7l8m9n0p1q2r3s4t5u6v",
        OAUTH_SCOPE_PREFIX="mcp-api/",
    )
    assert settings.oauth_issuer == COGNITO_ISSUER
    assert settings.oauth_jwks_uri == f"{COGNITO_ISSUER}/.well-known/jwks.json"
    assert not settings.checks_audience
    assert settings.public_scope("read:notes") == "mcp-api/read:notes"
    rules = TokenRules.from_settings(settings)
    assert rules.audience.optional
    assert rules.token_use == "access"
    assert rules.client_ids == {"4h5j6k7l8m9n0p1q2r3s4t5u6v"}


def test_cognito_needs_the_app_client_ids(monkeypatch):
    message = refusal(monkeypatch, OAUTH_PROVIDER="cognito", OAUTH_REGION="eu-west-1", OAUTH_USER_POOL_ID=POOL)
    assert message.startswith("OAUTH_CLIENT_IDS: ")
    assert "no audience" in message


@pytest.mark.parametrize("variables", [{}, {"OAUTH_REGION": "eu-west-1"}, {"OAUTH_USER_POOL_ID": POOL}])
def test_cognito_needs_region_and_pool(monkeypatch, variables):
    message = refusal(monkeypatch, OAUTH_PROVIDER="cognito", OAUTH_CLIENT_IDS="app", **variables)
    assert message.startswith("OAUTH_USER_POOL_ID: ")
    assert "OAUTH_REGION" in message


# --- overrides and the generic preset ----------------------------------------------------------------


@pytest.mark.parametrize(
    "preset",
    [
        {"OAUTH_PROVIDER": "auth0", "OAUTH_DOMAIN": "acme.us.auth0.com"},
        {"OAUTH_PROVIDER": "okta", "OAUTH_DOMAIN": "acme.okta.com"},
        {"OAUTH_PROVIDER": "entra", "OAUTH_TENANT_ID": TENANT},
        {
            "OAUTH_PROVIDER": "cognito",
            "OAUTH_REGION": "eu-west-1",
            "OAUTH_USER_POOL_ID": POOL,
            "OAUTH_CLIENT_IDS": "app",
        },
    ],
    ids=lambda preset: preset["OAUTH_PROVIDER"],
)
def test_explicit_issuer_and_jwks_uri_win_over_the_derived_ones(monkeypatch, preset):
    settings = load(
        monkeypatch,
        **preset,
        OAUTH_ISSUER="https://gateway.example.com/oauth2/issuer",
        OAUTH_JWKS_URI="https://gateway.example.com/keys.json",
    )
    assert settings.oauth_issuer == "https://gateway.example.com/oauth2/issuer"
    assert settings.oauth_jwks_uri == "https://gateway.example.com/keys.json"


def test_generic_oidc_derives_nothing_from_preset_variables(monkeypatch):
    settings = load(
        monkeypatch, OAUTH_DOMAIN="acme.us.auth0.com", OAUTH_TENANT_ID=TENANT, OAUTH_ISSUER="https://idp.example.com/"
    )
    assert settings.oauth_provider == "oidc"
    assert settings.oauth_issuer == "https://idp.example.com/"
    assert settings.oauth_jwks_uri is None
    assert settings.accepted_issuers == ("https://idp.example.com/",)


# --- bad values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("OAUTH_PROVIDER", "keycloak", "'auth0'"),
        ("OAUTH_PROVIDER", "azure", "'entra'"),
        ("OAUTH_DOMAIN", "https://acme.us.auth0.com", "expected a bare host name"),
        ("OAUTH_DOMAIN", "acme.us.auth0.com/", "expected a bare host name"),
        ("OAUTH_DOMAIN", "acme.okta.com/oauth2/default", "expected a bare host name"),
        ("OAUTH_DOMAIN", "acme", "expected a bare host name"),
        ("OAUTH_DOMAIN", "acme.us.auth0.com:443", "expected a bare host name"),
        ("OAUTH_AUTH_SERVER_ID", "default/v1", "expected an Okta authorization server id"),
        ("OAUTH_AUTH_SERVER_ID", "", "expected an Okta authorization server id"),
        ("OAUTH_TENANT_ID", "contoso.onmicrosoft.com", "expected the directory (tenant) id GUID"),
        ("OAUTH_TENANT_ID", "72f988bf-86f1-41af-91ab", "expected the directory (tenant) id GUID"),
        ("OAUTH_TENANT_ID", "consumers", "expected the directory (tenant) id GUID"),
        ("OAUTH_ALLOWED_TENANTS", f"{TENANT},contoso", "expected tenant id GUIDs"),
        ("OAUTH_REGION", "EU-WEST-1", "expected an AWS region like eu-west-1"),
        ("OAUTH_REGION", "eu-west", "expected an AWS region like eu-west-1"),
        ("OAUTH_REGION", "Ireland", "expected an AWS region like eu-west-1"),
        ("OAUTH_USER_POOL_ID", "AbCdEf123", "expected a user pool id like eu-west-1_AbCdEf123"),
        ("OAUTH_USER_POOL_ID", "eu-west-1-AbCdEf123", "expected a user pool id like eu-west-1_AbCdEf123"),
        ("OAUTH_USER_POOL_ID", f"{POOL}/x", "expected a user pool id like eu-west-1_AbCdEf123"),
    ],
)
def test_bad_preset_value_is_one_line_naming_the_variable(monkeypatch, variable, value, expected):
    message = refusal(monkeypatch, **{variable: value})
    assert message.startswith(f"{variable}: "), message
    assert expected in message


def test_okta_org_authorization_server_is_accepted_with_introspection(monkeypatch):
    for name, value in {
        "OAUTH_PROVIDER": "okta",
        "OAUTH_DOMAIN": "acme.okta.com",
        "OAUTH_ISSUER": "https://acme.okta.com",
        "OAUTH_INTROSPECTION_CLIENT_ID": "0oa-introspection",
        "OAUTH_INTROSPECTION_CLIENT_SECRET": "okta-secret",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.oauth_issuer == "https://acme.okta.com"
    assert settings.introspection_enabled

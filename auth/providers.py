"""The IdP presets (OAUTH_PROVIDER): what each derives from the values in the IdP's console, and what it needs.

Settings stays generic: its validators call into here, so a bad value still names its variable (exit 2).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from settings import Settings

Provider = Literal["oidc", "auth0", "okta", "entra", "cognito"]

ENTRA_MULTI_TENANT = frozenset({"organizations", "common"})
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_AWS_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d$")
_USER_POOL_ID = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d_[A-Za-z0-9]+$")


# --- the presets' own values (each a field validator of Settings) ---------------------------------
def check_domain(value: str) -> str:
    value = value.strip()
    if value and not _HOSTNAME.match(value):
        raise ValueError(f"expected a bare host name like your-tenant.us.auth0.com (no scheme or path), got {value!r}")
    return value


def check_tenant(value: str) -> str:
    value = value.strip()
    if value and value.lower() not in ENTRA_MULTI_TENANT and not _GUID.match(value):
        raise ValueError(f"expected the directory (tenant) id GUID, or organizations/common, got {value!r}")
    return value.lower()


def check_allowed_tenants(value: list[str]) -> list[str]:
    for tenant in value:
        if not _GUID.match(tenant):
            raise ValueError(f"expected tenant id GUIDs, got {tenant!r}")
    return [tenant.lower() for tenant in value]


def check_region(value: str) -> str:
    if value and not _AWS_REGION.match(value):
        raise ValueError(f"expected an AWS region like eu-west-1, got {value!r}")
    return value


def check_user_pool(value: str) -> str:
    if value and not _USER_POOL_ID.match(value):
        raise ValueError(f"expected a user pool id like eu-west-1_AbCdEf123, got {value!r}")
    return value


def check_auth_server_id(value: str) -> str:
    if not re.match(r"^[A-Za-z0-9_-]+$", value):
        raise ValueError(f"expected an Okta authorization server id like default or aus1a2b3c, got {value!r}")
    return value


# --- what a preset derives and accepts ----------------------------------------------------------------
def is_entra_multi_tenant(provider: str, tenant_id: str) -> bool:
    return provider == "entra" and tenant_id in ENTRA_MULTI_TENANT


def accepted_issuers(settings: Settings) -> tuple[str, ...]:
    """Exact `iss` values accepted. Entra: the tenant's v2 and v1 issuers (the API's manifest picks one)."""
    tenant = settings.oauth_tenant_id
    if settings.oauth_provider == "entra" and not is_entra_multi_tenant("entra", tenant) and tenant:
        v2 = f"https://login.microsoftonline.com/{tenant}/v2.0"
        v1 = f"https://sts.windows.net/{tenant}/"
        return tuple(dict.fromkeys([settings.oauth_issuer, v2, v1]))
    return (settings.oauth_issuer,)


def checks_audience(provider: str) -> bool:
    """Cognito access tokens carry no `aud`: the app client id (OAUTH_CLIENT_IDS) is checked instead."""
    return provider != "cognito"


def derived_values(settings: Settings) -> dict[str, str]:
    """Issuer and JWKS URL a preset derives from the values in the IdP's console."""
    provider, domain = settings.oauth_provider, settings.oauth_domain
    if provider == "auth0" and domain:
        return {"oauth_issuer": f"https://{domain}/", "oauth_jwks_uri": f"https://{domain}/.well-known/jwks.json"}
    if provider == "okta" and domain:
        issuer = settings.oauth_issuer or f"https://{domain}/oauth2/{settings.oauth_auth_server_id}"
        return {"oauth_issuer": issuer, "oauth_jwks_uri": f"{issuer}/v1/keys"}
    if provider == "entra" and settings.oauth_tenant_id:
        tenant = settings.oauth_tenant_id
        return {
            "oauth_issuer": f"https://login.microsoftonline.com/{tenant}/v2.0",
            "oauth_jwks_uri": f"https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys",
        }
    if provider == "cognito" and settings.oauth_region and settings.oauth_user_pool_id:
        issuer = f"https://cognito-idp.{settings.oauth_region}.amazonaws.com/{settings.oauth_user_pool_id}"
        return {"oauth_issuer": issuer, "oauth_jwks_uri": f"{issuer}/.well-known/jwks.json"}
    return {}


def check_preset(settings: Settings) -> None:
    """What each preset needs; raised as ValueError so the message names the variable."""
    provider = settings.oauth_provider
    if provider == "auth0" and not (settings.oauth_domain or settings.oauth_issuer):
        raise ValueError("OAUTH_DOMAIN: the auth0 preset needs your tenant's domain, e.g. your-tenant.us.auth0.com")
    if provider == "okta":
        if not (settings.oauth_domain or settings.oauth_issuer):
            raise ValueError("OAUTH_DOMAIN: the okta preset needs your org's domain, e.g. your-org.okta.com")
        org_server = settings.oauth_issuer and "/oauth2/" not in urlsplit(settings.oauth_issuer).path + "/"
        if org_server and not settings.oauth_introspection_client_id:
            raise ValueError(
                "OAUTH_ISSUER: this is an Okta org authorization server; its access tokens cannot be validated "
                "outside Okta. Use a custom authorization server (OAUTH_AUTH_SERVER_ID, e.g. default), or let "
                "Okta introspect them (OAUTH_INTROSPECTION_CLIENT_ID)"
            )
    if provider == "entra":
        if not settings.oauth_tenant_id:
            raise ValueError("OAUTH_TENANT_ID: the entra preset needs the directory (tenant) id")
        if is_entra_multi_tenant(provider, settings.oauth_tenant_id) and not settings.oauth_allowed_tenants:
            raise ValueError(
                f"OAUTH_ALLOWED_TENANTS: OAUTH_TENANT_ID={settings.oauth_tenant_id} accepts tokens from many tenants; "
                "list the tenant ids you trust"
            )
    if provider == "cognito":
        if not (settings.oauth_issuer or (settings.oauth_region and settings.oauth_user_pool_id)):
            raise ValueError("OAUTH_USER_POOL_ID: the cognito preset needs OAUTH_REGION and OAUTH_USER_POOL_ID")
        if not settings.oauth_client_ids:
            raise ValueError(
                "OAUTH_CLIENT_IDS: Cognito access tokens have no audience; list the app client ids to accept"
            )

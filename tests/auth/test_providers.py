"""Each IdP's real access-token shapes through the real app with its preset, and the near misses it causes."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from settings import Settings
from tests.support import (
    BASE_URL,
    JWKS_URI,
    SERVER_URL,
    Signer,
    legacy_headers,
    make_claims,
    make_settings,
    parse_mcp_response,
    rpc_body,
)
from web.app import build_app

# --- each IdP's console values and the URLs its preset derives from them ----------------------------

AUTH0_DOMAIN = "acme.us.auth0.com"
AUTH0_ISSUER = f"https://{AUTH0_DOMAIN}/"
AUTH0_JWKS = f"https://{AUTH0_DOMAIN}/.well-known/jwks.json"
AUTH0_CLIENT = "Xq8fGkP2vW3nRt7LmZc4Hs9JdYb1EaUo"

OKTA_DOMAIN = "acme.okta.com"
OKTA_ISSUER = f"https://{OKTA_DOMAIN}/oauth2/default"
OKTA_JWKS = f"{OKTA_ISSUER}/v1/keys"
OKTA_CLIENT = "0oa8f5j3ecb5w3dF35d7"

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
ENTRA_V2_ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
ENTRA_V1_ISSUER = f"https://sts.windows.net/{TENANT}/"
ENTRA_JWKS = f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"
ENTRA_MULTI_JWKS = "https://login.microsoftonline.com/organizations/discovery/v2.0/keys"
API_APP_ID = "c6a1b7e2-3f4d-4e5a-9b8c-7d6e5f4a3b2c"  # the MCP server's app registration (v2 aud)
API_APP_ID_URI = f"api://{API_APP_ID}"  # its Application ID URI (v1 aud)
ENTRA_CLIENT = "0f3e2d1c-b0a9-4876-9543-210fedcba987"  # the calling app
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

REGION = "eu-west-1"
POOL = "eu-west-1_AbCdEf123"
COGNITO_ISSUER = f"https://cognito-idp.{REGION}.amazonaws.com/{POOL}"
COGNITO_JWKS = f"{COGNITO_ISSUER}/.well-known/jwks.json"
COGNITO_CLIENT = "4h5j6k7l8m9n0p1q2r3s4t5u6v"
COGNITO_PREFIX = "mcp-api/"

KIDS = {  # each IdP's kid style
    AUTH0_JWKS: "NjVBRjY5MDlCMUIwNzU4RTA2QzZFMDQ4QzQ2MDAyQjVDNjk1RTM2Qg",
    OKTA_JWKS: "hZ1B1m0yQ7pLX3sV2aO8cN5dR4eT6uW9kJ0fG2hI1jK",
    ENTRA_JWKS: "kWbkaa6qs8wsTnBwiiNYOhHbnAw",
    ENTRA_MULTI_JWKS: "kWbkaa6qs8wsTnBwiiNYOhHbnAw",
    COGNITO_JWKS: "1a2b3c4d5e6f7g8h9i0jKlMnOpQrStUvWxYz+AbCdE=",
    JWKS_URI: "rsa-1",
}

GET_ME = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
_AUTH_PARAM = re.compile(r'([A-Za-z_]+)="((?:[^"\\]|\\.)*)"')


# --- keys and the IdPs' JWKS endpoints -------------------------------------------------------------------


@dataclass
class Keys:
    """One signer per JWKS URL (same private key, each IdP's kid style) and a key no IdP publishes."""

    by_jwks: dict[str, Signer]
    unpublished: Signer

    @property
    def auth0(self) -> Signer:
        return self.by_jwks[AUTH0_JWKS]

    @property
    def okta(self) -> Signer:
        return self.by_jwks[OKTA_JWKS]

    @property
    def entra(self) -> Signer:
        return self.by_jwks[ENTRA_JWKS]

    @property
    def cognito(self) -> Signer:
        return self.by_jwks[COGNITO_JWKS]

    @property
    def generic(self) -> Signer:
        return self.by_jwks[JWKS_URI]


@pytest.fixture
def keys(rsa_private_key: rsa.RSAPrivateKey, second_rsa_private_key: rsa.RSAPrivateKey) -> Iterator[Keys]:
    """Every IdP's JWKS served by respx at the URL its preset derives; Cognito publishes two keys."""
    signers = {url: Signer(rsa_private_key, kid, "RS256") for url, kid in KIDS.items()}
    cognito_second = Signer(second_rsa_private_key, "Zy9XwVuTsRqPoNmLkJiHgFeDcBa0123456789+abcd=", "RS256")
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        for url, signer in signers.items():
            published = [signer.jwk(alg="RS256")]
            if url == COGNITO_JWKS:
                published.append(cognito_second.jwk(alg="RS256"))
            router.get(url).mock(return_value=httpx.Response(200, json={"keys": published}))
        yield Keys(signers, Signer(second_rsa_private_key, "org-as-key-7Rz0QpLm", "RS256"))


# --- each IdP's natural settings ---------------------------------------------------------------------


def natural_settings(**values: Any) -> Settings:
    """Settings as an operator writes them: only the preset's console values, nothing derived by hand."""
    return Settings(_env_file=None, mcp_server_url=SERVER_URL, **values)


def auth0_settings(**extra: Any) -> Settings:
    return natural_settings(oauth_provider="auth0", oauth_domain=AUTH0_DOMAIN, **extra)


def okta_settings(**extra: Any) -> Settings:
    return natural_settings(oauth_provider="okta", oauth_domain=OKTA_DOMAIN, oauth_audience="api://default", **extra)


def entra_settings(**extra: Any) -> Settings:
    values = {"oauth_audience": f"{API_APP_ID},{API_APP_ID_URI}", **extra}
    return natural_settings(oauth_provider="entra", oauth_tenant_id=TENANT, **values)


def entra_multi_tenant_settings() -> Settings:
    return natural_settings(
        oauth_provider="entra",
        oauth_tenant_id="organizations",
        oauth_allowed_tenants=TENANT,
        oauth_audience=API_APP_ID,
    )


def cognito_settings(**extra: Any) -> Settings:
    return natural_settings(
        oauth_provider="cognito",
        oauth_region=REGION,
        oauth_user_pool_id=POOL,
        oauth_client_ids=COGNITO_CLIENT,
        oauth_scope_prefix=COGNITO_PREFIX,
        **extra,
    )


# --- each IdP's token shapes -----------------------------------------------------------------------------


def _times(lifetime: int = 3600) -> dict[str, int]:
    now = int(time.time())
    return {"iat": now, "exp": now + lifetime}


def auth0_m2m_claims(**overrides: Any) -> dict[str, Any]:
    return {
        "iss": AUTH0_ISSUER,
        "sub": f"{AUTH0_CLIENT}@clients",
        "aud": SERVER_URL,
        **_times(86400),
        "scope": "read:notes write:notes",
        "gty": "client-credentials",
        "azp": AUTH0_CLIENT,
        "permissions": ["read:notes", "write:notes"],
        **overrides,
    }


def auth0_user_claims(**overrides: Any) -> dict[str, Any]:
    return {
        "iss": AUTH0_ISSUER,
        "sub": "auth0|64f1c2d3e4b5a6978899aabb",
        "aud": [SERVER_URL, f"https://{AUTH0_DOMAIN}/userinfo"],
        **_times(86400),
        "scope": "openid profile email read:notes",
        "azp": AUTH0_CLIENT,
        "permissions": ["read:notes", "use:calculator"],
        **overrides,
    }


def auth0_rfc9068_claims(**overrides: Any) -> dict[str, Any]:
    """Auth0's "RFC 9068" token dialect: client_id instead of azp, sent with typ at+jwt."""
    return {
        "iss": AUTH0_ISSUER,
        "sub": "auth0|64f1c2d3e4b5a6978899aabb",
        "aud": SERVER_URL,
        **_times(86400),
        "scope": "read:notes",
        "client_id": AUTH0_CLIENT,
        "jti": uuid.uuid4().hex,
        **overrides,
    }


def okta_cc_claims(**overrides: Any) -> dict[str, Any]:
    return {
        "ver": 1,
        "jti": "AT.h3tqa2Pz1Bf0Xc9YkW6d8jLmN4oRsTuVwX-yZaB7cDe",
        "iss": OKTA_ISSUER,
        "aud": "api://default",
        **_times(),
        "cid": OKTA_CLIENT,
        "scp": ["read:notes"],
        "sub": OKTA_CLIENT,
        **overrides,
    }


def okta_user_claims(**overrides: Any) -> dict[str, Any]:
    return {
        "ver": 1,
        "jti": "AT.Qw3eR5tY7uI9oP1aS3dF5gH7jK9lZ1xC3vB5nM7qW9e",
        "iss": OKTA_ISSUER,
        "aud": "api://default",
        **_times(),
        "cid": OKTA_CLIENT,
        "uid": "00u1a2b3c4d5e6f7g8h9",
        "scp": ["openid", "profile", "read:notes", "write:notes"],
        "auth_time": int(time.time()) - 60,
        "sub": "alice@acme.com",
        **overrides,
    }


def entra_v2_delegated_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "aud": API_APP_ID,
        "iss": ENTRA_V2_ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + 4500,
        "aio": "AWQAm/8XAAAA",
        "azp": ENTRA_CLIENT,
        "azpacr": "0",
        "name": "Alice Example",
        "oid": "8d3f1c2b-4a5e-4f6d-9b8c-1a2b3c4d5e6f",
        "preferred_username": "alice@contoso.com",
        "rh": "0.AXoAv4j5cvGGr0GRqy180BHbR-KxpsY9T1pOm4x9bl9KOyx6AAA.",
        "scp": "Notes.Read Notes.Write",
        "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "tid": TENANT,
        "uti": "fqiBqXLPj0eQa82S-IYFAA",
        "ver": "2.0",
        **overrides,
    }


def entra_v2_app_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    service_principal = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
    return {
        "aud": API_APP_ID,
        "iss": ENTRA_V2_ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + 3599,
        "azp": ENTRA_CLIENT,
        "azpacr": "1",
        "idtyp": "app",
        "oid": service_principal,
        "rh": "0.AXoAv4j5cvGGr0GRqy180BHbR-KxpsY9T1pOm4x9bl9KOyx6AAA.",
        "roles": ["Notes.Read.All"],
        "sub": service_principal,
        "tid": TENANT,
        "uti": "Rk9aS2dFcTBhV2xCd0FB",
        "ver": "2.0",
        **overrides,
    }


def entra_v1_user_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "aud": API_APP_ID_URI,
        "iss": ENTRA_V1_ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + 4800,
        "acr": "1",
        "aio": "E2ZgYJj8Y9z+",
        "amr": ["pwd", "mfa"],
        "appid": ENTRA_CLIENT,
        "appidacr": "0",
        "family_name": "Example",
        "given_name": "Alice",
        "ipaddr": "203.0.113.7",
        "name": "Alice Example",
        "oid": "8d3f1c2b-4a5e-4f6d-9b8c-1a2b3c4d5e6f",
        "scp": "Notes.Read",
        "sub": "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA",
        "tid": TENANT,
        "unique_name": "alice@contoso.com",
        "upn": "alice@contoso.com",
        "uti": "fqiBqXLPj0eQa82S-IYFAA",
        "ver": "1.0",
        **overrides,
    }


def entra_v1_app_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    service_principal = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
    return {
        "aud": API_APP_ID_URI,
        "iss": ENTRA_V1_ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + 3599,
        "appid": ENTRA_CLIENT,
        "appidacr": "1",
        "idp": ENTRA_V1_ISSUER,
        "oid": service_principal,
        "roles": ["Notes.Read.All"],
        "sub": service_principal,
        "tid": TENANT,
        "ver": "1.0",
        **overrides,
    }


def cognito_cc_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": COGNITO_CLIENT,
        "token_use": "access",
        "scope": f"{COGNITO_PREFIX}read:notes {COGNITO_PREFIX}write:notes",
        "auth_time": now,
        "iss": COGNITO_ISSUER,
        "exp": now + 3600,
        "iat": now,
        "version": 2,
        "jti": str(uuid.uuid4()),
        "client_id": COGNITO_CLIENT,
        **overrides,
    }


def cognito_user_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "94a8b4f8-f0a1-70b5-1a2b-3c4d5e6f7a8b",
        "cognito:groups": ["notes-editors"],
        "iss": COGNITO_ISSUER,
        "version": 2,
        "client_id": COGNITO_CLIENT,
        "origin_jti": str(uuid.uuid4()),
        "event_id": str(uuid.uuid4()),
        "token_use": "access",
        "scope": f"openid email {COGNITO_PREFIX}read:notes",
        "auth_time": now - 30,
        "exp": now + 3600,
        "iat": now,
        "jti": str(uuid.uuid4()),
        "username": "alice",
        **overrides,
    }


def cognito_id_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "at_hash": "x2Yb3Kq9LmZ4c8T1wQ0dVg",
        "sub": "94a8b4f8-f0a1-70b5-1a2b-3c4d5e6f7a8b",
        "cognito:groups": ["notes-editors"],
        "email_verified": True,
        "iss": COGNITO_ISSUER,
        "cognito:username": "alice",
        "origin_jti": str(uuid.uuid4()),
        "aud": COGNITO_CLIENT,
        "event_id": str(uuid.uuid4()),
        "token_use": "id",
        "auth_time": now - 30,
        "exp": now + 3600,
        "iat": now,
        "jti": str(uuid.uuid4()),
        "email": "alice@example.com",
        **overrides,
    }


# Header forms as each IdP sends them (PyJWT drops a None typ).
AUTH0_HEADER = {"typ": "JWT"}
OKTA_HEADER = {"typ": None}
COGNITO_HEADER = {"typ": None}


def entra_header(signer: Signer) -> dict[str, Any]:
    return {"typ": "JWT", "x5t": signer.kid}


# --- talking to the app ------------------------------------------------------------------------------------


@contextmanager
def running(settings: Settings) -> Iterator[TestClient]:
    with TestClient(build_app(settings), base_url=BASE_URL) as client:
        yield client


def call_tool(client: TestClient, token: str, name: str, arguments: dict[str, Any] | None = None) -> httpx.Response:
    body = rpc_body("tools/call", {"name": name, "arguments": arguments or {}})
    return client.post("/mcp", json=body, headers=legacy_headers(token))


def get_me(client: TestClient, token: str) -> dict[str, Any]:
    response = call_tool(client, token, "get_me")
    assert response.status_code == 200, response.text
    result = parse_mcp_response(response)["result"]
    assert not result.get("isError"), result
    return result["structuredContent"]


def challenge(response: httpx.Response) -> dict[str, str]:
    scheme, _, params = response.headers["www-authenticate"].partition(" ")
    assert scheme == "Bearer"
    return {name: re.sub(r"\\(.)", r"\1", value) for name, value in _AUTH_PARAM.findall(params)}


def refusal_logged(caplog: pytest.LogCaptureFixture, token: str) -> str:
    """The one `token refused` line of the request; it never carries the token or any part of it."""
    lines = [
        record.getMessage()
        for record in caplog.records
        if record.name == "auth.middleware" and record.getMessage().startswith("token refused: ")
    ]
    assert len(lines) == 1, lines
    line = lines[0]
    assert token not in line
    for part in token.split("."):
        if len(part) >= 16:
            assert part not in line
    assert token not in caplog.text
    return line


def refused(client: TestClient, token: str, caplog: pytest.LogCaptureFixture) -> tuple[httpx.Response, str]:
    caplog.clear()
    caplog.set_level(logging.INFO, logger="auth.middleware")
    response = call_tool(client, token, "get_me")
    assert response.status_code == 401, response.text
    assert challenge(response)["error"] == "invalid_token"
    return response, refusal_logged(caplog, token)


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- Auth0 ------------------------------------------------------------------------------------------------


def test_auth0_machine_token_with_permissions(keys):
    token = keys.auth0.sign(auth0_m2m_claims(), headers=AUTH0_HEADER)
    with running(auth0_settings()) as client:
        me = get_me(client, token)
    assert me["user_id"] == f"{AUTH0_CLIENT}@clients"
    assert me["client_id"] == AUTH0_CLIENT
    assert me["issuer"] == AUTH0_ISSUER
    assert me["audience"] == [SERVER_URL]
    assert me["scopes"] == ["read:notes", "write:notes"]
    assert me["token_type"] == "machine"


def test_auth0_user_token_with_userinfo_audience_and_permissions(keys):
    token = keys.auth0.sign(auth0_user_claims(), headers=AUTH0_HEADER)
    with running(auth0_settings()) as client:
        me = get_me(client, token)
    assert me["user_id"] == "auth0|64f1c2d3e4b5a6978899aabb"
    assert me["client_id"] == AUTH0_CLIENT
    assert me["audience"] == [SERVER_URL, f"https://{AUTH0_DOMAIN}/userinfo"]
    # `scope` and the RBAC `permissions` array both count.
    assert me["scopes"] == ["email", "openid", "profile", "read:notes", "use:calculator"]
    assert me["token_type"] == "user"


def test_auth0_permissions_alone_satisfy_a_tool_scope(keys):
    token = keys.auth0.sign(auth0_user_claims(scope="openid", permissions=["read:notes"]), headers=AUTH0_HEADER)
    with running(auth0_settings()) as client:
        response = call_tool(client, token, "list_notes")
    assert response.status_code == 200, response.text
    assert not parse_mcp_response(response)["result"]["isError"]


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT"])
def test_required_typ_accepts_rfc9068_access_tokens(keys, typ):
    token = keys.auth0.sign(auth0_rfc9068_claims(), headers={"typ": typ})
    with running(auth0_settings(oauth_required_typ="at+jwt")) as client:
        me = get_me(client, token)
    assert me["client_id"] == AUTH0_CLIENT
    assert me["token_type"] == "user"


@pytest.mark.parametrize("typ", ["JWT", None, "JOSE", "id+jwt"])
def test_required_typ_refuses_other_token_types(keys, caplog, typ):
    token = keys.auth0.sign(auth0_rfc9068_claims(), headers={"typ": typ})
    with running(auth0_settings(oauth_required_typ="at+jwt")) as client:
        response, line = refused(client, token, caplog)
    assert challenge(response)["error_description"] == "token type is not accepted"
    assert f"header typ {typ!r}, expected 'at+jwt'" in line


# --- Okta -------------------------------------------------------------------------------------------------


def test_okta_client_credentials_token(keys):
    token = keys.okta.sign(okta_cc_claims(), headers=OKTA_HEADER)
    with running(okta_settings()) as client:
        me = get_me(client, token)
    assert me["user_id"] == OKTA_CLIENT
    assert me["client_id"] == OKTA_CLIENT
    assert me["issuer"] == OKTA_ISSUER
    assert me["audience"] == ["api://default"]
    assert me["scopes"] == ["read:notes"]
    assert me["token_id"].startswith("AT.")
    assert me["token_type"] == "machine"


def test_okta_user_token(keys):
    token = keys.okta.sign(okta_user_claims(), headers=OKTA_HEADER)
    with running(okta_settings()) as client:
        me = get_me(client, token)
        notes = call_tool(client, token, "list_notes")
    assert me["user_id"] == "alice@acme.com"
    assert me["client_id"] == OKTA_CLIENT
    assert me["scopes"] == ["openid", "profile", "read:notes", "write:notes"]
    assert me["token_type"] == "user"
    assert notes.status_code == 200  # an scp list satisfies tool scopes


# --- Entra ------------------------------------------------------------------------------------------------


def test_entra_v2_delegated_token(keys):
    token = keys.entra.sign(entra_v2_delegated_claims(), headers=entra_header(keys.entra))
    with running(entra_settings()) as client:
        me = get_me(client, token)
    assert me["user_id"] == "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ"
    assert me["client_id"] == ENTRA_CLIENT
    assert me["issuer"] == ENTRA_V2_ISSUER
    assert me["audience"] == [API_APP_ID]
    assert me["scopes"] == ["Notes.Read", "Notes.Write"]
    assert me["token_type"] == "user"


def test_entra_v2_app_only_token_counts_roles_as_scopes(keys):
    token = keys.entra.sign(entra_v2_app_claims(), headers=entra_header(keys.entra))
    with running(entra_settings()) as client:
        me = get_me(client, token)
    assert me["user_id"] == "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
    assert me["client_id"] == ENTRA_CLIENT
    assert me["scopes"] == ["Notes.Read.All"]
    assert me["token_type"] == "machine"


def test_entra_app_role_satisfies_a_tool_scope(keys):
    token = keys.entra.sign(entra_v2_app_claims(roles=["Notes.Read"]), headers=entra_header(keys.entra))
    with running(entra_settings(notes_read_scope="Notes.Read", notes_write_scope="Notes.Write")) as client:
        allowed = call_tool(client, token, "list_notes")
        denied = call_tool(client, token, "create_note", {"title": "t", "content": "c"})
    assert allowed.status_code == 200
    assert not parse_mcp_response(allowed)["result"]["isError"]
    assert denied.status_code == 403
    assert challenge(denied)["scope"] == "Notes.Write"


@pytest.mark.parametrize(
    ("claims", "user_id", "scopes", "token_type"),
    [
        (entra_v1_user_claims, "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA", ["Notes.Read"], "user"),
        (entra_v1_app_claims, "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9", ["Notes.Read.All"], "machine"),
    ],
    ids=["delegated", "app-only"],
)
def test_entra_v1_token_is_accepted_by_the_entra_preset(keys, claims, user_id, scopes, token_type):
    token = keys.entra.sign(claims(), headers=entra_header(keys.entra))
    with running(entra_settings()) as client:
        me = get_me(client, token)
    assert me["issuer"] == ENTRA_V1_ISSUER
    assert me["audience"] == [API_APP_ID_URI]
    assert me["client_id"] == ENTRA_CLIENT  # from appid
    assert me["user_id"] == user_id
    assert me["scopes"] == scopes
    assert me["token_type"] == token_type


@pytest.mark.parametrize("issuer", [ENTRA_V2_ISSUER, ENTRA_V1_ISSUER])
def test_entra_multi_tenant_accepts_a_listed_tenant(keys, issuer):
    claims = entra_v2_delegated_claims(iss=issuer)
    with running(entra_multi_tenant_settings()) as client:
        me = get_me(client, keys.by_jwks[ENTRA_MULTI_JWKS].sign(claims, headers={"typ": "JWT"}))
    assert me["issuer"] == issuer
    assert me["token_type"] == "user"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"iss": f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0", "tid": OTHER_TENANT},
            f"tenant {OTHER_TENANT} is not in OAUTH_ALLOWED_TENANTS",
        ),
        (
            {"iss": f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0", "tid": TENANT},
            f"does not belong to tid {TENANT}",
        ),
        ({"tid": "contoso.onmicrosoft.com"}, "tid 'contoso.onmicrosoft.com' is not a tenant GUID"),
        ({"tid": TENANT.upper()}, "is not a tenant GUID"),
        ({"tid": None}, "tid None is not a tenant GUID"),
        ({"iss": "https://login.microsoftonline.com/{tenantid}/v2.0"}, "does not belong to tid"),
    ],
    ids=["unlisted-tenant", "iss-path-not-tid", "non-guid-tid", "uppercase-tid", "no-tid", "template-issuer"],
)
def test_entra_multi_tenant_refuses_other_tenants_and_forged_tids(keys, caplog, overrides, expected):
    token = keys.by_jwks[ENTRA_MULTI_JWKS].sign(entra_v2_delegated_claims(**overrides), headers={"typ": "JWT"})
    with running(entra_multi_tenant_settings()) as client:
        response, line = refused(client, token, caplog)
    assert challenge(response)["error_description"] == "token issuer is not accepted"
    assert expected in line


# --- Cognito ----------------------------------------------------------------------------------------------


def test_cognito_client_credentials_token_without_aud(keys):
    token = keys.cognito.sign(cognito_cc_claims(), headers=COGNITO_HEADER)
    with running(cognito_settings()) as client:
        me = get_me(client, token)
    assert me["user_id"] == COGNITO_CLIENT
    assert me["client_id"] == COGNITO_CLIENT
    assert me["issuer"] == COGNITO_ISSUER
    assert me["audience"] == []
    assert me["scopes"] == ["mcp-api/read:notes", "mcp-api/write:notes", "read:notes", "write:notes"]
    assert me["token_type"] == "machine"


def test_cognito_user_token(keys):
    token = keys.cognito.sign(cognito_user_claims(), headers=COGNITO_HEADER)
    with running(cognito_settings()) as client:
        me = get_me(client, token)
    assert me["user_id"] == "94a8b4f8-f0a1-70b5-1a2b-3c4d5e6f7a8b"
    assert me["client_id"] == COGNITO_CLIENT
    assert me["scopes"] == ["email", "mcp-api/read:notes", "openid", "read:notes"]
    assert me["token_type"] == "user"


def test_cognito_second_published_key_is_accepted(keys, second_rsa_private_key):
    other = Signer(second_rsa_private_key, "Zy9XwVuTsRqPoNmLkJiHgFeDcBa0123456789+abcd=", "RS256")
    with running(cognito_settings()) as client:
        assert get_me(client, other.sign(cognito_cc_claims(), headers=COGNITO_HEADER))["client_id"] == COGNITO_CLIENT


def test_cognito_prefixed_scope_satisfies_the_tool_and_the_challenge_names_the_prefixed_scope(keys):
    token = keys.cognito.sign(cognito_user_claims(scope=f"openid {COGNITO_PREFIX}read:notes"), headers=COGNITO_HEADER)
    with running(cognito_settings()) as client:
        listed = call_tool(client, token, "list_notes")
        denied = call_tool(client, token, "create_note", {"title": "t", "content": "c"})
    assert listed.status_code == 200, listed.text
    assert not parse_mcp_response(listed)["result"]["isError"]
    assert denied.status_code == 403
    params = challenge(denied)
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "mcp-api/write:notes"


def test_cognito_resource_bound_access_token_is_accepted(keys):
    token = keys.cognito.sign(cognito_user_claims(aud=SERVER_URL), headers=COGNITO_HEADER)
    with running(cognito_settings()) as client:
        assert get_me(client, token)["client_id"] == COGNITO_CLIENT


# --- near misses: refused with 401 and the right diagnosis in the server log --------------------------------


def graph_token(keys: Keys) -> str:
    """A Microsoft Graph token: Graph signs the SHA-256 of the header's nonce, so the sent token never verifies."""
    nonce = "hE0V2cXY1cRNrx9Q1jJ5OGm1Wz3pX0jYk8eBqj1a2sQ"
    header = {"typ": "JWT", "nonce": nonce, "alg": "RS256", "x5t": keys.entra.kid, "kid": keys.entra.kid}
    claims = entra_v1_user_claims(aud="https://graph.microsoft.com", scp="User.Read openid profile email")
    hashed = {**header, "nonce": hashlib.sha256(nonce.encode()).hexdigest()}
    _, payload, signature = keys.entra.sign(claims, headers={k: v for k, v in hashed.items() if k != "alg"}).split(".")
    return ".".join([_b64(header), payload, signature])


def jwe_token(keys: Keys) -> str:
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": keys.auth0.kid}
    return ".".join([_b64(header), *(_b64(secrets.token_bytes(n)) for n in (256, 12, 180, 16))])


@dataclass(frozen=True)
class NearMiss:
    settings: Callable[[], Settings]
    token: Callable[[Keys], str]
    description: str
    diagnosis: str


def _generic_entra_v2_config() -> Settings:
    return natural_settings(oauth_issuer=ENTRA_V2_ISSUER, oauth_jwks_uri=ENTRA_JWKS, oauth_audience=API_APP_ID_URI)


NEAR_MISSES = {
    "entra-v1-token-against-v2-issuer": NearMiss(
        _generic_entra_v2_config,
        lambda k: k.entra.sign(entra_v1_user_claims(), headers=entra_header(k.entra)),
        "token issuer is not accepted",
        "looks like an Entra v1 token",
    ),
    "entra-token-from-another-tenant": NearMiss(
        entra_settings,
        lambda k: k.entra.sign(
            entra_v2_delegated_claims(iss=f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0", tid=OTHER_TENANT),
            headers=entra_header(k.entra),
        ),
        "token issuer is not accepted",
        f"issuer 'https://login.microsoftonline.com/{OTHER_TENANT}/v2.0', expected '{ENTRA_V2_ISSUER}'",
    ),
    "microsoft-graph-token-signed-for-graph": NearMiss(
        entra_settings, graph_token, "token signature is invalid", "Microsoft Graph token"
    ),
    "microsoft-graph-token-audience": NearMiss(
        entra_settings,
        lambda k: k.entra.sign(
            entra_v1_user_claims(aud=GRAPH_APP_ID), headers={**entra_header(k.entra), "nonce": "hE0V2cXY1cRN"}
        ),
        "token audience is not accepted",
        "Microsoft Graph token",
    ),
    "cognito-id-token": NearMiss(
        cognito_settings,
        lambda k: k.cognito.sign(cognito_id_claims(), headers=COGNITO_HEADER),
        "token is not an access token",
        "this looks like an ID token",
    ),
    "oidc-id-token": NearMiss(
        make_settings,
        lambda k: k.generic.sign(
            make_claims(aud="client-abc", azp="client-abc", nonce="n-0S6_WzA2Mj", at_hash="HK6E_P6Dh8Y93mRNtsDB1Q")
            | {"scope": None},
            headers={"typ": "JWT"},
        ),
        "token audience is not accepted",
        "this looks like an ID token",
    ),
    "cognito-client-not-listed": NearMiss(
        cognito_settings,
        lambda k: k.cognito.sign(
            cognito_cc_claims(client_id="7q8w9e0r1t2y3u4i5o6p7a8s9d", sub="7q8w9e0r1t2y3u4i5o6p7a8s9d"),
            headers=COGNITO_HEADER,
        ),
        "token client is not accepted",
        f"client id '7q8w9e0r1t2y3u4i5o6p7a8s9d' is not in OAUTH_CLIENT_IDS ['{COGNITO_CLIENT}']",
    ),
    "cognito-token-against-generic-config": NearMiss(
        lambda: natural_settings(oauth_issuer=COGNITO_ISSUER, oauth_jwks_uri=COGNITO_JWKS),
        lambda k: k.cognito.sign(cognito_cc_claims(), headers=COGNITO_HEADER),
        "token is missing a required claim",
        "no aud claim",
    ),
    "auth0-issuer-configured-without-trailing-slash": NearMiss(
        lambda: natural_settings(oauth_issuer=f"https://{AUTH0_DOMAIN}", oauth_jwks_uri=AUTH0_JWKS),
        lambda k: k.auth0.sign(auth0_m2m_claims(), headers=AUTH0_HEADER),
        "token issuer is not accepted",
        "trailing slash",
    ),
    "auth0-userinfo-only-audience": NearMiss(
        auth0_settings,
        lambda k: k.auth0.sign(
            auth0_user_claims(aud=[f"https://{AUTH0_DOMAIN}/userinfo"], scope="openid profile", permissions=None),
            headers=AUTH0_HEADER,
        ),
        "token audience is not accepted",
        "an Auth0 token with no API audience",
    ),
    "opaque-token": NearMiss(
        auth0_settings, lambda k: "kq8Zt1Pp5tV9bXGq2cYv3mL0wR7sD4eF", "token is not a JWT", "not a JWT"
    ),
    "encrypted-token": NearMiss(auth0_settings, jwe_token, "token is not a JWT", "encrypted token (JWE)"),
    "okta-org-authorization-server-token": NearMiss(
        okta_settings,
        lambda k: k.unpublished.sign(
            okta_cc_claims(iss=f"https://{OKTA_DOMAIN}", aud=f"https://{OKTA_DOMAIN}", scp=["okta.users.read"]),
            headers=OKTA_HEADER,
        ),
        "token signing key is unknown",
        "Okta org authorization server",
    ),
}


@pytest.mark.parametrize("case", NEAR_MISSES.values(), ids=NEAR_MISSES.keys())
def test_near_miss_is_refused_with_its_diagnosis_in_the_log(keys, caplog, case):
    token = case.token(keys)
    with running(case.settings()) as client:
        response, line = refused(client, token, caplog)
    assert challenge(response)["error_description"] == case.description
    assert line.startswith(f"token refused: {case.description}: ")
    assert case.diagnosis in line, line
    assert "\n" not in line

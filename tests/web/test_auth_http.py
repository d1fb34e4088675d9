"""Bearer authentication through the real app: challenges, status codes, public paths, get_me and log hygiene."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Callable, Iterator

import httpx
import httpx2
import jwt
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.middleware.auth_context import get_access_token
from starlette.testclient import TestClient

from settings import Settings
from tests.support import (
    BASE_URL,
    CLIENT_ID,
    ISSUER,
    JWKS_URI,
    MCP_HEADERS,
    PRM_URL,
    SERVER_URL,
    FakeIdP,
    Signer,
    bearer,
    legacy_headers,
    make_claims,
    make_settings,
    parse_mcp_response,
    rpc_body,
)
from web.app import build_app, scopes_supported

GET_ME = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
SCOPES = ["mcp:read", "mcp:write"]
APP_ORIGIN = "https://app.example.com"
_AUTH_PARAM = re.compile(r'([A-Za-z_]+)="((?:[^"\\]|\\.)*)"')


def missing_token_challenge(settings: Settings, metadata_url: str = PRM_URL) -> str:
    """The exact challenge for a request without credentials: no error, scope only if any is advertised."""
    scopes = " ".join(scopes_supported(settings))
    return f'Bearer resource_metadata="{metadata_url}"' + (f', scope="{scopes}"' if scopes else "")


def challenge(response: httpx.Response) -> dict[str, str]:
    """The auth-params of a `WWW-Authenticate: Bearer ...` header, unquoted."""
    scheme, _, params = response.headers["www-authenticate"].partition(" ")
    assert scheme == "Bearer"
    return {name: re.sub(r"\\(.)", r"\1", value) for name, value in _AUTH_PARAM.findall(params)}


def wait_until(condition: Callable[[], bool], *, attempts: int = 200, pause: float = 0.01) -> None:
    for _ in range(attempts):
        if condition():
            return
        time.sleep(pause)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def scoped_client(idp: FakeIdP) -> Iterator[TestClient]:
    with TestClient(build_app(make_settings(oauth_required_scopes=SCOPES)), base_url=BASE_URL) as test_client:
        yield test_client


def call_get_me(client: TestClient, headers: dict[str, str]) -> dict[str, object]:
    response = client.post("/mcp", json=GET_ME, headers=headers)
    assert response.status_code == 200, response.text
    result = parse_mcp_response(response)["result"]
    assert not result.get("isError"), result
    return result["structuredContent"]


# --- missing credentials ------------------------------------------------------------------------


def test_missing_token_gets_plain_challenge_without_error(client, settings):
    response = client.post("/mcp", json=rpc_body("tools/list"), headers=MCP_HEADERS)
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate")[0] == missing_token_challenge(settings)
    assert "error" not in challenge(response)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "unauthorized"


def test_missing_token_challenge_names_configured_scopes(scoped_client):
    response = scoped_client.post("/mcp", json=rpc_body("tools/list"), headers=MCP_HEADERS)
    assert response.status_code == 401
    params = challenge(response)
    assert "error" not in params
    assert params["resource_metadata"] == PRM_URL
    assert params["scope"].split()[:2] == SCOPES
    assert response.headers.get_list("www-authenticate")[0] == missing_token_challenge(
        make_settings(oauth_required_scopes=SCOPES)
    )


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_other_mcp_methods_also_need_a_token(client, method):
    response = client.request(method, "/mcp", headers=legacy_headers())
    assert response.status_code == 401
    assert "error" not in challenge(response)


def test_basic_scheme_is_treated_as_missing(client, settings):
    headers = {**MCP_HEADERS, "Authorization": "Basic " + base64.b64encode(b"user:pass").decode()}
    response = client.post("/mcp", json=GET_ME, headers=headers)
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate")[0] == missing_token_challenge(settings)


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
def test_scheme_is_case_insensitive(client, signer, scheme):
    headers = {**legacy_headers(), "Authorization": f"{scheme} {signer.token()}"}
    assert call_get_me(client, headers)["user_id"] == "user-123"


@pytest.mark.parametrize("value", ["Bearer ", "Bearer", "Bearer    "])
def test_empty_bearer_token_is_invalid(client, value):
    response = client.post("/mcp", json=GET_ME, headers={**legacy_headers(), "Authorization": value})
    assert response.status_code == 401
    params = challenge(response)
    assert params["error"] == "invalid_token"
    assert params["resource_metadata"] == PRM_URL


# --- invalid tokens -----------------------------------------------------------------------------


def _tamper_payload(token: str) -> str:
    header, _, signature = token.split(".")
    claims = make_claims(sub="admin")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


def _tamper_signature(token: str) -> str:
    head, _, signature = token.rpartition(".")
    flipped = ("A" if signature[10] != "A" else "B").join([signature[:10], signature[11:]])
    return f"{head}.{flipped}"


BAD_TOKENS: dict[str, Callable[[Signer, Signer], str]] = {
    "expired": lambda s, _: s.token(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
    "wrong-audience": lambda s, _: s.token(aud="https://other.example.com/mcp"),
    "wrong-issuer": lambda s, _: s.token(iss="https://evil.example.com/"),
    "no-audience": lambda s, _: s.token(drop=("aud",)),
    "not-yet-valid": lambda s, _: s.token(nbf=int(time.time()) + 3600),
    "tampered-payload": lambda s, _: _tamper_payload(s.token()),
    "tampered-signature": lambda s, _: _tamper_signature(s.token()),
    "unknown-kid": lambda _, other: other.token(),
    "same-kid-other-key": lambda _, other: Signer(other.private_key, "rsa-1", "RS256").token(),
    "alg-none": lambda _, __: jwt.encode(make_claims(), None, algorithm="none"),
    "opaque": lambda _, __: "2YotnFZFEjr1zCsicMWpAA",
}


@pytest.mark.parametrize("make_token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_bad_token_is_refused_without_leaking(client, signer, rotated_signer, make_token):
    token = make_token(signer, rotated_signer)
    response = client.post("/mcp", json=GET_ME, headers=legacy_headers(token))
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/json"
    params = challenge(response)
    assert params["error"] == "invalid_token"
    assert params["resource_metadata"] == PRM_URL
    description = params["error_description"]
    assert description
    assert response.json() == {"error": "invalid_token", "error_description": description}
    secrets = [token, *token.split("."), ISSUER, SERVER_URL, JWKS_URI, "idp.example.com", "example.com", CLIENT_ID]
    for secret in filter(None, secrets):
        assert secret not in description
    assert token not in response.text


def test_two_authorization_headers_are_a_bad_request(client, signer):
    token = signer.token()
    headers = [*legacy_headers().items(), ("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    response = client.post("/mcp", json=GET_ME, headers=headers)
    assert response.status_code == 400
    params = challenge(response)
    assert params["error"] == "invalid_request"
    assert response.json()["error"] == "invalid_request"


def test_token_in_query_string_never_authenticates(client, signer):
    token = signer.token()
    response = client.post("/mcp", params={"access_token": token}, json=GET_ME, headers=legacy_headers())
    assert response.status_code == 401
    assert "error" not in challenge(response)
    assert token not in response.text
    assert call_get_me(client, legacy_headers(token))["user_id"] == "user-123"


@pytest.mark.parametrize(
    "value",
    [
        "Bearer " + "A" * 60_000,
        "Bearer " + "eyJ" + "x" * 30_000 + "." + "y" * 30_000 + ".z",
        "Bearer a.b.c",
        "Bearer ...",
        "Bearer eyJhbGciOiJSUzI1NiJ9.eyJ9.sig",
        "Bearer W10.e30.e30",  # header `[]`: JSON, but not an object
        "Bearer " + base64.urlsafe_b64encode(b'{"alg":"RS256","kid":123}').decode().rstrip("=") + ".e30.x",
        "Bearer token with spaces inside",
        b"Bearer \xff\xfe\x80.\xc3\xa9.x",
    ],
    ids=["60k", "60k-jwt-shaped", "abc", "dots", "bad-payload", "header-list", "kid-number", "spaces", "non-ascii"],
)
def test_garbage_authorization_is_401_not_500(client, value):
    response = client.post("/mcp", json=GET_ME, headers={**legacy_headers(), "Authorization": value})
    assert response.status_code == 401
    assert challenge(response)["error"] == "invalid_token"
    assert len(response.headers["www-authenticate"]) < 1000


@pytest.mark.parametrize("value", ["xyz", ",,,", "Negotiate abc", "Digest username=x"])
def test_unknown_scheme_is_treated_as_missing(client, value):
    response = client.post("/mcp", json=GET_ME, headers={**legacy_headers(), "Authorization": value})
    assert response.status_code == 401
    assert "error" not in challenge(response)


# --- scopes -------------------------------------------------------------------------------------


def test_missing_required_scope_is_403_naming_all_required(scoped_client, signer):
    response = scoped_client.post("/mcp", json=GET_ME, headers=legacy_headers(signer.token(scope="mcp:read")))
    assert response.status_code == 403
    params = challenge(response)
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "mcp:read mcp:write"
    assert params["resource_metadata"] == PRM_URL
    assert response.json()["error"] == "insufficient_scope"


def test_required_scopes_from_any_dialect_are_enough(scoped_client, signer):
    token = signer.token(scope=None, scp=["mcp:write", "mcp:read"])
    assert call_get_me(scoped_client, legacy_headers(token))["scopes"] == ["mcp:read", "mcp:write"]


# --- the identity provider is down ---------------------------------------------------------------


def test_unreachable_jwks_before_any_fetch_is_503_with_retry_after(idp, signer):
    idp.jwks_route.mock(side_effect=httpx.ConnectError("IdP unreachable"))
    with TestClient(build_app(make_settings()), base_url=BASE_URL) as client:
        response = client.post("/mcp", json=GET_ME, headers=legacy_headers(signer.token()))
        assert response.status_code == 503
        assert response.headers["retry-after"].isdigit()
        assert "www-authenticate" not in response.headers
        assert response.json()["error"] == "temporarily_unavailable"
        assert client.get("/readyz").status_code == 503


def test_jwks_answering_500_is_503_not_500(idp, signer):
    idp.jwks_route.mock(return_value=httpx.Response(500, text="oops"))
    with TestClient(build_app(make_settings(oauth_jwks_refresh_cooldown_seconds=0)), base_url=BASE_URL) as client:
        response = client.post("/mcp", json=GET_ME, headers=legacy_headers(signer.token()))
        assert response.status_code == 503
        assert "retry-after" in response.headers


# --- public paths -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/healthz",
    ],
)
def test_public_paths_answer_without_a_token(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert "www-authenticate" not in response.headers


def test_public_paths_ignore_a_bad_token(client):
    headers = {"Authorization": "Bearer not-a-token"}
    assert client.get("/.well-known/oauth-protected-resource/mcp", headers=headers).status_code == 200
    assert client.get("/healthz", headers=headers).status_code == 200


def test_preflight_without_cors_settings_is_not_challenged(client):
    # The preflight passes auth (it carries no credentials by design); the MCP endpoint does not serve OPTIONS.
    headers = {"Origin": "https://mcp.example.com", "Access-Control-Request-Method": "POST"}
    response = client.options("/mcp", headers=headers)
    assert response.status_code == 405
    assert "www-authenticate" not in response.headers
    assert client.options("/mcp", headers={"Origin": "https://mcp.example.com"}).status_code == 401


def test_other_paths_are_protected(client):
    response = client.get("/not-there")
    assert response.status_code == 401


def test_readyz_is_503_until_keys_are_fetched_then_200_after_a_request(idp, signer):
    idp_up = False
    idp.jwks_route.mock(
        side_effect=lambda _: httpx.Response(200, json={"keys": idp.keys}) if idp_up else httpx.Response(503)
    )
    app = build_app(make_settings(oauth_jwks_refresh_cooldown_seconds=0))
    keys = app.state.components.keys
    with TestClient(app, base_url=BASE_URL) as client:
        wait_until(lambda: keys.failure_count >= 1)  # the start-up prefetch has failed
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "not ready"
        wait_until(lambda: keys.failure_count >= 2)  # the fetch readyz started has failed too
        idp_up = True
        assert call_get_me(client, legacy_headers(signer.token()))["user_id"] == "user-123"
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ready"}


def test_readyz_turns_200_after_a_prefetch_without_any_request(idp):
    idp_up = False
    idp.jwks_route.mock(
        side_effect=lambda _: httpx.Response(200, json={"keys": idp.keys}) if idp_up else httpx.Response(503)
    )
    app = build_app(make_settings(oauth_jwks_refresh_cooldown_seconds=0))
    keys = app.state.components.keys
    with TestClient(app, base_url=BASE_URL) as client:
        wait_until(lambda: keys.failure_count >= 1)
        assert client.get("/readyz").status_code == 503
        idp_up = True
        wait_until(lambda: client.get("/readyz").status_code == 200)


def test_startup_prefetch_makes_readyz_200(client, idp):
    wait_until(lambda: client.get("/readyz").status_code == 200)
    assert idp.jwks_fetches >= 1


# --- CORS ---------------------------------------------------------------------------------------


@pytest.fixture
def cors_client(idp: FakeIdP) -> Iterator[TestClient]:
    with TestClient(build_app(make_settings(cors_allow_origins=[APP_ORIGIN])), base_url=BASE_URL) as test_client:
        yield test_client


def _header_names(value: str) -> set[str]:
    return {name.strip().lower() for name in value.split(",")}


def test_cors_preflight_needs_no_token(cors_client):
    requested = "authorization, content-type, mcp-protocol-version, mcp-session-id, mcp-method, mcp-name"
    response = cors_client.options(
        "/mcp",
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": requested,
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    allowed = _header_names(response.headers["access-control-allow-headers"])
    assert allowed >= {
        "authorization",
        "content-type",
        "accept",
        "mcp-protocol-version",
        "mcp-session-id",
        "mcp-method",
        "mcp-name",
        "last-event-id",
    }
    assert _header_names(response.headers["access-control-allow-methods"]) >= {"post", "get", "delete"}


def test_cors_preflight_from_unlisted_origin_gets_no_grant(cors_client):
    response = cors_client.options(
        "/mcp", headers={"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code != 200
    assert "access-control-allow-origin" not in response.headers


def test_cors_401_exposes_the_challenge(cors_client):
    response = cors_client.post("/mcp", json=GET_ME, headers={**legacy_headers(), "Origin": APP_ORIGIN})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    exposed = _header_names(response.headers["access-control-expose-headers"])
    assert exposed >= {"www-authenticate", "mcp-session-id"}


def test_cors_success_is_readable_cross_origin(cors_client, signer):
    headers = {**legacy_headers(signer.token()), "Origin": APP_ORIGIN}
    response = cors_client.post("/mcp", json=GET_ME, headers=headers)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN


# --- get_me -------------------------------------------------------------------------------------


def _iso(timestamp: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def test_get_me_reports_the_verified_identity(client, signer):
    now = int(time.time())
    token = signer.token(
        sub="alice",
        iat=now - 10,
        exp=now + 900,
        jti="token-1",
        scope="tools:read openid tools:read",
        scp=["b:write"],
        permissions=["a:perm"],
        aud=[SERVER_URL, "https://other.example.com"],
    )
    response = client.post("/mcp", json=GET_ME, headers=legacy_headers(token))
    assert response.status_code == 200
    assert token not in response.text
    assert token.split(".")[2] not in response.text
    identity = parse_mcp_response(response)["result"]["structuredContent"]
    assert identity == {
        "user_id": "alice",
        "client_id": CLIENT_ID,
        "issuer": ISSUER,
        "audience": [SERVER_URL, "https://other.example.com"],
        "scopes": ["a:perm", "b:write", "openid", "tools:read"],
        "issued_at": _iso(now - 10),
        "expires_at": _iso(now + 900),
        "token_id": "token-1",
        "token_type": "user",
    }


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": CLIENT_ID},
        {"sub": f"{CLIENT_ID}@clients", "gty": "client-credentials"},
        {"sub": "service-principal-oid", "idtyp": "app"},
    ],
    ids=["sub-is-client", "auth0", "entra"],
)
def test_get_me_marks_client_credentials_tokens_as_machine(client, signer, claims):
    identity = call_get_me(client, legacy_headers(signer.token(**claims)))
    assert identity["token_type"] == "machine"
    assert identity["user_id"] == claims["sub"]


def test_get_me_without_optional_claims(client, signer):
    identity = call_get_me(client, legacy_headers(signer.token(drop=("iat", "jti", "scope"))))
    assert identity["issued_at"] is None
    assert identity["token_id"] is None
    assert identity["scopes"] == []
    assert identity["expires_at"].endswith("Z")


@pytest.mark.parametrize(("mode", "version"), [("auto", "2026-07-28"), ("legacy", "2025-11-25")])
async def test_sdk_client_gets_get_me_in_both_eras(idp, signer, mode, version):
    app = build_app(make_settings())
    token = signer.token(sub="dave")
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with (
            httpx2.AsyncClient(transport=transport, headers=bearer(token)) as http_client,
            Client(streamable_http_client(SERVER_URL, http_client=http_client), mode=mode) as mcp_client,
        ):
            result = await mcp_client.call_tool("get_me", {})
            assert mcp_client.protocol_version == version
    assert not result.is_error
    assert result.structured_content["user_id"] == "dave"
    assert token not in str(result.content)


# --- the SDK's access-token context -------------------------------------------------------------


def test_get_access_token_is_set_in_sync_and_async_tools(idp, signer):
    app = build_app(make_settings())
    mcp = app.state.components.mcp

    def subject_sync() -> str:
        access = get_access_token()
        return access.subject if access else "<none>"

    async def subject_async() -> str:
        access = get_access_token()
        return access.subject if access else "<none>"

    mcp.add_tool(subject_sync, name="subject_sync")
    mcp.add_tool(subject_async, name="subject_async")
    token = signer.token(sub="carol")
    with TestClient(app, base_url=BASE_URL) as client:
        for name in ("subject_sync", "subject_async"):
            body = rpc_body("tools/call", {"name": name, "arguments": {}})
            response = client.post("/mcp", json=body, headers=legacy_headers(token))
            assert response.status_code == 200, response.text
            result = parse_mcp_response(response)["result"]
            assert result["structuredContent"] == {"result": "carol"}, name


def test_access_token_carries_client_scopes_and_resource(idp, signer):
    app = build_app(make_settings())
    seen = {}

    async def inspect() -> str:
        access = get_access_token()
        assert access is not None
        seen.update(client_id=access.client_id, scopes=access.scopes, resource=access.resource)
        return "ok"

    app.state.components.mcp.add_tool(inspect, name="inspect")
    with TestClient(app, base_url=BASE_URL) as client:
        body = rpc_body("tools/call", {"name": "inspect", "arguments": {}})
        response = client.post("/mcp", json=body, headers=legacy_headers(signer.token(scope="b a")))
        assert response.status_code == 200
    assert seen == {"client_id": CLIENT_ID, "scopes": ["a", "b"], "resource": SERVER_URL}


# --- log hygiene --------------------------------------------------------------------------------


def test_tokens_never_reach_the_logs(idp, signer, rotated_signer, caplog):
    caplog.set_level(logging.DEBUG)
    good = signer.token()
    refused = [
        _tamper_signature(signer.token()),
        signer.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
        signer.token(aud="https://other.example.com/mcp"),
        rotated_signer.token(),
        "opaque-secret-token-value",
    ]
    with TestClient(build_app(make_settings(log_level="DEBUG")), base_url=BASE_URL) as client:
        for token in refused:
            assert client.post("/mcp", json=GET_ME, headers=legacy_headers(token)).status_code == 401
        assert call_get_me(client, legacy_headers(good))["user_id"] == "user-123"
        assert client.post("/mcp", json=GET_ME, headers=bearer(good) | MCP_HEADERS).status_code == 200
    assert any(record.name == "auth.middleware" for record in caplog.records)
    logged = "\n".join([caplog.text, *(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)])
    for token in [good, *refused]:
        assert token not in logged
        assert token.rsplit(".", 1)[-1] not in logged

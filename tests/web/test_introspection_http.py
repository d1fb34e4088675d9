"""Opaque tokens through the real app: the IdP's introspection endpoint (served by respx) decides, the same token
rules as for JWTs judge its answer, and an outage is a 503 with Retry-After while cached answers keep serving."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from tests.support import (
    BASE_URL,
    CLIENT_ID,
    ISSUER,
    JWKS_URI,
    NOTES_SCOPES,
    DpopKey,
    FakeIdP,
    dpop_headers,
    legacy_headers,
    make_claims,
    make_settings,
    parse_mcp_response,
    rpc_body,
)
from web.app import build_app

INTROSPECTION_URL = "https://idp.example.com/oauth2/introspect"
RS_CLIENT_ID = "mcp-resource server:1"  # a space and a colon: RFC 6749 section 2.3.1 encodes both
RS_SECRET = "s3cret/+&=value"
GET_ME = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
CREATE_NOTE = rpc_body("tools/call", {"name": "create_note", "arguments": {"title": "t", "content": "c"}})


class FakeIntrospection:
    """The IdP's introspection endpoint: an answer per token (inactive when unknown), or an outage."""

    def __init__(self, idp: FakeIdP) -> None:
        self.answers: dict[str, Any] = {}
        self.outage: Callable[[], httpx.Response] | None = None
        self.requests: list[httpx.Request] = []
        self.route = idp.router.post(INTROSPECTION_URL).mock(side_effect=self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.outage is not None:
            return self.outage()
        token = parse_qs(request.content.decode())["token"][0]
        answer = self.answers.get(token, {"active": False})
        return httpx.Response(200, json=answer)

    def issue(self, **overrides: Any) -> str:
        """A new opaque token whose answer is active with the usual claims (as a JWT would carry them)."""
        token = secrets.token_urlsafe(32)
        self.answers[token] = {"active": True, **make_claims(**overrides)}
        return token

    @property
    def calls(self) -> int:
        return self.route.call_count


@pytest.fixture
def introspection(idp: FakeIdP) -> FakeIntrospection:
    return FakeIntrospection(idp)


def introspecting(**overrides: Any) -> Any:
    values = {
        "oauth_introspection_endpoint": INTROSPECTION_URL,
        "oauth_introspection_client_id": RS_CLIENT_ID,
        "oauth_introspection_client_secret": RS_SECRET,
        "oauth_http_timeout_seconds": 1,
        **overrides,
    }
    return make_settings(**values)


@pytest.fixture
def app_client(idp: FakeIdP, introspection: FakeIntrospection) -> Iterator[TestClient]:
    with TestClient(build_app(introspecting()), base_url=BASE_URL) as client:
        yield client


def post(client: TestClient, token: str, body: dict[str, Any] = GET_ME) -> httpx.Response:
    return client.post("/mcp", json=body, headers=legacy_headers(token))


def get_me(client: TestClient, token: str) -> dict[str, Any]:
    response = post(client, token)
    assert response.status_code == 200, response.text
    result = parse_mcp_response(response)["result"]
    assert not result.get("isError"), result
    return result["structuredContent"]


def assert_invalid_token(response: httpx.Response, description: str) -> None:
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert response.json()["error_description"] == description


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"].isdigit()
    assert response.json()["error"] == "temporarily_unavailable"


# --- accepted --------------------------------------------------------------------------------------


def test_get_me_shows_the_same_caller_for_an_introspected_token_as_for_a_jwt(app_client, introspection, signer):
    claims = make_claims(scope=NOTES_SCOPES)
    opaque = secrets.token_urlsafe(32)
    introspection.answers[opaque] = {"active": True, "token_type": "Bearer", "username": "alice", **claims}
    assert get_me(app_client, opaque) == get_me(app_client, signer.sign(claims))
    assert get_me(app_client, opaque)["scopes"] == sorted(NOTES_SCOPES.split())


def test_an_answer_without_iss_names_the_configured_issuer(app_client, introspection):
    token = introspection.issue()
    del introspection.answers[token]["iss"]
    assert get_me(app_client, token)["issuer"] == ISSUER


def test_the_introspection_request_carries_the_token_and_basic_client_credentials(app_client, introspection):
    token = introspection.issue()
    get_me(app_client, token)
    request = introspection.requests[-1]
    assert parse_qs(request.content.decode()) == {"token": [token], "token_type_hint": ["access_token"]}
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    # RFC 6749 section 2.3.1: each part form-urlencoded first, then base64 of "id:secret"
    expected = base64.b64encode(b"mcp-resource+server%3A1:s3cret%2F%2B%26%3Dvalue").decode()
    assert request.headers["authorization"] == f"Basic {expected}"


def test_client_secret_post_sends_the_credentials_as_form_fields(idp, introspection):
    token = introspection.issue()
    settings = introspecting(oauth_introspection_auth_method="client_secret_post")
    with TestClient(build_app(settings), base_url=BASE_URL) as client:
        get_me(client, token)
    request = introspection.requests[-1]
    assert "authorization" not in request.headers
    assert parse_qs(request.content.decode()) == {
        "token": [token],
        "token_type_hint": ["access_token"],
        "client_id": [RS_CLIENT_ID],
        "client_secret": [RS_SECRET],
    }


def test_the_endpoint_comes_from_discovery_when_not_set(idp, introspection):
    idp.discovery_route.mock(
        return_value=httpx.Response(
            200, json={"issuer": ISSUER, "jwks_uri": JWKS_URI, "introspection_endpoint": INTROSPECTION_URL}
        )
    )
    token = introspection.issue()
    with TestClient(build_app(introspecting(oauth_introspection_endpoint=None)), base_url=BASE_URL) as client:
        assert get_me(client, token)["user_id"] == "user-123"
    assert idp.discovery_route.call_count == 1 and introspection.calls == 1


def test_discovery_without_an_introspection_endpoint_is_a_503_not_a_500(idp, introspection):
    with TestClient(build_app(introspecting(oauth_introspection_endpoint=None)), base_url=BASE_URL) as client:
        assert_unavailable(post(client, introspection.issue()))
    assert idp.discovery_route.call_count >= 1 and introspection.calls == 0


# --- refused by the rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "description"),
    [
        ({"active": False}, "token is not active"),
        ({"active": "true"}, "token is not active"),  # only the JSON true is active
        ({"active": True, **make_claims(exp=int(time.time()) - 600)}, "token has expired"),
        ({"active": True, **make_claims(drop=("exp",))}, "token is missing a required claim"),
        ({"active": True, **make_claims(iss="https://other.example.com/")}, "token issuer is not accepted"),
        ({"active": True, **make_claims(aud="https://other.example.com/mcp")}, "token audience is not accepted"),
        ({"active": True, **make_claims(drop=("aud",))}, "token is missing a required claim"),
        ({"active": True, **make_claims(sub=None, azp=None)}, "token has no subject or client id"),
        ({"active": True, **make_claims(token_type="refresh_token")}, "token is not an access token"),
        (
            {"active": True, **make_claims(token_type="urn:ietf:params:oauth:token-type:refresh_token")},
            "token is not an access token",
        ),
        ({"active": True, **make_claims(token_use="refresh_token")}, "token is not an access token"),  # Ory Hydra
        ({"active": True, **make_claims(scope=["read:notes"])}, "token claims have unexpected types"),
        (
            {"active": True, **make_claims(cnf={"jkt": "abc"})},
            "token is bound to a key and cannot be used as a bearer token",
        ),
    ],
)
def test_an_answer_the_rules_refuse_is_a_401(app_client, introspection, answer, description):
    token = secrets.token_urlsafe(24)
    introspection.answers[token] = {key: value for key, value in answer.items() if value is not None}
    assert_invalid_token(post(app_client, token), description)


def test_an_opaque_token_bound_to_a_dpop_key_needs_its_proof(app_client, introspection, ec_private_key):
    key = DpopKey(ec_private_key, "ES256")
    token = introspection.issue(cnf={"jkt": key.thumbprint})
    response = app_client.post("/mcp", json=GET_ME, headers=dpop_headers(token, key.proof(token=token)))
    assert response.status_code == 200, response.text
    assert parse_mcp_response(response)["result"]["structuredContent"]["user_id"] == "user-123"
    impostor = DpopKey(ec.generate_private_key(ec.SECP256R1()), "ES256")
    refused = app_client.post("/mcp", json=GET_ME, headers=dpop_headers(token, impostor.proof(token=token)))
    assert refused.status_code == 401
    assert refused.json()["error_description"] == "DPoP proof key is not the key the token is bound to"
    assert introspection.calls == 1  # the proof is checked per request against the cached answer


def test_garbage_tokens_are_introspected_too_and_the_idp_decides(app_client, introspection):
    for token in ("not-a-token", "a.b.c.d.e", "a..b.c", "%%%"):
        assert_invalid_token(post(app_client, token), "token is not active")
    assert introspection.calls == 4


def test_a_token_lacking_a_tools_scope_is_a_403(app_client, introspection):
    token = introspection.issue(scope="read:notes")
    assert get_me(app_client, token)["scopes"] == ["read:notes"]
    response = post(app_client, token, CREATE_NOTE)
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert post(app_client, introspection.issue(scope=NOTES_SCOPES), CREATE_NOTE).status_code == 200


def test_answers_without_aud_pass_when_configured_so_and_the_client_is_listed(idp, introspection):
    settings = introspecting(oauth_introspection_audience_optional=True, oauth_client_ids=[CLIENT_ID])
    listed = introspection.issue(drop=("aud",))
    other = introspection.issue(drop=("aud",), azp="someone-else")
    wrong_aud = introspection.issue(aud="https://other.example.com/mcp")
    with TestClient(build_app(settings), base_url=BASE_URL) as client:
        assert get_me(client, listed)["audience"] == []
        assert_invalid_token(post(client, other), "token client is not accepted")
        assert_invalid_token(post(client, wrong_aud), "token audience is not accepted")


# --- cache and single-flight ------------------------------------------------------------------------


def test_an_answer_is_cached_and_an_inactive_one_briefly(app_client, introspection):
    token = introspection.issue()
    for _ in range(3):
        get_me(app_client, token)
    assert introspection.calls == 1
    for _ in range(3):
        assert post(app_client, "revoked-or-unknown").status_code == 401
    assert introspection.calls == 2


def test_cached_tokens_keep_working_through_an_outage_while_new_ones_get_503(app_client, introspection):
    known, new = introspection.issue(), introspection.issue()
    get_me(app_client, known)
    for outage in (
        lambda: httpx.Response(500, text="oops"),
        lambda: httpx.Response(200, text="<html>maintenance</html>"),
        lambda: httpx.Response(200, json=["not", "an", "object"]),
        lambda: httpx.Response(302, headers={"location": "https://elsewhere.example.com/"}),
    ):
        introspection.outage = outage
        assert get_me(app_client, known)["user_id"] == "user-123"
        assert_unavailable(post(app_client, new))
        assert app_client.get("/readyz").status_code == 200  # per token, not the server's readiness
    introspection.outage = None
    assert get_me(app_client, new)["user_id"] == "user-123"  # a failure is never cached


def test_an_unreachable_endpoint_is_a_503(app_client, introspection):
    def unreachable() -> httpx.Response:
        raise httpx.ConnectError("introspection endpoint down")

    introspection.outage = unreachable
    assert_unavailable(post(app_client, introspection.issue()))


def test_a_hanging_endpoint_answers_503_within_the_timeout(idp, introspection):
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200, json={"active": False})

    introspection.route.mock(side_effect=hang)
    with TestClient(build_app(introspecting(oauth_http_timeout_seconds=0.5)), base_url=BASE_URL) as client:
        started = time.monotonic()
        assert_unavailable(post(client, introspection.issue()))
        assert time.monotonic() - started < 10  # the 0.5 s timeout, never the 30 s hang


# --- JWTs -------------------------------------------------------------------------------------------


def test_jwts_are_not_introspected_unless_asked(app_client, introspection, signer):
    assert get_me(app_client, signer.token())["user_id"] == "user-123"
    assert introspection.calls == 0


def test_with_introspect_jwts_a_revoked_jwt_is_refused(idp, introspection, signer):
    live, revoked = signer.token(), signer.token()
    introspection.answers[live] = {"active": True, **make_claims()}
    with TestClient(build_app(introspecting(oauth_introspect_jwts=True)), base_url=BASE_URL) as client:
        assert get_me(client, live)["user_id"] == "user-123"
        assert_invalid_token(post(client, revoked), "token is not active")
        assert_invalid_token(post(client, signer.token(exp=int(time.time()) - 600)), "token has expired")
    assert introspection.calls == 2  # the expired JWT is refused locally, before any call


def test_a_jwt_the_server_cannot_judge_locally_is_introspected(app_client, introspection, signer, rotated_signer):
    """Okta's org server signs with keys it does not publish; Keycloak's lightweight tokens leave claims out."""
    unpublished_key = rotated_signer.token()
    introspection.answers[unpublished_key] = {"active": True, **make_claims(sub="org-user")}
    lightweight = signer.token(drop=("aud", "scope"))
    introspection.answers[lightweight] = {"active": True, **make_claims(sub="light-user")}
    assert get_me(app_client, unpublished_key)["user_id"] == "org-user"
    assert get_me(app_client, lightweight)["user_id"] == "light-user"
    assert introspection.calls == 2
    # a JWT the server can judge is refused without a call: expired, another audience, a bad signature
    assert_invalid_token(post(app_client, signer.token(exp=int(time.time()) - 600)), "token has expired")
    assert_invalid_token(post(app_client, signer.token(aud="https://other/")), "token audience is not accepted")
    header, payload, signature = signer.token().split(".")
    forged = f"{header}.{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    assert_invalid_token(post(app_client, forged), "token signature is invalid")
    assert introspection.calls == 2
    # and the IdP's answer must pass every rule: a lightweight token the IdP knows nothing of stays refused
    assert_invalid_token(post(app_client, signer.token(drop=("aud",))), "token is not active")


def test_without_introspection_an_opaque_token_is_refused_as_not_a_jwt(idp, introspection, caplog):
    with TestClient(build_app(make_settings()), base_url=BASE_URL) as client, caplog.at_level(logging.INFO):
        assert_invalid_token(post(client, "opaque-token-value"), "token is not a JWT")
    assert "an opaque token" in caplog.text
    assert introspection.calls == 0


# --- DPoP-bound opaque tokens (RFC 9449 section 6.2: cnf.jkt in the introspection answer) ---------------


@pytest.fixture
def bound_opaque(introspection: FakeIntrospection, ec_private_key: Any) -> tuple[str, DpopKey]:
    """An opaque token whose introspection answer binds it to a DPoP key, and that key."""
    key = DpopKey(ec_private_key, "ES256")
    return introspection.issue(token_type="DPoP", cnf={"jkt": key.thumbprint}), key


def test_a_dpop_bound_opaque_token_works_with_its_proof(app_client, introspection, bound_opaque):
    token, key = bound_opaque
    for _ in range(2):  # the second answer comes from the cache, still bound
        response = app_client.post("/mcp", json=GET_ME, headers=dpop_headers(token, key.proof(token=token)))
        assert response.status_code == 200, response.text
        assert parse_mcp_response(response)["result"]["structuredContent"]["user_id"] == "user-123"
    assert introspection.calls == 1


@pytest.mark.parametrize("cached", [False, True])
def test_a_dpop_bound_opaque_token_sent_as_bearer_is_refused(app_client, introspection, bound_opaque, cached):
    token, key = bound_opaque
    if cached:
        app_client.post("/mcp", json=GET_ME, headers=dpop_headers(token, key.proof(token=token)))
    assert_invalid_token(post(app_client, token), "token is bound to a key and cannot be used as a bearer token")
    assert introspection.calls == 1


def test_a_dpop_bound_opaque_token_with_another_keys_proof_is_refused(app_client, bound_opaque, ed_private_key):
    token, _ = bound_opaque
    other = DpopKey(ed_private_key, "EdDSA")
    response = app_client.post("/mcp", json=GET_ME, headers=dpop_headers(token, other.proof(token=token)))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("DPoP ")
    assert 'error="invalid_dpop_proof"' in response.headers["www-authenticate"]
    assert response.json()["error_description"] == "DPoP proof key is not the key the token is bound to"


# --- hygiene ----------------------------------------------------------------------------------------


def test_neither_the_token_nor_the_secret_reach_the_log(app_client, introspection, caplog):
    token = introspection.issue(exp=int(time.time()) - 600)
    with caplog.at_level(logging.DEBUG):
        assert post(app_client, token).status_code == 401
        introspection.outage = lambda: httpx.Response(503)
        assert post(app_client, "another-" + token).status_code == 503
    assert "token refused: token has expired" in caplog.text
    assert "introspection" in caplog.text and "HTTP 503" in caplog.text
    assert token not in caplog.text and RS_SECRET not in caplog.text
    introspector = app_client.app.state.components.introspector
    assert RS_SECRET not in repr(introspector)

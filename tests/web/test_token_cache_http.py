"""The verification cache seen through HTTP: expiry, key rotation and forged signatures win over a cached answer."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import jwt
import pytest
from mcp.server.auth.middleware.auth_context import get_access_token
from starlette.testclient import TestClient

from auth.errors import AuthError
from tests.support import (
    BASE_URL,
    FakeIdP,
    Signer,
    cyclic_garbage,
    expiring_soon,
    legacy_headers,
    make_settings,
    parse_mcp_response,
    rpc_body,
)
from web.app import build_app

GET_ME = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
_ERROR_DESCRIPTION = re.compile(r'error_description="([^"]*)"')


@pytest.fixture
def app_client(idp: FakeIdP) -> Iterator[TestClient]:
    # No refetch cooldown and no leeway: rotation and expiry show at once.
    settings = make_settings(oauth_jwks_refresh_cooldown_seconds=0, oauth_leeway_seconds=0)
    with TestClient(build_app(settings), base_url=BASE_URL) as client:
        yield client


def call(client: TestClient, token: str) -> tuple[int, str]:
    """Status, and the error_description of a refusal ("" for a 200)."""
    response = client.post("/mcp", json=GET_ME, headers=legacy_headers(token))
    if response.status_code == 200:
        assert not parse_mcp_response(response)["result"]["isError"]
        return 200, ""
    match = _ERROR_DESCRIPTION.search(response.headers.get("www-authenticate", ""))
    return response.status_code, match.group(1) if match else ""


def test_a_cached_token_is_refused_when_it_expires(app_client, signer):
    exp = expiring_soon()
    token = signer.token(exp=exp, iat=exp - 60)
    assert call(app_client, token) == (200, "")
    assert call(app_client, token) == (200, "")  # served from the cache
    time.sleep(max(0.0, exp - time.time()) + 0.05)
    assert call(app_client, token) == (401, "token has expired")


def test_a_cached_token_is_refused_once_the_idp_rotates_its_key_out(app_client, idp, signer, rotated_signer):
    old = signer.token()
    assert call(app_client, old) == (200, "")
    assert call(app_client, old) == (200, "")
    idp.publish(rotated_signer)  # rsa-1 is gone
    # A token under the new kid makes the server refresh its key set; the old key goes with it.
    assert call(app_client, rotated_signer.token()) == (200, "")
    assert call(app_client, old) == (401, "token signing key is unknown")
    assert call(app_client, old) == (401, "token signing key is unknown")


def test_a_token_one_signature_character_away_from_a_cached_one_is_refused(app_client, signer):
    token = signer.token()
    assert call(app_client, token) == (200, "")
    header, payload, signature = token.split(".")
    for index in (0, len(signature) // 2, len(signature) - 2):
        flipped = "A" if signature[index] != "A" else "B"
        forged = f"{header}.{payload}.{signature[:index]}{flipped}{signature[index + 1 :]}"
        assert call(app_client, forged) == (401, "token signature is invalid")
    assert call(app_client, token) == (200, "")


def test_a_remembered_header_counts_only_while_the_cache_holds_its_verification(idp, signer):
    """Room for two verifications. t1 is evicted from the cache while its Authorization header is still among the
    remembered ones: its next request is verified afresh (a miss), and every answer is for its own caller."""
    app = build_app(make_settings(oauth_token_cache_entries=2))
    tokens = [signer.token(sub=f"user-{index}") for index in range(3)]
    with TestClient(app, base_url=BASE_URL) as client:
        for index in (0, 1, 0, 2, 1):  # t2 pushes out t1, the least recently used
            response = client.post("/mcp", json=GET_ME, headers=legacy_headers(tokens[index]))
            assert response.status_code == 200, index
            assert parse_mcp_response(response)["result"]["structuredContent"]["user_id"] == f"user-{index}"
    cache = app.state.components.verifier.cache
    assert (cache.misses, cache.hits) == (4, 1)


def test_header_variants_of_one_token_are_the_same_caller(app_client, signer):
    token = signer.token()
    for value in (f"Bearer {token}", f"bearer {token}", f"Bearer  {token} ", f"BEARER {token}"):
        response = app_client.post("/mcp", json=GET_ME, headers={**legacy_headers(token), "Authorization": value})
        assert response.status_code == 200, value
        assert parse_mcp_response(response)["result"]["structuredContent"]["user_id"] == "user-123"


def test_each_request_carries_its_own_token_to_the_sdk(idp: FakeIdP, signer: Signer):
    """The SDK's view of the caller is built once per token, and never handed to another token's request."""
    app = build_app(make_settings())

    def token_jti() -> str:
        access = get_access_token()
        assert access is not None
        return f"{(access.claims or {}).get('jti')}:{access.token[-8:]}"

    app.state.components.mcp.add_tool(token_jti, name="token_jti")
    tokens = {jti: signer.token(jti=jti) for jti in ("first", "second")}
    body = rpc_body("tools/call", {"name": "token_jti", "arguments": {}})
    with TestClient(app, base_url=BASE_URL) as client:
        for jti in ("first", "second", "first", "second", "first"):
            response = client.post("/mcp", json=body, headers=legacy_headers(tokens[jti]))
            assert response.status_code == 200, response.text
            result = parse_mcp_response(response)["result"]["structuredContent"]["result"]
            assert result == f"{jti}:{tokens[jti][-8:]}"


def test_refusals_leave_nothing_for_the_cyclic_collector(app_client, signer):
    """A refusal, fresh, remembered or by the signature memo, is freed as its response is sent: no exception kept
    in a cycle with the frames (and so the request objects) its traceback holds."""
    token = signer.token()
    forged = token[:-8] + ("AAAAAAAA" if not token.endswith("AAAAAAAA") else "BBBBBBBB")
    assert call(app_client, forged) == (401, "token signature is invalid")
    accepted = signer.token()
    assert call(app_client, accepted)[0] == 200
    segment = accepted.rpartition(".")[2]
    other_bytes = accepted.rpartition(".")[0] + "." + segment[:20] + "abcdef" + segment[26:]
    with cyclic_garbage() as garbage:
        for _ in range(3):  # remembered refusals
            assert call(app_client, forged) == (401, "token signature is invalid")
        assert call(app_client, signer.token(exp=int(time.time()) - 60)) == (401, "token has expired")
        assert call(app_client, other_bytes) == (401, "token signature is invalid")  # the signature memo's
    # (the test client's own streams leave anyio's EndOfStream behind: not the server's)
    assert [type(obj).__name__ for obj in garbage if isinstance(obj, AuthError | jwt.PyJWTError)] == []

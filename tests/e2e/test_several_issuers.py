"""Several trusted issuers at once (OAUTH_ISSUERS_FILE, issue 21) against two real third-party IdPs: two
oidc-provider instances issuing JWT access tokens, each with its own signing key, and a third one the server does
not trust. A token is verified only with its own issuer's keys; one IdP's JWKS failing or hanging leaves the
other's tokens working."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

from tests.e2e.conftest import LOOPBACK, ServerLauncher, ServerProcess, free_port
from tests.e2e.oidc_idp import M2M_CLIENT, OidcProvider, OidcProviderLauncher, rsa_signer
from tests.support import LEGACY_VERSION, MCP_HEADERS, bearer, rpc_body

pytestmark = pytest.mark.e2e

HTTP_TIMEOUT_SECONDS = 3  # OAUTH_HTTP_TIMEOUT_SECONDS: the longest a hanging JWKS may hold a request
FAST_ENOUGH = 1.5  # seconds: B's token is answered well before A's hanging fetch times out


@dataclass
class Deployment:
    a: OidcProvider
    b: OidcProvider
    stranger: OidcProvider  # a working IdP the server does not trust
    server: ServerProcess


def issuers_file(path: Path, audience: str, *idps: OidcProvider) -> Path:
    # No refresh cooldown: a test that breaks an IdP's JWKS sees the very next fetch fail.
    tables = [
        f'[[issuer]]\nissuer = "{idp.issuer}"\naudience = ["{audience}"]\njwks_refresh_cooldown_seconds = 0\n'
        for idp in idps
    ]
    path.write_text("\n".join(tables))
    return path


@pytest.fixture(scope="module")
def deployment(
    oidc_idps: OidcProviderLauncher, module_launcher: ServerLauncher, tmp_path_factory: pytest.TempPathFactory
) -> Deployment:
    port = free_port()
    mcp_url = f"http://{LOOPBACK}:{port}/mcp"
    a = oidc_idps.start(mcp_url, token_format="jwt", signer=rsa_signer("a"))
    b = oidc_idps.start(mcp_url, token_format="jwt", signer=rsa_signer("b"))
    stranger = oidc_idps.start(mcp_url, token_format="jwt")
    path = issuers_file(tmp_path_factory.mktemp("issuers") / "issuers.toml", mcp_url, a, b)
    server = module_launcher.start(
        env={
            "OAUTH_ISSUERS_FILE": str(path),
            "MCP_SERVER_URL": mcp_url,
            "OAUTH_HTTP_TIMEOUT_SECONDS": str(HTTP_TIMEOUT_SECONDS),
        },
        port=port,
        ready_path="/readyz",
    )
    return Deployment(a, b, stranger, server)


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


async def identity(server: ServerProcess, token: str) -> dict:
    async with server.client(token) as client:
        result = await client.call_tool("get_me", {})
    assert not result.is_error, result.content
    return result.structured_content


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_the_resource_metadata_lists_both_issuers_in_file_order(deployment: Deployment) -> None:
    metadata = httpx.get(deployment.server.resource_metadata_url, timeout=10).json()
    assert metadata["authorization_servers"] == [deployment.a.issuer, deployment.b.issuer]


async def test_both_issuers_tokens_are_accepted(deployment: Deployment) -> None:
    for idp in (deployment.a, deployment.b):
        me = await identity(deployment.server, idp.access_token())
        assert me["issuer"] == idp.issuer
        assert me["client_id"] == M2M_CLIENT[0]
        assert me["audience"] == [deployment.server.mcp_url]


def test_a_token_saying_issuer_a_but_signed_with_bs_key_is_refused(deployment: Deployment) -> None:
    a, b, server = deployment.a, deployment.b, deployment.server
    claims = claims_of(a.access_token())  # a real token of A, its claims re-signed below
    assert server.post_mcp(a.forge(claims)).status_code == 200  # A's own key: the forging itself is sound
    forged_with_b_kid = b.forge(claims)  # B's key, B's kid: routed to A by iss, and A has no such key
    forged_with_a_kid = b.signer.sign(claims, headers={"typ": "at+jwt", "kid": a.signer.kid})  # kid is a lookup key
    for token in (forged_with_b_kid, forged_with_a_kid):
        assert_invalid_token(server.post_mcp(token))
    # And the other way round: B's claims signed with A's key.
    assert_invalid_token(server.post_mcp(a.forge(claims_of(b.access_token()))))


def test_an_untrusted_issuers_token_is_refused_without_any_fetch(deployment: Deployment) -> None:
    stranger = deployment.stranger
    token = stranger.access_token()  # aud is this server, only the issuer is unknown
    before = (stranger.requests("GET", "/jwks"), stranger.requests("GET", "/.well-known/openid-configuration"))
    assert_invalid_token(deployment.server.post_mcp(token))
    after = (stranger.requests("GET", "/jwks"), stranger.requests("GET", "/.well-known/openid-configuration"))
    assert after == before


async def test_a_failing_jwks_of_a_leaves_bs_new_tokens_working(deployment: Deployment) -> None:
    a, b, server = deployment.a, deployment.b, deployment.server
    a.set_jwks("fail")
    try:
        # A token of A with a kid A never published makes the server try A's JWKS, which fails.
        unknown_kid = rsa_signer("a-new")
        refused = server.post_mcp(a.forge(claims_of(a.access_token()), signer=unknown_kid))
        assert refused.status_code in (401, 503), refused.text
        me = await identity(server, b.access_token())
        assert me["issuer"] == b.issuer
        # A's tokens signed with its known key keep working on the last-known-good key set.
        assert server.post_mcp(a.access_token()).status_code == 200
    finally:
        a.set_jwks("ok")


async def test_a_hanging_jwks_of_a_does_not_slow_bs_tokens(deployment: Deployment) -> None:
    a, b, server = deployment.a, deployment.b, deployment.server
    a_token = a.forge(claims_of(a.access_token()), signer=rsa_signer("a-newer"))  # forces a fetch of A's keys
    b_token = b.access_token()
    headers = {**MCP_HEADERS, "MCP-Protocol-Version": LEGACY_VERSION}
    body = rpc_body("tools/list")
    a.set_jwks("hang")
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS + 10) as http:
            hanging = asyncio.create_task(http.post(server.mcp_url, json=body, headers={**headers, **bearer(a_token)}))
            await asyncio.sleep(0.3)  # A's fetch is under way
            started = time.monotonic()
            answer = await http.post(server.mcp_url, json=body, headers={**headers, **bearer(b_token)})
            b_elapsed = time.monotonic() - started
            a_answer = await hanging
        a_elapsed = time.monotonic() - started
    finally:
        a.set_jwks("ok")
    assert answer.status_code == 200, answer.text
    assert b_elapsed < FAST_ENOUGH, f"B's token waited {b_elapsed:.2f} s behind A's hanging JWKS"
    assert a_answer.status_code in (401, 503), a_answer.text
    assert a_elapsed < HTTP_TIMEOUT_SECONDS + 2  # the hang never holds a request past the HTTP timeout

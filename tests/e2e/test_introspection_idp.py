"""Opaque tokens checked by introspection (RFC 7662, issue 21) against a real third-party IdP: panva's
oidc-provider issues opaque client-credentials tokens and serves introspection and revocation; `python server.py`
runs in production mode with nothing but the natural settings (OAUTH_ISSUER, MCP_SERVER_URL and the
introspection client)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.conftest import LOOPBACK, ServerLauncher, ServerProcess, free_port
from tests.e2e.oidc_idp import (
    M2M_CLIENT,
    OTHER_RESOURCE,
    RESOURCE_SERVER_CLIENT,
    TOOL_SCOPES,
    OidcProvider,
    OidcProviderLauncher,
)
from tests.support import rpc_body

pytestmark = pytest.mark.e2e

CACHE_SECONDS = 1  # OAUTH_INTROSPECTION_CACHE_SECONDS: how long a revoked token may still pass
REVOCATION_BOUND = CACHE_SECONDS + 4.0  # the cache time, plus slack for a loaded machine
POLL_INTERVAL = 0.2


@dataclass
class Deployment:
    idp: OidcProvider
    server: ServerProcess


@pytest.fixture(scope="module")
def deployment(oidc_idps: OidcProviderLauncher, module_launcher: ServerLauncher) -> Deployment:
    port = free_port()
    mcp_url = f"http://{LOOPBACK}:{port}/mcp"
    idp = oidc_idps.start(mcp_url, token_format="opaque")
    client_id, client_secret = RESOURCE_SERVER_CLIENT
    server = module_launcher.start(
        env={
            "OAUTH_ISSUER": idp.issuer,
            "MCP_SERVER_URL": mcp_url,
            "OAUTH_INTROSPECTION_CLIENT_ID": client_id,
            "OAUTH_INTROSPECTION_CLIENT_SECRET": client_secret,
            "OAUTH_INTROSPECTION_CACHE_SECONDS": str(CACHE_SECONDS),
        },
        port=port,
        ready_path="/readyz",
    )
    return Deployment(idp, server)


def call_tool(server: ServerProcess, token: str, name: str, arguments: dict | None = None) -> httpx.Response:
    return server.post_mcp(token, rpc_body("tools/call", {"name": name, "arguments": arguments or {}}))


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge


def test_discovery_names_the_introspection_endpoint_the_server_uses(deployment: Deployment) -> None:
    # No OAUTH_INTROSPECTION_ENDPOINT: the server takes introspection_endpoint from the IdP's discovery.
    assert deployment.idp.discovery["introspection_endpoint"] == f"{deployment.idp.issuer}/token/introspection"
    metadata = httpx.get(deployment.server.resource_metadata_url, timeout=10).json()
    assert metadata["authorization_servers"] == [deployment.idp.issuer]


async def test_an_opaque_token_reaches_the_tools(deployment: Deployment) -> None:
    idp, server = deployment.idp, deployment.server
    token = idp.access_token()
    assert "." not in token  # opaque: only introspection can tell what it is
    async with server.client(token) as client:
        identity = await client.call_tool("get_me", {})
        total = await client.call_tool("add_numbers", {"a": 2, "b": 3})
    assert not identity.is_error, identity.content
    me = identity.structured_content
    # The same fields a JWT from this IdP would give (sub = client id for client credentials).
    assert me["client_id"] == M2M_CLIENT[0]
    assert me["user_id"] == M2M_CLIENT[0]
    assert me["issuer"] == idp.issuer  # the answer's iss
    assert me["audience"] == [server.mcp_url]
    assert me["scopes"] == sorted(TOOL_SCOPES.split())
    assert me["token_type"] == "machine"
    assert not total.is_error, total.content
    assert "5" in str(total.structured_content or total.content)


def test_a_revoked_token_is_refused_within_the_cache_time(deployment: Deployment) -> None:
    idp, server = deployment.idp, deployment.server
    token = idp.access_token()
    assert call_tool(server, token, "get_me").status_code == 200  # now cached as active
    idp.revoke(token)
    revoked_at = time.monotonic()
    response = call_tool(server, token, "get_me")
    for _ in range(int(REVOCATION_BOUND / POLL_INTERVAL) + 1):
        if response.status_code != 200 or time.monotonic() - revoked_at > REVOCATION_BOUND:
            break
        time.sleep(POLL_INTERVAL)
        response = call_tool(server, token, "get_me")
    elapsed = time.monotonic() - revoked_at
    assert_invalid_token(response)
    assert elapsed <= REVOCATION_BOUND, f"a revoked token still passed {elapsed:.1f} s after revocation"
    # And it stays refused (the inactive answer is cached, the IdP asked again later says the same).
    time.sleep(CACHE_SECONDS + 0.5)
    assert_invalid_token(call_tool(server, token, "get_me"))


def introspections(idp: OidcProvider) -> int:
    return idp.requests("POST", "/token/introspection")


def test_a_token_for_another_resource_is_refused(deployment: Deployment) -> None:
    idp = deployment.idp
    token = idp.access_token(resource=OTHER_RESOURCE)
    assert idp.introspect(token)["active"] is True  # a good token, only not for this server
    before = introspections(idp)
    assert_invalid_token(call_tool(deployment.server, token, "get_me"))
    assert introspections(idp) == before + 1  # refused on the IdP's answer (its aud), not unseen


def test_scopes_gate_the_tools(deployment: Deployment) -> None:
    idp, server = deployment.idp, deployment.server
    reader = idp.access_token(scope="read:notes")
    assert call_tool(server, reader, "list_notes").status_code == 200
    for tool, arguments, scope in (
        ("add_numbers", {"a": 1, "b": 2}, "use:calculator"),
        ("create_note", {"title": "nope", "content": "x"}, "write:notes"),
    ):
        response = call_tool(server, reader, tool, arguments)
        assert response.status_code == 403, response.text
        challenge = response.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge
        assert f'scope="{scope}"' in challenge


def test_garbage_and_unknown_opaque_tokens_are_refused_by_the_idps_answer(deployment: Deployment) -> None:
    server, idp = deployment.server, deployment.idp
    for token in (uuid.uuid4().hex, "not-a-token-the-idp-issued"):
        before = introspections(idp)
        assert_invalid_token(call_tool(server, token, "get_me"))
        assert introspections(idp) == before + 1  # every non-JWT bearer token is introspected: the IdP decides


def test_the_token_and_the_client_secret_never_reach_the_logs(deployment: Deployment) -> None:
    idp, server = deployment.idp, deployment.server
    token = idp.access_token()
    call_tool(server, token, "get_me")
    idp.revoke(token)
    time.sleep(CACHE_SECONDS + 0.5)
    call_tool(server, token, "get_me")  # refused: the refusal log line explains without the token
    logs = server.stdout() + server.stderr()
    assert token not in logs
    assert RESOURCE_SERVER_CLIENT[1] not in logs

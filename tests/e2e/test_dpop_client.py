"""The project's DPoP client against `python server.py --dev` (JWTs, and DEV_TOKEN_FORMAT=opaque): a DPoP-bound
token from the dev issuer, tools called with a proof per request (`python -m client --dpop call get_me`), and the
same token refused as a Bearer token."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import httpx2
import jwt
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from client import DPoPAuth, DPoPKey, TokenManager
from tests.client.test_cli import run_cli
from tests.e2e.conftest import ServerLauncher, ServerProcess

pytestmark = pytest.mark.e2e

DEV_CLIENT = ("dev-client", "dev-secret")


@pytest.fixture(scope="module", params=["jwt", "opaque"])
def dev_server(module_launcher: ServerLauncher, request: pytest.FixtureRequest) -> ServerProcess:
    """`--dev` with JWTs, and with opaque tokens whose introspection answer carries cnf.jkt (RFC 9449 section 6.2)."""
    return module_launcher.start("--dev", env={"DEV_TOKEN_FORMAT": request.param})


def token_url(server: ServerProcess) -> str:
    return f"{server.base_url}/dev-issuer/token"


def bound_token(server: ServerProcess, key: DPoPKey) -> httpx.Response:
    url = token_url(server)
    return httpx.post(
        url, data={"grant_type": "client_credentials"}, auth=DEV_CLIENT, headers={"DPoP": key.proof("POST", url)}
    )


def test_the_dev_issuer_binds_the_token_to_the_proof_key(dev_server: ServerProcess) -> None:
    key = DPoPKey.generate()

    response = bound_token(dev_server, key)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    assert claims_of(dev_server, body["access_token"])["cnf"] == {"jkt": key.thumbprint}


def claims_of(server: ServerProcess, token: str) -> dict[str, object]:
    """A JWT's payload, or an opaque token's introspection answer (the dev issuer's own endpoint)."""
    if token.count(".") == 2:
        return jwt.decode(token, options={"verify_signature": False})
    answer = httpx.post(f"{server.base_url}/dev-issuer/introspect", data={"token": token}, auth=DEV_CLIENT).json()
    assert answer["active"] is True
    return answer


async def test_get_me_with_a_proof_per_request_and_the_token_refused_as_bearer(dev_server: ServerProcess) -> None:
    key = DPoPKey.generate()
    manager = TokenManager(*DEV_CLIENT, token_url=token_url(dev_server), dpop=key)

    async with (
        httpx2.AsyncClient(auth=DPoPAuth(manager), timeout=httpx2.Timeout(10, read=20)) as http,
        Client(streamable_http_client(dev_server.mcp_url, http_client=http)) as mcp,
    ):
        first = await mcp.call_tool("get_me", {})
        second = await mcp.call_tool("get_me", {})  # a second proof, a new jti: not a replay
    assert not first.is_error and not second.is_error
    assert first.structured_content is not None
    assert first.structured_content["client_id"] == "dev-client"

    refused = dev_server.post_mcp(await manager.get_token())  # the same bound token, as a Bearer token
    assert refused.status_code == 401
    assert "DPoP" in refused.headers["WWW-Authenticate"]


def test_the_cli_calls_get_me_with_dpop(dev_server: ServerProcess, tmp_path: Path) -> None:
    flags = ["--server-url", dev_server.mcp_url, "--token-url", token_url(dev_server)]

    result = run_cli("--dpop", *flags, "call", "get_me", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["client_id"] == "dev-client"

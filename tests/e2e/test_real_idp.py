"""Production mode (`python server.py`) against a third-party IdP served for real: discovery, rotation, refusals."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.conftest import LOOPBACK, FakeIdP, ServerLauncher, ServerProcess, free_port
from tests.support import Signer

pytestmark = pytest.mark.e2e

CLIENT_ID = "m2m-client"


@pytest.fixture(scope="module")
def key_a() -> Signer:
    return Signer(rsa.generate_private_key(public_exponent=65537, key_size=2048), f"a-{uuid.uuid4().hex[:8]}", "RS256")


@pytest.fixture(scope="module")
def key_b() -> Signer:
    return Signer(rsa.generate_private_key(public_exponent=65537, key_size=2048), f"b-{uuid.uuid4().hex[:8]}", "RS256")


@pytest.fixture(scope="module")
def resource_server(module_launcher: ServerLauncher, fake_idp: FakeIdP, key_a: Signer) -> ServerProcess:
    fake_idp.publish(key_a)
    port = free_port()
    return module_launcher.start(
        env={
            "OAUTH_ISSUER": fake_idp.issuer,
            "MCP_SERVER_URL": f"http://{LOOPBACK}:{port}/mcp",
            "OAUTH_JWKS_REFRESH_COOLDOWN_SECONDS": "0",
        },
        port=port,
        ready_path="/readyz",  # answers 200 only once discovery and the first JWKS fetch succeeded
    )


def machine_claims(idp: FakeIdP, server: ServerProcess, **overrides: Any) -> dict[str, Any]:
    """A client-credentials access token as Auth0 shapes it."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": idp.issuer,
        "sub": f"{CLIENT_ID}@clients",
        "aud": server.mcp_url,
        "azp": CLIENT_ID,
        "gty": "client-credentials",
        "scope": "notes:read",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return claims


def with_payload_changed(token: str, **changes: Any) -> str:
    """The same header and signature over a payload someone edited."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{edited}.{signature}"


async def get_me(server: ServerProcess, token: str, *, mode: str = "auto") -> dict[str, Any]:
    async with server.client(token, mode=mode) as client:
        result = await client.call_tool("get_me", {})
    assert not result.is_error, result.content
    return result.structured_content


def test_keys_are_found_through_discovery(resource_server: ServerProcess, fake_idp: FakeIdP) -> None:
    assert fake_idp.requests[fake_idp.discovery_path] >= 1
    assert fake_idp.jwks_fetches >= 1
    assert httpx.get(f"{resource_server.base_url}/readyz", timeout=10).status_code == 200

    metadata = httpx.get(resource_server.resource_metadata_url, timeout=10).json()
    assert metadata["resource"] == resource_server.mcp_url
    assert metadata["authorization_servers"] == [fake_idp.issuer]  # trailing slash kept, exactly


async def test_machine_token_is_accepted(resource_server: ServerProcess, fake_idp: FakeIdP, key_a: Signer) -> None:
    fake_idp.publish(key_a)
    token = key_a.sign(machine_claims(fake_idp, resource_server))
    identity = await get_me(resource_server, token)
    assert identity["user_id"] == f"{CLIENT_ID}@clients"
    assert identity["client_id"] == CLIENT_ID
    assert identity["issuer"] == fake_idp.issuer
    assert identity["audience"] == [resource_server.mcp_url]
    assert identity["scopes"] == ["notes:read"]
    assert identity["token_type"] == "machine"


async def test_rotated_key_is_accepted_without_a_restart(
    resource_server: ServerProcess, fake_idp: FakeIdP, key_a: Signer, key_b: Signer
) -> None:
    fake_idp.publish(key_a)
    token_a = key_a.sign(machine_claims(fake_idp, resource_server))
    assert (await get_me(resource_server, token_a))["user_id"] == f"{CLIENT_ID}@clients"
    pid, fetches = resource_server.process.pid, fake_idp.jwks_fetches

    fake_idp.publish(key_b)  # the IdP rotates: new kid, the old key withdrawn
    token_b = key_b.sign(machine_claims(fake_idp, resource_server))
    for mode in ("auto", "legacy"):
        assert (await get_me(resource_server, token_b, mode=mode))["user_id"] == f"{CLIENT_ID}@clients"
    assert fake_idp.jwks_fetches > fetches  # the unknown kid sent the server back to the JWKS
    assert resource_server.process.poll() is None
    assert resource_server.process.pid == pid

    withdrawn = resource_server.post_mcp(token_a)
    assert withdrawn.status_code == 401
    assert 'error="invalid_token"' in withdrawn.headers["www-authenticate"]


def hour_ago() -> dict[str, int]:
    now = int(time.time())
    return {"iat": now - 7200, "exp": now - 3600}


@pytest.mark.parametrize(
    ("changes", "description"),
    [
        pytest.param(lambda idp: {"aud": "https://other-api.example.com"}, "token audience is not accepted", id="aud"),
        pytest.param(lambda idp: hour_ago(), "token has expired", id="expired"),
        # Auth0's issuer ends with a slash; a token whose iss lacks it comes from another issuer.
        pytest.param(lambda idp: {"iss": idp.issuer.rstrip("/")}, "token issuer is not accepted", id="iss-no-slash"),
    ],
)
def test_bad_tokens_are_refused(
    resource_server: ServerProcess,
    fake_idp: FakeIdP,
    key_a: Signer,
    changes: Callable[[FakeIdP], dict[str, Any]],
    description: str,
) -> None:
    fake_idp.publish(key_a)
    assert resource_server.post_mcp(key_a.sign(machine_claims(fake_idp, resource_server))).status_code == 200

    token = key_a.sign(machine_claims(fake_idp, resource_server, **changes(fake_idp)))
    assert_refused(resource_server, token, description)


def test_tampered_token_is_refused(resource_server: ServerProcess, fake_idp: FakeIdP, key_a: Signer) -> None:
    fake_idp.publish(key_a)
    genuine = key_a.sign(machine_claims(fake_idp, resource_server))
    assert resource_server.post_mcp(genuine).status_code == 200

    token = with_payload_changed(genuine, sub="admin@clients", scope="notes:read notes:write")
    assert_refused(resource_server, token, "token signature is invalid")


def assert_refused(server: ServerProcess, token: str, description: str) -> None:
    response = server.post_mcp(token)
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge
    assert f'error_description="{description}"' in challenge
    assert f'resource_metadata="{server.resource_metadata_url}"' in challenge
    assert response.json()["error"] == "invalid_token"
    assert token.split(".")[2] not in server.stderr()

"""DEV_TOKEN_FORMAT=opaque: the dev issuer's opaque tokens, its introspection and revocation endpoints, and a
`--dev` server that introspects them at itself, end to end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from server import dev_settings
from settings import load_settings
from tests.auth.test_dev_issuer import ISSUER, PORT, basic, dev_client
from tests.support import parse_mcp_response
from tests.test_server_cli import call_get_me, running_server

DEV_CLIENT = ("dev-client", "dev-secret")


@pytest.fixture
def opaque_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("PORT", str(PORT))
    monkeypatch.setenv("DEV_TOKEN_FORMAT", "opaque")
    return monkeypatch


@pytest.fixture
def client(opaque_env: pytest.MonkeyPatch) -> Iterator[TestClient]:
    test_client, _, _ = dev_client(load_settings())
    with test_client:
        yield test_client


def issue(client: TestClient, **form: str) -> str:
    response = client.post("/dev-issuer/token", data={"grant_type": "client_credentials", **form}, headers=basic())
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def introspect(client: TestClient, token: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post("/dev-issuer/introspect", data={"token": token}, headers=basic() if headers is None else headers)


def test_dev_settings_introspect_at_the_dev_issuer(opaque_env):
    dev, issuer = dev_settings(load_settings())
    assert issuer.opaque
    assert dev.oauth_introspection_endpoint == f"{ISSUER}/introspect"
    assert dev.oauth_introspection_client_id == "dev-client"
    assert dev.introspection_enabled


def test_jwt_dev_tokens_turn_off_introspection_configured_for_production(monkeypatch):
    monkeypatch.setenv("OAUTH_INTROSPECTION_CLIENT_ID", "prod-client")
    monkeypatch.setenv("OAUTH_INTROSPECTION_CLIENT_SECRET", "prod-secret")
    monkeypatch.setenv("OAUTH_INTROSPECTION_ENDPOINT", "https://idp.example.com/introspect")
    dev, issuer = dev_settings(load_settings())
    assert not issuer.opaque and not dev.introspection_enabled
    assert dev.oauth_introspection_endpoint is None


def test_discovery_names_the_introspection_and_revocation_endpoints(client):
    document = client.get("/dev-issuer/.well-known/openid-configuration").json()
    assert document["introspection_endpoint"] == f"{ISSUER}/introspect"
    assert document["revocation_endpoint"] == f"{ISSUER}/revoke"


def test_an_opaque_token_is_introspected_then_revoked(client):
    token = issue(client, scope="read:notes")
    assert "." not in token and len(token) >= 40
    answer = introspect(client, token).json()
    assert answer["active"] is True
    assert answer["iss"] == ISSUER and answer["scope"] == "read:notes" and answer["token_type"] == "Bearer"
    assert client.post("/dev-issuer/revoke", data={"token": token}, headers=basic()).status_code == 200
    assert introspect(client, token).json() == {"active": False}
    assert introspect(client, "never-issued").json() == {"active": False}


def test_introspection_needs_the_dev_client(client):
    token = issue(client)
    response = introspect(client, token, headers=basic(secret="wrong"))
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert introspect(client, token, headers={}).status_code == 401
    posted = client.post(
        "/dev-issuer/introspect", data={"token": token, "client_id": "dev-client", "client_secret": "dev-secret"}
    )
    assert posted.json()["active"] is True


def test_get_me_with_an_opaque_dev_token_over_a_real_server(tmp_path: Path):
    """The server introspects at itself over loopback: token, tools, revocation within the cache time."""
    with running_server(
        "--dev", cwd=tmp_path, DEV_TOKEN_FORMAT="opaque", OAUTH_INTROSPECTION_CACHE_SECONDS="1"
    ) as server:
        issued = httpx.post(
            f"{server.base_url}/dev-issuer/token", data={"grant_type": "client_credentials"}, auth=DEV_CLIENT
        )
        token = issued.json()["access_token"]
        response = call_get_me(server.base_url, token)
        assert response.status_code == 200, response.text
        identity = parse_mcp_response(response)["result"]["structuredContent"]
        assert identity["issuer"] == f"{server.base_url}/dev-issuer"
        assert identity["client_id"] == "dev-client" and identity["token_type"] == "machine"
        assert call_get_me(server.base_url, "not-a-dev-token").status_code == 401

        revoked = httpx.post(f"{server.base_url}/dev-issuer/revoke", data={"token": token}, auth=DEV_CLIENT)
        assert revoked.status_code == 200
        deadline = time.monotonic() + 15
        while call_get_me(server.base_url, token).status_code == 200:
            assert time.monotonic() < deadline, "a revoked token is still accepted after the cache time"
            time.sleep(0.2)
        assert token not in server.stderr

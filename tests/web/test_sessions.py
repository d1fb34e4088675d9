"""Legacy-era sessions belong to the principal that opened them; stateless mode issues no session at all."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mcp.server.auth.middleware.auth_context import get_access_token
from starlette.testclient import TestClient

from tests.support import (
    BASE_URL,
    CLIENT_ID,
    FakeIdP,
    Signer,
    initialize_body,
    legacy_headers,
    make_settings,
    parse_mcp_response,
    rpc_body,
)
from web.app import build_app

INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def get_me_body(request_id: int = 2) -> dict[str, object]:
    return rpc_body("tools/call", {"name": "get_me", "arguments": {}}, request_id)


def open_session(client: TestClient, token: str) -> str:
    response = client.post("/mcp", json=initialize_body(), headers=legacy_headers(token))
    assert response.status_code == 200, response.text
    assert parse_mcp_response(response)["result"]["protocolVersion"] == "2025-11-25"
    session_id = response.headers["mcp-session-id"]
    ack = client.post("/mcp", json=INITIALIZED, headers=legacy_headers(token, session_id))
    assert ack.status_code == 202, ack.text
    return session_id


def call_in_session(client: TestClient, token: str, session_id: str, request_id: int = 2) -> int:
    response = client.post("/mcp", json=get_me_body(request_id), headers=legacy_headers(token, session_id))
    return response.status_code


@pytest.fixture
def stateful_client(idp: FakeIdP) -> Iterator[TestClient]:
    with TestClient(build_app(make_settings(mcp_stateless=False)), base_url=BASE_URL) as test_client:
        yield test_client


def test_session_owner_can_use_her_session(stateful_client, signer):
    token = signer.token(sub="alice")
    session_id = open_session(stateful_client, token)
    response = stateful_client.post("/mcp", json=get_me_body(), headers=legacy_headers(token, session_id))
    assert response.status_code == 200
    assert parse_mcp_response(response)["result"]["structuredContent"]["user_id"] == "alice"


def test_another_user_cannot_use_the_session(stateful_client, signer):
    session_id = open_session(stateful_client, signer.token(sub="alice"))
    response = stateful_client.post(
        "/mcp", json=get_me_body(), headers=legacy_headers(signer.token(sub="bob"), session_id)
    )
    assert response.status_code == 404
    assert parse_mcp_response(response)["error"]["message"] == "Session not found"
    assert "alice" not in response.text


def test_another_user_cannot_delete_the_session(stateful_client, signer):
    alice = signer.token(sub="alice")
    session_id = open_session(stateful_client, alice)
    response = stateful_client.delete("/mcp", headers=legacy_headers(signer.token(sub="bob"), session_id))
    assert response.status_code == 404
    assert call_in_session(stateful_client, alice, session_id) == 200


def test_owner_can_delete_her_session(stateful_client, signer):
    alice = signer.token(sub="alice")
    session_id = open_session(stateful_client, alice)
    assert stateful_client.delete("/mcp", headers=legacy_headers(alice, session_id)).status_code == 200
    assert call_in_session(stateful_client, alice, session_id) == 404


def test_reissued_token_for_the_same_principal_continues_the_session(stateful_client, signer):
    first = signer.token(sub="alice", jti="first")
    session_id = open_session(stateful_client, first)
    renewed = signer.token(sub="alice", jti="second", scope="openid other")
    assert renewed != first
    response = stateful_client.post("/mcp", json=get_me_body(), headers=legacy_headers(renewed, session_id))
    assert response.status_code == 200
    assert parse_mcp_response(response)["result"]["structuredContent"]["token_id"] == "second"


def test_same_subject_through_another_client_is_refused(stateful_client, signer):
    session_id = open_session(stateful_client, signer.token(sub="alice"))
    other_client = signer.token(sub="alice", azp="other-client")
    assert call_in_session(stateful_client, other_client, session_id) == 404


def test_session_needs_a_valid_token_even_with_a_known_id(stateful_client, signer):
    session_id = open_session(stateful_client, signer.token(sub="alice"))
    response = stateful_client.post("/mcp", json=get_me_body(), headers=legacy_headers(None, session_id))
    assert response.status_code == 401
    expired = signer.token(sub="alice", exp=1, iat=0)
    assert call_in_session(stateful_client, expired, session_id) == 401


def test_unknown_session_id_is_404(stateful_client, signer):
    assert call_in_session(stateful_client, signer.token(sub="alice"), "0" * 32) == 404


def test_stateless_mode_issues_no_session(client, signer):
    response = client.post("/mcp", json=initialize_body(), headers=legacy_headers(signer.token(sub="alice")))
    assert response.status_code == 200
    assert "mcp-session-id" not in response.headers
    assert parse_mcp_response(response)["result"]["serverInfo"]["name"]


def test_tool_sees_the_current_requests_token_inside_a_session(idp: FakeIdP, signer: Signer):
    app = build_app(make_settings(mcp_stateless=False))

    def token_id() -> str:
        access = get_access_token()
        assert access is not None
        return f"{access.subject}/{access.client_id}/{(access.claims or {}).get('jti')}"

    app.state.components.mcp.add_tool(token_id, name="token_id")
    body = rpc_body("tools/call", {"name": "token_id", "arguments": {}}, 2)
    with TestClient(app, base_url=BASE_URL) as client:
        session_id = open_session(client, signer.token(sub="alice", jti="opening"))
        for jti in ("later-1", "later-2"):
            response = client.post(
                "/mcp", json=body, headers=legacy_headers(signer.token(sub="alice", jti=jti), session_id)
            )
            assert response.status_code == 200, response.text
            assert parse_mcp_response(response)["result"]["structuredContent"] == {"result": f"alice/{CLIENT_ID}/{jti}"}

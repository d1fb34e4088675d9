"""The app answers get_me for a valid token and refuses a request without one."""

from tests.support import MCP_HEADERS, PRM_URL, bearer, legacy_headers, parse_mcp_response, rpc_body


def test_no_token_is_challenged(client):
    response = client.post("/mcp", json=rpc_body("tools/list"), headers=MCP_HEADERS)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == f'Bearer resource_metadata="{PRM_URL}"'


def test_get_me_with_valid_token(client, signer):
    token = signer.token()
    body = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
    response = client.post("/mcp", json=body, headers=legacy_headers(token))
    assert response.status_code == 200, response.text
    result = parse_mcp_response(response)["result"]
    assert result["structuredContent"]["user_id"] == "user-123"
    assert result["structuredContent"]["token_type"] == "user"
    assert token not in response.text
    assert bearer(token)

"""How /mcp reaches the SDK's streamable-HTTP app."""

from __future__ import annotations

from tests.support import BASE_URL, MCP_HEADERS, bearer, rpc_body


def test_the_sdk_still_answers_its_other_paths(client, signer):
    """The SDK's app stays mounted behind our routes: a call to /mcp works, and /mcp/ gets the same redirect as
    before."""
    body = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
    headers = {**MCP_HEADERS, **bearer(signer.token())}
    assert client.post("/mcp", json=body, headers=headers).status_code == 200
    response = client.post("/mcp/", json=body, headers=headers, follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == f"{BASE_URL}/mcp"

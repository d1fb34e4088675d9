"""How /mcp reaches the SDK: its streamable-HTTP endpoint directly, unless the SDK's app wraps it in something."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Route

from tests.support import BASE_URL, MCP_HEADERS, bearer, rpc_body
from web.app import MCP_PATH, build_app, mcp_endpoint


def test_the_mcp_path_is_served_by_the_sdk_endpoint_itself(idp, settings):
    app = build_app(settings)
    [route] = [route for route in app.routes if isinstance(route, Route) and route.path == MCP_PATH]
    assert isinstance(route.endpoint, StreamableHTTPASGIApp)


def test_an_sdk_app_with_middleware_of_its_own_is_kept_whole():
    sdk_app = MCPServer("t").streamable_http_app(streamable_http_path=MCP_PATH)
    assert isinstance(mcp_endpoint(sdk_app), StreamableHTTPASGIApp)
    sdk_app.add_middleware(GZipMiddleware)
    assert mcp_endpoint(sdk_app) is sdk_app


def test_an_sdk_app_with_its_endpoint_elsewhere_is_kept_whole():
    sdk_app = MCPServer("t").streamable_http_app(streamable_http_path="/elsewhere")
    assert mcp_endpoint(sdk_app) is sdk_app


def test_the_sdk_still_answers_its_other_paths(client, signer):
    """The SDK's app stays mounted behind our routes: a call to /mcp works, and /mcp/ gets the same redirect as
    before the endpoint was routed directly."""
    body = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
    headers = {**MCP_HEADERS, **bearer(signer.token())}
    assert client.post("/mcp", json=body, headers=headers).status_code == 200
    response = client.post("/mcp/", json=body, headers=headers, follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == f"{BASE_URL}/mcp"

"""MCP-layer re-check of tool scopes: runs inside the SDK, right before any tool, whatever the transport."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.types import CallToolResult, TextContent

from auth.request_auth import principal_of


class ToolScopeCheck(ServerMiddleware[Any]):
    """Refuses a tools/call when the verified caller lacks the tool's scopes (or there is no caller)."""

    def __init__(self, scopes_by_tool: Mapping[str, tuple[str, ...]]) -> None:
        self._scopes_by_tool = dict(scopes_by_tool)

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "tools/call" and ctx.params:
            name = ctx.params.get("name")
            needed = self._scopes_by_tool.get(name, ()) if isinstance(name, str) else ()
            principal = principal_of(getattr(ctx.request, "state", None))
            if needed and not (principal is not None and principal.has_scopes(needed)):
                message = f"insufficient scope: {name} needs {' '.join(needed)}"
                return CallToolResult(is_error=True, content=[TextContent(type="text", text=message)])
        return await call_next(ctx)

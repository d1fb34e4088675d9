"""MCP SDK middleware counting the tool calls that reach a tool, by tool and outcome (ok or tool_error).

Calls refused for lack of scope are counted where they are refused: the HTTP scope gate reports them
in `scope["state"]["refused_tools"]`, which the access-log middleware turns into `refused`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext

from web.metrics import Metrics


def is_error_result(result: HandlerResult) -> bool:
    if isinstance(result, Mapping):
        return bool(result.get("isError") or result.get("is_error"))
    return bool(getattr(result, "is_error", False))


class ToolCallMetrics(ServerMiddleware[Any]):
    """Registered inside ToolScopeCheck, so it sees only calls the scope check let through."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        name = ctx.params.get("name") if ctx.params else None
        outcome = "tool_error"
        try:
            result = await call_next(ctx)
            outcome = "tool_error" if is_error_result(result) else "ok"
            return result
        finally:
            self._metrics.observe_tool_call(name, outcome)

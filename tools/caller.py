"""How a tool learns who is calling: the Principal the auth middleware attached to the HTTP request."""

from __future__ import annotations

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from auth.principal import Principal


def current_principal(ctx: Context) -> Principal:
    request = ctx.request_context.request
    principal = getattr(getattr(request, "state", None), "principal", None)
    if not isinstance(principal, Principal):
        # Only reachable without the HTTP stack (stdio, in-process): there is no verified caller.
        raise ToolError("no authenticated caller")
    return principal

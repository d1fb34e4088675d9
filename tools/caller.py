"""How a tool learns who is calling: the Principal the auth middleware attached to the HTTP request."""

from __future__ import annotations

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from auth.principal import Principal
from auth.request_auth import principal_of


def current_principal(ctx: Context) -> Principal:
    request = ctx.request_context.request
    principal = principal_of(getattr(request, "state", None))
    if principal is None:
        # Only reachable without the HTTP stack (stdio, in-process): there is no verified caller.
        raise ToolError("no authenticated caller")
    return principal

"""Every tool and the scope it needs, declared once; builds the MCPServer that carries them."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mcp.server.context import ServerMiddleware
from mcp.server.mcpserver import MCPServer

from settings import Settings
from tools.calculator_tools import CALCULATOR_TOOLS
from tools.identity import get_me
from tools.notes_store import NotesStore
from tools.notes_tools import notes_tools
from tools.scope_check import ToolScopeCheck

INSTRUCTIONS = (
    "An OAuth-protected MCP server. get_me tells who you are according to your access token; "
    "notes tools keep private notes per caller; calculator tools do arithmetic. "
    "Each tool's description names the OAuth scope it needs."
)


@dataclass(frozen=True)
class ToolSpec:
    fn: Callable[..., Any]
    scope: str  # "" when the tool needs no scope

    @property
    def name(self) -> str:
        return self.fn.__name__

    @property
    def scopes(self) -> tuple[str, ...]:
        return (self.scope,) if self.scope else ()

    @property
    def description(self) -> str:
        doc = inspect.getdoc(self.fn) or self.name
        return f"{doc} Requires scope: {self.scope}." if self.scope else f"{doc} Requires no scope."


def tool_specs(settings: Settings, store: NotesStore) -> list[ToolSpec]:
    notes = notes_tools(store)
    read, write = settings.notes_read_scope, settings.notes_write_scope
    return [
        ToolSpec(get_me, ""),
        *(ToolSpec(tool, settings.calculator_scope) for tool in CALCULATOR_TOOLS),
        ToolSpec(notes["create_note"], write),
        ToolSpec(notes["read_note"], read),
        ToolSpec(notes["list_notes"], read),
        ToolSpec(notes["update_note"], write),
        ToolSpec(notes["delete_note"], write),
    ]


def scopes_by_tool(specs: list[ToolSpec]) -> dict[str, tuple[str, ...]]:
    return {spec.name: spec.scopes for spec in specs}


def tool_scopes(settings: Settings) -> list[str]:
    """Every scope some tool needs, for scopes_supported and the dev issuer's tokens."""
    groups = (settings.notes_read_scope, settings.notes_write_scope, settings.calculator_scope)
    return list(dict.fromkeys(scope for scope in groups if scope))


def build_mcp_server(
    settings: Settings, specs: list[ToolSpec], *, middleware: Sequence[ServerMiddleware[Any]] = ()
) -> MCPServer:
    """`middleware` (e.g. metrics) runs inside the scope re-check, right around the tools."""
    server = MCPServer(
        "oauth-resource-server",
        instructions=INSTRUCTIONS,
        log_level=settings.log_level,
        middleware=[ToolScopeCheck(scopes_by_tool(specs)), *middleware],
    )
    for spec in specs:
        server.add_tool(
            spec.fn,
            name=spec.name,
            description=spec.description,
            meta={"required_scopes": list(spec.scopes)},
            structured_output=True,
        )
    return server

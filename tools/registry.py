"""Builds the MCPServer with every tool; each tool's required scope is declared here, once."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from settings import Settings
from tools.identity import get_me

INSTRUCTIONS = "An OAuth-protected MCP server. get_me tells who you are according to your access token."


def build_mcp_server(settings: Settings) -> MCPServer:
    server = MCPServer("oauth-resource-server", instructions=INSTRUCTIONS, log_level=settings.log_level)
    server.add_tool(get_me, name="get_me", structured_output=True)
    return server


def tool_scopes(settings: Settings) -> list[str]:
    """Every scope some tool needs; advertised in scopes_supported."""
    return []

"""The MCP tools this server offers, and the MCPServer that carries them."""

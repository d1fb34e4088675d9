"""Target C: the SDK's plain MCPServer over streamable HTTP on uvicorn defaults, a sync add tool, no auth."""

from __future__ import annotations

import argparse

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("bench-reference")


@mcp.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    mcp.run("streamable-http", host="127.0.0.1", port=parser.parse_args().port)

"""End-to-end tests: the real `server.py` process under uvicorn on 127.0.0.1, driven by the official MCP client."""

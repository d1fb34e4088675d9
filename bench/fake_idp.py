"""A stand-in IdP for the benchmark: serves a JWKS document from a file and counts how often it is fetched."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

JWKS_PATH = "/jwks"
STATS_PATH = "/stats"


def build_idp(jwks: bytes) -> Starlette:
    fetches = 0

    async def serve_jwks(_: Request) -> Response:
        nonlocal fetches
        fetches += 1
        return Response(jwks, media_type="application/json", headers={"Cache-Control": "max-age=0"})

    async def stats(_: Request) -> Response:
        return JSONResponse({"jwks_fetches": fetches})

    return Starlette(routes=[Route(JWKS_PATH, serve_jwks), Route(STATS_PATH, stats)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwks", type=Path, required=True)
    args = parser.parse_args()
    app = build_idp(args.jwks.read_bytes())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)

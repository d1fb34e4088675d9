"""A stand-in IdP for the benchmark: serves a JWKS document from a file, answers token introspection (RFC 7662)
for the bench's opaque tokens, and counts both."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

JWKS_PATH = "/jwks"
INTROSPECTION_PATH = "/introspect"
STATS_PATH = "/stats"
OPAQUE_PREFIX = "bench-opaque-"  # the opaque tokens this IdP "issued": any other token is inactive


def introspection_answer(token: str, claims: dict[str, Any]) -> dict[str, Any]:
    """RFC 7662's answer: active with `claims` (the subject from the token) for a bench token, else inactive."""
    if not token.startswith(OPAQUE_PREFIX):
        return {"active": False}
    now = int(time.time())
    subject = token.removeprefix(OPAQUE_PREFIX).rsplit("-", 1)[0]  # "one-0": never the token itself
    return {**claims, "active": True, "sub": subject, "iat": now, "exp": now + 3600, "token_type": "Bearer"}


def build_idp(jwks: bytes, claims: dict[str, Any]) -> Starlette:
    counts = {"jwks_fetches": 0, "introspections": 0}

    async def serve_jwks(_: Request) -> Response:
        counts["jwks_fetches"] += 1
        return Response(jwks, media_type="application/json", headers={"Cache-Control": "max-age=0"})

    async def introspect(request: Request) -> Response:
        counts["introspections"] += 1
        form = await request.form()
        token = form.get("token")
        return JSONResponse(introspection_answer(token if isinstance(token, str) else "", claims))

    async def stats(_: Request) -> Response:
        return JSONResponse(counts)

    return Starlette(
        routes=[
            Route(JWKS_PATH, serve_jwks),
            Route(INTROSPECTION_PATH, introspect, methods=["POST"]),
            Route(STATS_PATH, stats),
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwks", type=Path, required=True)
    parser.add_argument("--claims", type=Path, help="JSON: iss, aud, scope, client_id of introspection's answers")
    args = parser.parse_args()
    app = build_idp(args.jwks.read_bytes(), json.loads(args.claims.read_text()) if args.claims else {})
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)

"""Liveness and readiness probes; both answer without a token."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from auth.jwks import JWKSCache
from tools.notes_store import NotesStore


def health_routes(keys: JWKSCache, store: NotesStore) -> list[Route]:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        if keys.ready:
            return JSONResponse({"status": "ready"})
        keys.prefetch()
        return JSONResponse(
            {"status": "not ready", "reason": "signing keys not fetched yet"},
            status_code=503,
        )

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]

"""Liveness and readiness probes; both answer without a token, whatever the Host, and quickly."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from auth.jwks_cache import JWKSCache
from tools.notes_store import NotesStore

# A probe must answer well within a kubelet's default 1 s timeout, even with the database stuck.
STORE_PING_TIMEOUT_SECONDS = 0.5
_NO_CACHE = {"Cache-Control": "no-store"}


async def store_answers(store: NotesStore, timeout: float = STORE_PING_TIMEOUT_SECONDS) -> bool:
    try:
        return await asyncio.wait_for(store.ping(), timeout)
    except TimeoutError:
        return False


def health_routes(keys: JWKSCache, store: NotesStore) -> list[Route]:
    async def healthz(_: Request) -> Response:
        # Liveness: the event loop answers. Never depends on the IdP or the database.
        return JSONResponse({"status": "ok"}, headers=_NO_CACHE)

    async def readyz(_: Request) -> Response:
        reasons = []
        if not keys.ready:
            keys.prefetch()
            reasons.append("signing keys not fetched yet")
        if not await store_answers(store):
            reasons.append("notes store unreachable")
        if not reasons:
            return JSONResponse({"status": "ready"}, headers=_NO_CACHE)
        return JSONResponse(
            {"status": "not ready", "reason": "; ".join(reasons)},
            status_code=503,
            headers=_NO_CACHE,
        )

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]

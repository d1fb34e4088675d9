"""Liveness and readiness probes; both answer without a token, whatever the Host, and quickly."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

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


def key_set_problem(key_sets: Mapping[str, JWKSCache]) -> str | None:
    """Why the key sets keep this server from being ready, or None. Ready once every issuer's keys were fetched
    once while at least one issuer's are usable: an issuer whose IdP is down later refuses its own tokens (503)
    without taking the others' traffic away. With one issuer: ready while its key set is usable."""
    unready = [issuer for issuer, keys in key_sets.items() if not keys.ready]
    for issuer in unready:
        key_sets[issuer].prefetch()
    never = [issuer for issuer in unready if key_sets[issuer].age is None]
    if not never and len(unready) < len(key_sets):
        return None
    names = never or unready
    return "signing keys not fetched yet" + (f" ({', '.join(names)})" if len(key_sets) > 1 else "")


def health_routes(key_sets: Mapping[str, JWKSCache], store: NotesStore) -> list[Route]:
    async def healthz(_: Request) -> Response:
        # Liveness: the event loop answers. Never depends on the IdP or the database.
        return JSONResponse({"status": "ok"}, headers=_NO_CACHE)

    async def readyz(_: Request) -> Response:
        reasons = []
        keys_problem = key_set_problem(key_sets)
        if keys_problem is not None:
            reasons.append(keys_problem)
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

"""GET /metrics: with METRICS_TOKEN set, a bearer token compared in constant time; without it, loopback only."""

from __future__ import annotations

import hmac

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from settings import is_loopback_host
from web.metrics import Metrics, exposition, metrics_registry

METRICS_PATH = "/metrics"
_FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def scrape_allowed_without_token(request: Request) -> bool:
    """A direct loopback peer only: anything a proxy forwarded (trusted or not) is refused."""
    client = request.client.host if request.client else ""
    return is_loopback_host(client) and not any(name in request.headers for name in _FORWARDING_HEADERS)


def bearer_matches(authorization: str | None, expected: bytes) -> bool:
    scheme, _, credential = (authorization or "").strip().partition(" ")
    # compare_digest on bytes: the time taken does not depend on where the strings differ.
    given = credential.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(given, expected)


def metrics_routes(metrics: Metrics, token: SecretStr | None) -> list[Route]:
    expected = token.get_secret_value().encode() if token is not None else None
    registry = metrics_registry(metrics)

    async def endpoint(request: Request) -> Response:
        if expected is not None:
            if not bearer_matches(request.headers.get("authorization"), expected):
                return JSONResponse(
                    {"error": "invalid_token", "error_description": "metrics need the METRICS_TOKEN bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        elif not scrape_allowed_without_token(request):
            return JSONResponse(
                {"error": "forbidden", "error_description": "set METRICS_TOKEN to scrape metrics from elsewhere"},
                status_code=403,
            )
        body, content_type = exposition(registry, request.headers.get("accept"))
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    return [Route(METRICS_PATH, endpoint, methods=["GET"])]

"""GET /metrics: with METRICS_TOKEN set, a bearer token compared in constant time; without it, loopback only."""

from __future__ import annotations

import hmac

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from auth.errors import Reason, Refusal
from auth.refusal import refusal_response
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
                refusal = Refusal(Reason.METRICS_TOKEN, status=401, error="invalid_token")
                return refusal_response(refusal, [(b"www-authenticate", b'Bearer realm="metrics"')])
        elif not scrape_allowed_without_token(request):
            return refusal_response(Refusal(Reason.METRICS_REMOTE, status=403, error="forbidden"))
        body, content_type = exposition(registry, request.headers.get("accept"))
        return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})

    return [Route(METRICS_PATH, endpoint, methods=["GET"])]

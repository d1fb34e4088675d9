"""The one way an HTTP refusal is answered: status, headers and `{"error": ..., "error_description": ...}`."""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.responses import Response
from starlette.types import Send

from auth.errors import Refusal

Header = tuple[bytes, bytes]


def refusal_body(refusal: Refusal) -> bytes:
    return json.dumps({"error": refusal.error or "unauthorized", "error_description": refusal.description}).encode()


def refusal_headers(body: bytes, extra: Iterable[Header] = ()) -> list[Header]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]


async def send_refusal(send: Send, refusal: Refusal, extra_headers: Iterable[Header] = ()) -> None:
    """The refusal, straight on the ASGI channel (for middleware)."""
    body = refusal_body(refusal)
    headers = refusal_headers(body, extra_headers)
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def refusal_response(refusal: Refusal, extra_headers: Iterable[Header] = ()) -> Response:
    """The same answer as a Starlette Response (for route handlers)."""
    body = refusal_body(refusal)
    response = Response(body, status_code=refusal.status)
    response.raw_headers = refusal_headers(body, extra_headers)
    return response

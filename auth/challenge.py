"""The one place an AuthError becomes an HTTP answer (RFC 6750 and the MCP authorization spec)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import Receive, Scope, Send

from auth.errors import AuthError, InsufficientScope, KeySetUnavailable, MissingToken

RETRY_AFTER_SECONDS = 10


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def www_authenticate(exc: AuthError, *, resource_metadata_url: str, scopes: Iterable[str]) -> str:
    params: list[tuple[str, str]] = []
    if not isinstance(exc, MissingToken):
        params += [("error", exc.error), ("error_description", exc.description)]
    scope = " ".join(exc.required if isinstance(exc, InsufficientScope) else scopes)
    params.append(("resource_metadata", resource_metadata_url))
    if scope:
        params.append(("scope", scope))
    return "Bearer " + ", ".join(f"{name}={_quoted(value)}" for name, value in params)


class ChallengeResponder:
    """Sends the status, `WWW-Authenticate` and a small JSON body for an AuthError."""

    def __init__(self, *, resource_metadata_url: str, scopes: Iterable[str], scope_prefix: str = "") -> None:
        self._resource_metadata_url = resource_metadata_url
        self._scopes = tuple(scopes)
        self._scope_prefix = scope_prefix  # scopes are named to clients as they must ask the IdP for them

    async def __call__(self, exc: AuthError, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["auth_outcome"] = exc.error or "missing"  # read by the access log
        payload = {"error": exc.error or "unauthorized", "error_description": exc.description}
        if isinstance(exc, KeySetUnavailable):
            header = (b"retry-after", str(RETRY_AFTER_SECONDS).encode())
        else:
            if isinstance(exc, InsufficientScope) and self._scope_prefix:
                exc = InsufficientScope(tuple(self._scope_prefix + scope for scope in exc.required))
            value = www_authenticate(exc, resource_metadata_url=self._resource_metadata_url, scopes=self._scopes)
            header = (b"www-authenticate", value.encode("latin-1", "replace"))
        await send_json(send, exc.status, payload, [header])


async def send_json(
    send: Send, status: int, payload: object, extra_headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A complete small JSON response, straight on the ASGI channel."""
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

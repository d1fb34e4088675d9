"""The one place an AuthError becomes an HTTP answer (RFC 6750 and the MCP authorization spec)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import Receive, Scope, Send

from auth.errors import AuthError, InsufficientScope, KeySetUnavailable, MissingToken

RETRY_AFTER_SECONDS = 10
MAX_PREPARED_ANSWERS = 256  # distinct (kind, description) pairs: our own fixed texts, so far fewer in practice


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
        # An answer depends only on the error's kind and description (never on the token): built once each.
        self._prepared: dict[tuple[type[AuthError], str], tuple[int, list[tuple[bytes, bytes]], bytes]] = {}

    async def __call__(self, exc: AuthError, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["auth_outcome"] = exc.error or "missing"  # read by the access log
        key = (type(exc), exc.description)
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepare(exc)
            if len(self._prepared) < MAX_PREPARED_ANSWERS:
                self._prepared[key] = prepared
        status, headers, body = prepared
        await send({"type": "http.response.start", "status": status, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body})

    def _prepare(self, exc: AuthError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        payload = {"error": exc.error or "unauthorized", "error_description": exc.description}
        if isinstance(exc, KeySetUnavailable):
            header = (b"retry-after", str(RETRY_AFTER_SECONDS).encode())
        else:
            if isinstance(exc, InsufficientScope) and self._scope_prefix:
                exc = InsufficientScope(tuple(self._scope_prefix + scope for scope in exc.required))
            value = www_authenticate(exc, resource_metadata_url=self._resource_metadata_url, scopes=self._scopes)
            header = (b"www-authenticate", value.encode("latin-1", "replace"))
        body = json.dumps(payload).encode()
        return exc.status, [*json_headers(body), header], body


def json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


async def send_json(
    send: Send, status: int, payload: object, extra_headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A complete small JSON response, straight on the ASGI channel."""
    body = json.dumps(payload).encode()
    headers = [*json_headers(body), *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""The RFC 6750 challenge for an AuthError (and the MCP authorization spec's resource_metadata)."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Send

from auth.errors import AuthError, InsufficientScope, MissingToken, TemporarilyUnavailable
from auth.refusal import Header, send_refusal

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
    """Answers an AuthError: its status, `WWW-Authenticate` (or `Retry-After`) and the one refusal body."""

    def __init__(self, *, resource_metadata_url: str, scopes: Iterable[str], scope_prefix: str = "") -> None:
        self._resource_metadata_url = resource_metadata_url
        self._scopes = tuple(scopes)
        self._scope_prefix = scope_prefix  # scopes are named to clients as they must ask the IdP for them

    def headers(self, exc: AuthError) -> list[Header]:
        if isinstance(exc, TemporarilyUnavailable):
            return [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
        if isinstance(exc, InsufficientScope) and self._scope_prefix:
            exc = InsufficientScope(tuple(self._scope_prefix + scope for scope in exc.required))
        value = www_authenticate(exc, resource_metadata_url=self._resource_metadata_url, scopes=self._scopes)
        return [(b"www-authenticate", value.encode("latin-1", "replace"))]

    async def __call__(self, exc: AuthError, send: Send) -> None:
        await send_refusal(send, exc, self.headers(exc))

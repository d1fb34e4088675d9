"""Pure ASGI middleware: verifies the bearer token of every protected request and attaches the caller."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Receive, Scope, Send

from auth.challenge import ChallengeResponder
from auth.errors import (
    AuthError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingToken,
)
from auth.principal import Principal
from auth.verifier import TokenVerifier

logger = logging.getLogger(__name__)

# A flood of bad tokens must not flood the log: every refusal still gets its access-log line and metrics count,
# but the explained `token refused` line is rate-limited.
REFUSAL_LOG_BURST = 20
REFUSAL_LOG_PER_SECOND = 5.0


# Accepted Authorization header values remembered with their verification (see RecentCallers).
RECENT_CALLERS = 1024


def authorization_value(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The raw value of the single `Authorization` header; the query string is never looked at."""
    value = None
    for name, raw in headers:
        # ASGI servers lower-case header names; the length test keeps the fallback off the common path.
        if name == b"authorization" or (len(name) == 13 and name.lower() == b"authorization"):
            if value is not None:
                raise InvalidRequest("more than one Authorization header")
            value = raw
    if value is None:
        raise MissingToken()
    return value


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The token of the single `Authorization: Bearer` header."""
    return token_of(authorization_value(headers))


def token_of(value: bytes) -> str:
    """The token in an Authorization header value, which must use the Bearer scheme."""
    scheme, _, token = value.decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer":
        raise MissingToken("bearer token required (other schemes are not accepted)")
    token = token.strip()
    if not token:
        raise InvalidToken("bearer token is empty")
    return token


def access_token_for(principal: Principal, token: str, resource: str) -> AccessToken:
    """The SDK's view of the caller: session ownership and get_access_token() read it."""
    return AccessToken.model_construct(
        token=token,
        client_id=principal.client_id or principal.subject,
        scopes=sorted(principal.scopes),
        expires_at=int(principal.expires_at.timestamp()),
        resource=resource,
        subject=principal.subject,
        claims=dict(principal.claims),
    )


class CallerViews:
    """The SDK's objects for a verified caller, built once per verification rather than once per request.

    Keyed by the Principal object the verifier returned: a remembered verification hands back that same
    object, a new verification a new one. So a view never outlives, nor crosses over to, the verification
    (and the token) it was built from; the `is` check makes that explicit. Bounded like the token cache.
    """

    def __init__(self, resource: str, max_entries: int) -> None:
        self._resource = resource
        self._max_entries = max_entries
        self._views: dict[int, tuple[Principal, AuthenticatedUser, AuthCredentials]] = {}

    def __len__(self) -> int:
        return len(self._views)

    def of(self, principal: Principal, token: str) -> tuple[AuthenticatedUser, AuthCredentials]:
        view = self._views.get(id(principal))
        if view is not None and view[0] is principal:
            return view[1], view[2]
        user = AuthenticatedUser(access_token_for(principal, token, self._resource))
        credentials = AuthCredentials(user.access_token.scopes)
        if self._max_entries > 0:
            # The entry holds the principal, so its id cannot be reused while the entry exists.
            self._views[id(principal)] = (principal, user, credentials)
            if len(self._views) > self._max_entries:
                del self._views[next(iter(self._views))]  # oldest first
        return user, credentials


@dataclass(frozen=True, slots=True)
class _Caller:
    token: str
    principal: Principal
    user: AuthenticatedUser
    credentials: AuthCredentials


class RecentCallers:
    """Authorization header values recently accepted, each with its verification: the token (the token cache's
    key) and Principal, and the SDK's objects built for it.

    A repeat caller then costs one dict lookup by the exact header bytes (which hold the whole token) instead of
    parsing the header. An entry is used only while the token cache still holds that same
    verification, checked on every use (TokenCache.still_accepted): so the token's `exp`, the removal of its key
    from the key set, the cache's own bounds and evictions all apply exactly as they do to the cache. Bounded,
    oldest first out; the SDK objects are shared with CallerViews, so an entry adds little beyond its key.
    """

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._callers: dict[bytes, _Caller] = {}

    def __len__(self) -> int:
        return len(self._callers)

    def get(self, value: bytes) -> _Caller | None:
        return self._callers.get(value)

    def remember(self, value: bytes, caller: _Caller) -> None:
        if self._max_entries <= 0:
            return
        self._callers[value] = caller
        if len(self._callers) > self._max_entries:
            del self._callers[next(iter(self._callers))]  # oldest first

    def forget(self, value: bytes) -> None:
        self._callers.pop(value, None)


class LogBudget:
    """A token bucket for log lines: `burst` at once, `per_second` on average, and a count of those left out."""

    def __init__(self, *, burst: int, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._burst = float(burst)
        self._per_second = per_second
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self.unlogged = 0

    def allow(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._per_second)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.unlogged += 1
        return False

    def note(self) -> str:
        """The suffix of the next line logged: how many were left out since the last one ("" when none)."""
        unlogged, self.unlogged = self.unlogged, 0
        return f" ({unlogged} more refusals not logged)" if unlogged else ""


class BearerAuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        verifier: TokenVerifier,
        *,
        responder: ChallengeResponder,
        resource: str,
        required_scopes: Iterable[str] = (),
        public_paths: Iterable[str] = (),
        public_prefixes: Iterable[str] = ("/.well-known/",),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.responder = responder
        self.resource = resource
        self.views = CallerViews(resource, verifier.cache.max_entries)
        self.recent = RecentCallers(min(RECENT_CALLERS, verifier.cache.max_entries))
        self.required_scopes = tuple(required_scopes)
        self.public_paths = frozenset(public_paths)
        self.public_prefixes = tuple(public_prefixes)
        self.refusal_log = LogBudget(burst=REFUSAL_LOG_BURST, per_second=REFUSAL_LOG_PER_SECOND)

    def _is_public(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if path in self.public_paths or path.startswith(self.public_prefixes):
            return True
        # CORS preflights carry no credentials by design.
        return scope["method"] == "OPTIONS" and any(
            name == b"access-control-request-method" for name, _ in scope["headers"]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_public(scope):
            if scope["type"] == "http":
                scope.setdefault("state", {})["auth_outcome"] = "not_required"
            await self.app(scope, receive, send)
            return
        token = ""
        try:
            value = authorization_value(scope["headers"])
            caller = self.recent.get(value)
            if caller is not None and self.verifier.cache.still_accepted(caller.token, caller.principal):
                principal, user, credentials = caller.principal, caller.user, caller.credentials
            else:
                if caller is not None:
                    self.recent.forget(value)
                token = token_of(value)
                checked = await self.verifier.check(token)
                if not isinstance(checked, Principal):
                    await self._refuse(checked, token, scope, receive, send)
                    return
                principal = checked
                if not principal.has_scopes(self.required_scopes):
                    raise InsufficientScope(self.required_scopes)
                user, credentials = self.views.of(principal, token)
                self.recent.remember(value, _Caller(token, principal, user, credentials))
        except AuthError as exc:
            await self._refuse(exc, token, scope, receive, send)
            return

        scope["user"] = user
        scope["auth"] = credentials
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state["auth_outcome"] = "ok"
        context = auth_context_var.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            auth_context_var.reset(context)

    async def _refuse(self, exc: AuthError, token: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a refusal, with its (rate-limited) log line; the token's own text is never logged."""
        if not isinstance(exc, MissingToken) and self.refusal_log.allow():
            unlogged = self.refusal_log.note()
            if isinstance(exc, InvalidToken) and token:
                explanation = self.verifier.explain(token, exc)
                logger.info("token refused: %s: %s%s", exc.description, explanation, unlogged)
            else:
                logger.info("request refused (%s): %s%s", exc.status, exc.detail, unlogged)
        await self.responder(exc, scope, receive, send)

"""Pure ASGI middleware: runs the pipeline for every protected request and attaches the caller.

credential (auth.credential) -> verification (auth.token_source: a JWT by auth.jwt_verifier: key set, signature,
typed claims, token rules; an opaque token by auth.introspection) -> Principal -> key binding (auth.binding: DPoP
proof, client certificate) -> required scopes.
The outcome is one RequestAuth in the scope.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth.binding import KeyBinding
from auth.challenge import ChallengeResponder
from auth.credential import Credential, presented_scheme, request_credential
from auth.errors import AuthError, InsufficientScope, InvalidToken, MissingToken
from auth.principal import Principal
from auth.request_auth import RequestAuth, set_request_auth
from auth.token_verifier import TokenVerifier

logger = logging.getLogger(__name__)

# A flood of bad tokens must not flood the log: every refusal still gets its access-log line and metrics count,
# but the explained `token refused` line is rate-limited.
REFUSAL_LOG_BURST = 20
REFUSAL_LOG_PER_SECOND = 5.0


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


def with_header(send: Send, name: bytes, value: bytes) -> Send:
    """`send` with one more header on the response start (a fresh DPoP nonce: clients need no 401 to renew it)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (name, value)]}
        await send(message)

    return sending


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

    def note(self, what: str = "refusals") -> str:
        """The suffix of the next line logged: how many were left out since the last one ("" when none)."""
        unlogged, self.unlogged = self.unlogged, 0
        return f" ({unlogged} more {what} not logged)" if unlogged else ""


class BearerAuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        verifier: TokenVerifier,
        *,
        responder: ChallengeResponder,
        resource: str,
        binding: KeyBinding | None = None,
        required_scopes: Iterable[str] = (),
        public_paths: Iterable[str] = (),
        public_prefixes: Iterable[str] = ("/.well-known/",),
        issuer_of: Callable[[str, Principal | None], str] | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        # The issuer label of each outcome, for the access log and metrics (web.app passes the router's).
        self.issuer_of = issuer_of
        self.responder = responder
        self.resource = resource
        self.binding = binding or KeyBinding()  # default: Bearer only (OAUTH_DPOP=off)
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
                set_request_auth(scope, RequestAuth("not_required"))
            await self.app(scope, receive, send)
            return
        credential: Credential | None = None
        try:
            credential = request_credential(scope["headers"])
            self.binding.admit(credential)
            principal = await self.verifier.verify(credential.token)
            binding = await self.binding.check(principal, credential, scope)
            if not principal.has_scopes(self.required_scopes):
                raise InsufficientScope(self.required_scopes)
        except AuthError as exc:
            await self._refuse(exc, credential, scope, send)
            return

        user = AuthenticatedUser(access_token_for(principal, credential.token, self.resource))
        scope["user"] = user
        scope["auth"] = AuthCredentials(user.access_token.scopes)
        issuer = self._issuer_label(credential.token, principal)
        set_request_auth(scope, RequestAuth("ok", principal, issuer=issuer, binding=binding))
        if binding == "dpop" and self.binding.nonces is not None:
            send = with_header(send, b"dpop-nonce", self.binding.nonces.issue().encode())  # RFC 9449 section 8.2
        context = auth_context_var.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            auth_context_var.reset(context)

    def _issuer_label(self, token: str, principal: Principal | None) -> str | None:
        return self.issuer_of(token, principal) if self.issuer_of is not None else None

    async def _refuse(self, exc: AuthError, credential: Credential | None, scope: Scope, send: Send) -> None:
        """Answer a refusal, with its (rate-limited) log line; the token's (and proof's) text is never logged."""
        token = credential.token if credential is not None else ""
        if not isinstance(exc, MissingToken) and self.refusal_log.allow():
            unlogged = self.refusal_log.note()
            if isinstance(exc, InvalidToken) and token:
                explanation = self.verifier.explain(token, exc)
                said = exc.description if explanation == exc.description else f"{exc.description}: {explanation}"
                logger.info("token refused: %s%s", said, unlogged)
            else:
                logger.info("request refused (%s): %s%s", exc.status, exc.detail, unlogged)
        scheme = credential.scheme if credential is not None else presented_scheme(scope["headers"])
        issuer = self._issuer_label(token, None)
        set_request_auth(scope, RequestAuth(exc.error or "missing", issuer=issuer, binding=scheme))
        await self.responder(exc, send, scheme)

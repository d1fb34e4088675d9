"""Pure ASGI middleware: verifies the bearer token of every protected request and attaches the caller."""

from __future__ import annotations

import logging
from collections.abc import Iterable

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


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The token of the single `Authorization: Bearer` header; the query string is never looked at."""
    values = [value for name, value in headers if name.lower() == b"authorization"]
    if not values:
        raise MissingToken()
    if len(values) > 1:
        raise InvalidRequest("more than one Authorization header")
    scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
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
        self.required_scopes = tuple(required_scopes)
        self.public_paths = frozenset(public_paths)
        self.public_prefixes = tuple(public_prefixes)

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
            token = bearer_token(scope["headers"])
            principal = await self.verifier.verify(token)
            if not principal.has_scopes(self.required_scopes):
                raise InsufficientScope(self.required_scopes)
        except AuthError as exc:
            if isinstance(exc, InvalidToken) and token:
                logger.info("token refused: %s: %s", exc.description, self.verifier.explain(token, exc))
            elif not isinstance(exc, MissingToken):
                logger.info("request refused (%s): %s", exc.status, exc.detail)
            await self.responder(exc, scope, receive, send)
            return

        user = AuthenticatedUser(access_token_for(principal, token, self.resource))
        scope["user"] = user
        scope["auth"] = AuthCredentials(sorted(principal.scopes))
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state["auth_outcome"] = "ok"
        context = auth_context_var.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            auth_context_var.reset(context)

"""Target B: this server's stack with the bearer middleware and scope gate left out. Benchmark only.

A fixed principal is attached to every request instead, so tools run as they do for a verified caller.
Configured by the same environment as `python server.py`; never reachable from the production entry point.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from auth.middleware import BearerAuthMiddleware, access_token_for
from auth.principal import Principal
from auth.request_auth import RequestAuth, set_request_auth
from auth.scope_gate import ScopeGate
from server import GracefulServer, uvicorn_config
from settings import Settings, load_settings
from web.app import build_app, scopes_supported
from web.log_format import configure_logging


class FixedPrincipal:
    """Attaches the same, prebuilt caller to every HTTP request, where BearerAuthMiddleware would verify one."""

    def __init__(self, app: ASGIApp, *, principal: Principal, resource: str) -> None:
        self.app = app
        self.principal = principal
        self.user = AuthenticatedUser(access_token_for(principal, "bench-no-token", resource))
        self.credentials = AuthCredentials(sorted(principal.scopes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["user"] = self.user
        scope["auth"] = self.credentials
        set_request_auth(scope, RequestAuth("ok", self.principal))
        context = auth_context_var.set(self.user)
        try:
            await self.app(scope, receive, send)
        finally:
            auth_context_var.reset(context)


def bench_principal(settings: Settings) -> Principal:
    claims = {"iss": settings.oauth_issuer, "sub": "bench", "azp": "bench-client", "aud": settings.mcp_server_url}
    return Principal(
        subject="bench",
        client_id="bench-client",
        issuer=settings.oauth_issuer,
        audience=(settings.mcp_server_url,),
        scopes=frozenset(scopes_supported(settings)),
        expires_at=datetime.now(UTC) + timedelta(days=1),
        claims=claims,
    )


def without_auth(app: Starlette, settings: Settings) -> Starlette:
    """The same app, the bearer middleware replaced by FixedPrincipal and the scope gate removed."""
    stack: list[Middleware] = []
    for middleware in app.user_middleware:
        if middleware.cls is BearerAuthMiddleware:
            principal = bench_principal(settings)
            stack.append(Middleware(FixedPrincipal, principal=principal, resource=settings.mcp_server_url))
        elif middleware.cls is not ScopeGate:
            stack.append(middleware)
    app.user_middleware = stack
    return app


def main() -> int:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, settings.log_flush_seconds)
    app = without_auth(build_app(settings), settings)
    AppStatus.disable_automatic_graceful_drain()
    GracefulServer(uvicorn_config(app, settings)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Target B: `python server.py` as in production, its auth layers run for the first caller only. Benchmark only.

The app's middleware whose classes come from the `auth` package (found by module, not by name) are wrapped in
AuthOnce: requests go through them until one carrying an `Authorization` header passes them all. What they
attached to that request (scope entries such as `user` and `auth`, `scope["state"]` entries, context variables
such as the SDK's current access token) is recorded, and every later request gets the same, without running
them. So tools run as for that verified caller, and B knows nothing of how a caller is represented.
Started by `bench.run` with the same environment as A; never reachable from the production entry point.
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

import server

AUTH_PACKAGE = "auth"


def is_auth_layer(middleware: Middleware) -> bool:
    module = getattr(middleware.cls, "__module__", "") or ""
    return module == AUTH_PACKAGE or module.startswith(AUTH_PACKAGE + ".")


@dataclass(frozen=True)
class Snapshot:
    """A request's scope, scope state and context variables at one moment, or what changed between two."""

    scope: dict[str, Any]
    state: dict[str, Any]
    context: dict[contextvars.ContextVar[Any], Any]

    @classmethod
    def of(cls, scope: Scope) -> Snapshot:
        state = scope.get("state")
        return cls(dict(scope), dict(state) if isinstance(state, Mapping) else {}, dict(contextvars.copy_context()))

    def since(self, before: Snapshot) -> Snapshot:
        """What the auth layers attached between `before` and this snapshot, for one request that passed them."""
        scope = changed(before.scope, self.scope)
        scope.pop("state", None)  # its entries are taken one by one below
        context = changed(before.context, self.context)
        context.pop(_BEFORE, None)
        return Snapshot(scope, changed(before.state, self.state), context)


_BEFORE: contextvars.ContextVar[Snapshot] = contextvars.ContextVar("bench_noauth_before")


def changed(before: Mapping[Any, Any], after: Mapping[Any, Any]) -> dict[Any, Any]:
    """Entries of `after` that are new or hold another object than in `before`."""
    return {key: value for key, value in after.items() if key not in before or before[key] is not value}


class _Recorder:
    """Innermost of the wrapped auth layers: a request that reaches it has passed them all."""

    def __init__(self, app: ASGIApp, owner: AuthOnce) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        before = _BEFORE.get(None)
        if self.owner.attached is None and before is not None and scope["type"] == "http":
            self.owner.attached = Snapshot.of(scope).since(before)
        await self.app(scope, receive, send)


def _carries_credentials(scope: Scope) -> bool:
    return any(name.lower() == b"authorization" for name, _ in scope.get("headers", ()))


class AuthOnce:
    """The auth layers for requests until one with credentials passes them; their attachments replayed after."""

    def __init__(self, app: ASGIApp, *, layers: list[Middleware]) -> None:
        self.app = app
        self.attached: Snapshot | None = None
        wrapped: ASGIApp = _Recorder(app, self)
        for cls, args, kwargs in reversed(layers):
            wrapped = cls(wrapped, *args, **kwargs)
        self.layers = wrapped

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        attached = self.attached
        if scope["type"] != "http" or attached is None:
            marker = (
                _BEFORE.set(Snapshot.of(scope)) if scope["type"] == "http" and _carries_credentials(scope) else None
            )
            try:
                await self.layers(scope, receive, send)
            finally:
                if marker is not None:
                    _BEFORE.reset(marker)
            return
        scope.update(attached.scope)
        scope.setdefault("state", {}).update(attached.state)
        markers = [(variable, variable.set(value)) for variable, value in attached.context.items()]
        try:
            await self.app(scope, receive, send)
        finally:
            for variable, marker in reversed(markers):
                variable.reset(marker)


def without_auth(app: Starlette) -> Starlette:
    """`app` with its auth-package middleware wrapped in AuthOnce. RuntimeError if there are none, or if other
    middleware sit between them (AuthOnce would skip those too)."""
    stack = list(app.user_middleware)
    found = [index for index, middleware in enumerate(stack) if is_auth_layer(middleware)]
    if not found:
        raise RuntimeError(f"no middleware from the {AUTH_PACKAGE!r} package in the app: nothing to leave out")
    first, last = found[0], found[-1]
    if found != list(range(first, last + 1)):
        others = [middleware.cls.__qualname__ for middleware in stack[first:last] if not is_auth_layer(middleware)]
        raise RuntimeError(f"middleware between the auth layers would be left out with them: {', '.join(others)}")
    layers = stack[first : last + 1]
    app.user_middleware = [*stack[:first], Middleware(AuthOnce, layers=layers), *stack[last + 1 :]]
    names = ", ".join(f"{m.cls.__module__}.{m.cls.__qualname__}" for m in layers)
    print(f"bench B: run for the first caller only: {names}", file=sys.stderr)
    return app


def main() -> int:
    """`python server.py`, production mode, with `server.build_app`'s app passed through without_auth."""
    build_app = server.build_app

    def build_app_without_auth(*args: Any, **kwargs: Any) -> Starlette:
        return without_auth(build_app(*args, **kwargs))

    server.build_app = build_app_without_auth
    return server.main([])


if __name__ == "__main__":
    sys.exit(main())

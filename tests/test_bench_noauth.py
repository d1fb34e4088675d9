"""bench.noauth_server (target B): the auth layers run until one caller passes them, then what they attached is
replayed without them; found by the module they come from, on a made-up app and on the real one."""

from __future__ import annotations

import contextvars
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from bench.noauth_server import is_auth_layer, without_auth
from tests.support import BASE_URL, FakeIdP, Signer, bearer, make_settings, rpc_body
from web.app import build_app

CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller", default=None)


class Gate:
    """A stand-in bearer layer: 401 unless `Bearer good`; attaches a caller three ways; counts its calls."""

    calls = 0

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        type(self).calls += 1
        if (b"authorization", b"Bearer good") not in scope["headers"]:
            await Response(status_code=401)(scope, receive, send)
            return
        scope["user"] = "alice"
        scope.setdefault("state", {})["caller"] = "alice"
        marker = CALLER.set("alice")
        try:
            await self.app(scope, receive, send)
        finally:
            CALLER.reset(marker)


class Tagger:
    """A layer of another package: must keep running."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["tagged"] = True
        await self.app(scope, receive, send)


Gate.__module__ = "auth.gate"
Tagger.__module__ = "web.tagger"


async def whoami(request: Request) -> Response:
    return JSONResponse(
        {
            "user": request.scope.get("user"),
            "state": getattr(request.state, "caller", None),
            "context": CALLER.get(),
            "tagged": getattr(request.state, "tagged", False),
        }
    )


def app_with(*layers: type) -> Starlette:
    return Starlette(routes=[Route("/", whoami)], middleware=[Middleware(layer) for layer in layers])


def test_auth_layers_are_found_by_their_module_not_their_name():
    assert is_auth_layer(Middleware(Gate))
    assert not is_auth_layer(Middleware(Tagger))
    Renamed = type("Authenticator", (), {"__module__": "authx.middleware"})
    assert not is_auth_layer(Middleware(Renamed))


def test_the_first_caller_passes_the_real_layers_and_later_requests_get_what_they_attached():
    Gate.calls = 0
    with TestClient(without_auth(app_with(Tagger, Gate))) as client:
        assert client.get("/").status_code == 401  # no credentials: nothing recorded
        assert client.get("/", headers={"Authorization": "Bearer bad"}).status_code == 401
        first = client.get("/", headers={"Authorization": "Bearer good"})
        assert Gate.calls == 3
        later = [client.get("/") for _ in range(3)]
    expected = {"user": "alice", "state": "alice", "context": "alice", "tagged": True}
    assert first.json() == expected
    assert [response.json() for response in later] == [expected] * 3
    assert Gate.calls == 3  # not run again
    assert CALLER.get() is None  # replayed context variables are reset after each request


def test_an_app_without_auth_layers_is_refused():
    with pytest.raises(RuntimeError, match="no middleware from the 'auth' package"):
        without_auth(app_with(Tagger))


def test_another_layer_between_auth_layers_is_refused_rather_than_skipped():
    class Second(Gate):
        pass

    Second.__module__ = "auth.scope"
    with pytest.raises(RuntimeError, match="Tagger"):
        without_auth(app_with(Gate, Tagger, Second))


def call(client: TestClient, headers: dict[str, str], request_id: int) -> dict[str, Any]:
    body = rpc_body("tools/call", {"name": "add_numbers", "arguments": {"a": request_id, "b": 0.5}}, request_id)
    protocol = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    response = client.post("/mcp", json=body, headers={**protocol, **headers})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_real_app_serves_tool_calls_without_credentials_after_one_verified_caller(idp: FakeIdP, signer: Signer):
    app = without_auth(build_app(make_settings()))
    with TestClient(app, base_url=BASE_URL) as client:
        for request_id, headers in enumerate(
            [bearer(signer.token(scope="use:calculator")), {}, bearer("not-a-token")], start=1
        ):
            answer = call(client, headers, request_id)
            assert answer["result"]["structuredContent"] == {"result": request_id + 0.5}

"""A tool call's SDK objects are freed by reference counting when it ends, not left for the cyclic collector."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import pytest
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner
from starlette.testclient import TestClient

from tests.support import (
    BASE_URL,
    MCP_HEADERS,
    bearer,
    cyclic_garbage,
    legacy_headers,
    parse_mcp_response,
    rpc_body,
)
from web.app import build_app
from web.sdk_cycles import break_runner_cycles, uncached_handlers

MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def sdk_objects(objects: list[object]) -> list[str]:
    return [type(obj).__name__ for obj in objects if isinstance(obj, ServerRunner | Connection)]


def modern_call(client: TestClient, token: str, request_id: int) -> dict:
    params = {"name": "add_numbers", "arguments": {"a": 1, "b": 2}, "_meta": MODERN_META}
    headers = {
        **MCP_HEADERS,
        **bearer(token),
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "add_numbers",
    }
    response = client.post("/mcp", json=rpc_body("tools/call", params, request_id), headers=headers)
    assert response.status_code == 200, response.text
    return parse_mcp_response(response)


def legacy_call(client: TestClient, token: str, request_id: int) -> dict:
    body = rpc_body("tools/call", {"name": "add_numbers", "arguments": {"a": 1, "b": 2}}, request_id)
    response = client.post("/mcp", json=body, headers=legacy_headers(token))
    assert response.status_code == 200, response.text
    return parse_mcp_response(response)


@pytest.mark.parametrize("call", [modern_call, legacy_call], ids=["2026-07-28", "2025-11-25 stateless"])
def test_a_tool_call_leaves_no_sdk_objects_in_cycles(idp, signer, settings, call: Callable[..., dict]):
    token = signer.token(scope="use:calculator")
    with TestClient(build_app(settings), base_url=BASE_URL) as client:
        call(client, token, 1)  # lazy imports and first-use caches out of the way
        with cyclic_garbage() as garbage:
            answers = [call(client, token, request_id) for request_id in range(2, 7)]
    assert all(answer["result"]["isError"] is False for answer in answers), answers
    assert sdk_objects(garbage) == []


def test_the_handlers_stay_bound_methods_of_their_runner():
    break_runner_cycles()
    assert isinstance(ServerRunner.__dict__["on_request"], property)
    assert isinstance(ServerRunner.__dict__["on_notify"], property)
    assert break_runner_cycles() == []  # already applied: nothing more to change


class _Runner:
    """The SDK's pattern: a cached property holding a bound method of its own instance."""

    @cached_property
    def on_request(self) -> Callable[[], str]:
        return self._on_request

    def _on_request(self) -> str:
        return f"handled by {id(self)}"


def test_a_cached_bound_method_is_a_cycle_and_the_property_is_not():
    class Cached(_Runner):
        pass

    with cyclic_garbage() as before:
        runner = Cached()
        assert runner.on_request() == f"handled by {id(runner)}"
        del runner
    assert any(isinstance(obj, Cached) for obj in before)  # what the test above would catch

    class Uncached(_Runner):
        on_request = _Runner.__dict__["on_request"]

    assert uncached_handlers(Uncached, {"on_request": "_on_request"}) == ["on_request"]
    with cyclic_garbage() as after:
        runner = Uncached()
        assert runner.on_request == runner._on_request
        assert runner.on_request() == f"handled by {id(runner)}"
        del runner
    assert not any(isinstance(obj, Uncached) for obj in after)


def test_only_cached_properties_of_existing_methods_are_replaced():
    class Plain:
        on_request = property(lambda self: self._on_request)
        on_notify = cached_property(lambda self: None)

        def _on_request(self) -> None: ...

    plain_property = Plain.__dict__["on_request"]
    assert uncached_handlers(Plain, {"on_request": "_on_request", "on_notify": "_on_notify"}) == []
    assert Plain.__dict__["on_request"] is plain_property
    assert isinstance(Plain.__dict__["on_notify"], cached_property)  # no `_on_notify` to bind: left alone

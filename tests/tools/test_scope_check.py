"""The MCP-layer scope re-check (ToolScopeCheck) on its own: in-process, with no HTTP gate in front."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult

from auth.principal import Principal
from auth.request_auth import RequestAuth
from tests.support import CLIENT_ID, ISSUER, SERVER_URL, make_settings
from tools.notes_store_sqlite import SQLiteNotesStore
from tools.registry import build_mcp_server, scopes_by_tool, tool_specs
from tools.scope_check import ToolScopeCheck

READ, WRITE, CALC = "read:notes", "write:notes", "use:calculator"
SCOPES = {"create_note": (WRITE,), "read_note": (READ,), "add_numbers": (CALC,), "get_me": ()}


def principal_with(*scopes: str) -> Principal:
    return Principal(
        subject="user-123",
        client_id=CLIENT_ID,
        issuer=ISSUER,
        audience=(SERVER_URL,),
        scopes=frozenset(scopes),
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )


@dataclass
class FakeContext:
    """The parts of ServerRequestContext that ToolScopeCheck reads."""

    method: str
    params: Mapping[str, Any] | None
    request: Any = None


@dataclass
class Downstream:
    calls: list[FakeContext] = field(default_factory=list)

    async def __call__(self, ctx: FakeContext) -> dict[str, Any]:
        self.calls.append(ctx)
        return {"reached": True}


def http_request(principal: object) -> SimpleNamespace:
    """A request whose state carries `principal` as authentication's one result (anything else: as it is)."""
    return SimpleNamespace(
        state=SimpleNamespace(auth=RequestAuth("ok", principal) if isinstance(principal, Principal) else principal)
    )


def refusal_text(result: object) -> str:
    assert isinstance(result, CallToolResult)
    assert result.is_error
    return result.content[0].text


def mcp_server(**overrides: Any) -> MCPServer:
    settings = make_settings(notes_db_path=":memory:", **overrides)
    # Never opened: the re-check answers before any notes tool touches the store.
    return build_mcp_server(settings, tool_specs(settings, SQLiteNotesStore(":memory:")))


# --- in-process client: the SDK runs the middleware, there is no HTTP request and so no caller ----


@pytest.mark.parametrize(
    ("tool", "arguments", "scope"),
    [
        ("create_note", {"title": "t", "content": "c"}, WRITE),
        ("update_note", {"note_id": "n-1", "title": "t"}, WRITE),
        ("delete_note", {"note_id": "n-1"}, WRITE),
        ("read_note", {"note_id": "n-1"}, READ),
        ("list_notes", {}, READ),
        ("add_numbers", {"a": 1.0, "b": 2.0}, CALC),
        ("calculate_sum", {"numbers": [1.0]}, CALC),
    ],
)
async def test_in_process_scoped_tool_is_refused_naming_its_scope(tool, arguments, scope):
    async with Client(mcp_server()) as client:
        result = await client.call_tool(tool, arguments)
    assert result.is_error
    assert result.content[0].text == f"insufficient scope: {tool} needs {scope}"


async def test_in_process_get_me_passes_the_check_but_has_no_caller():
    async with Client(mcp_server()) as client:
        result = await client.call_tool("get_me", {})
    assert result.is_error
    assert "no authenticated caller" in result.content[0].text
    assert "insufficient scope" not in result.content[0].text


async def test_in_process_tool_whose_scope_is_configured_away_reaches_the_tool():
    async with Client(mcp_server(notes_write_scope="")) as client:
        created = await client.call_tool("create_note", {"title": "t", "content": "c"})
        read = await client.call_tool("read_note", {"note_id": "n-1"})
    assert "no authenticated caller" in created.content[0].text
    assert read.content[0].text == f"insufficient scope: read_note needs {READ}"


async def test_in_process_listing_is_not_filtered():
    async with Client(mcp_server()) as client:
        tools = (await client.list_tools()).tools
    assert len(tools) == 11


def test_registry_scopes_are_what_the_check_gets():
    settings = make_settings(notes_db_path=":memory:")
    scopes = scopes_by_tool(tool_specs(settings, SQLiteNotesStore(":memory:")))
    assert scopes["create_note"] == (WRITE,)
    assert scopes["list_notes"] == (READ,)
    assert scopes["divide_numbers"] == (CALC,)
    assert scopes["get_me"] == ()


# --- ToolScopeCheck with a hand-built request context ------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "scopes"),
    [
        ("create_note", (WRITE,)),
        ("create_note", (READ, WRITE, CALC, "openid")),
        ("read_note", (READ,)),
        ("add_numbers", (CALC,)),
        ("get_me", ()),
    ],
)
async def test_caller_with_the_scope_reaches_the_tool(tool, scopes):
    downstream = Downstream()
    ctx = FakeContext("tools/call", {"name": tool, "arguments": {}}, http_request(principal_with(*scopes)))
    assert await ToolScopeCheck(SCOPES)(ctx, downstream) == {"reached": True}
    assert downstream.calls == [ctx]


@pytest.mark.parametrize(
    ("tool", "scopes", "needed"),
    [
        ("create_note", (), WRITE),
        ("create_note", (READ, CALC), WRITE),
        ("create_note", ("write:note", "WRITE:NOTES"), WRITE),
        ("read_note", (WRITE,), READ),
        ("add_numbers", (READ, WRITE), CALC),
    ],
)
async def test_caller_without_the_scope_is_refused(tool, scopes, needed):
    downstream = Downstream()
    ctx = FakeContext("tools/call", {"name": tool}, http_request(principal_with(*scopes)))
    result = await ToolScopeCheck(SCOPES)(ctx, downstream)
    assert refusal_text(result) == f"insufficient scope: {tool} needs {needed}"
    assert downstream.calls == []


async def test_every_scope_of_a_multi_scope_tool_is_needed():
    check = ToolScopeCheck({"sync_notes": (READ, WRITE)})
    downstream = Downstream()
    refused = FakeContext("tools/call", {"name": "sync_notes"}, http_request(principal_with(READ)))
    assert refusal_text(await check(refused, downstream)) == f"insufficient scope: sync_notes needs {READ} {WRITE}"
    allowed = FakeContext("tools/call", {"name": "sync_notes"}, http_request(principal_with(WRITE, READ)))
    assert await check(allowed, downstream) == {"reached": True}


@pytest.mark.parametrize(
    "request_",
    [
        None,
        SimpleNamespace(),
        SimpleNamespace(state=SimpleNamespace()),
        http_request(None),
        http_request({"scopes": [WRITE]}),
        http_request(SimpleNamespace(scopes=frozenset({WRITE}), has_scopes=lambda _: True)),
    ],
    ids=["no-request", "no-state", "no-principal", "principal-none", "dict", "look-alike"],
)
async def test_no_verified_principal_means_no_scoped_tool(request_):
    downstream = Downstream()
    ctx = FakeContext("tools/call", {"name": "create_note"}, request_)
    assert (
        refusal_text(await ToolScopeCheck(SCOPES)(ctx, downstream)) == f"insufficient scope: create_note needs {WRITE}"
    )
    assert downstream.calls == []


@pytest.mark.parametrize(
    "ctx",
    [
        FakeContext("tools/list", None),
        FakeContext("tools/list", {"name": "create_note"}),
        FakeContext("resources/read", {"uri": "create_note"}),
        FakeContext("tools/call", None),
        FakeContext("tools/call", {"name": "unknown_tool"}),
        FakeContext("tools/call", {"name": ["create_note"]}),
        FakeContext("tools/call", {"name": "get_me"}),
    ],
    ids=["list", "list-with-name", "other-method", "no-params", "unknown-tool", "name-not-str", "unscoped"],
)
async def test_what_needs_no_scope_passes_without_a_caller(ctx):
    downstream = Downstream()
    assert await ToolScopeCheck(SCOPES)(ctx, downstream) == {"reached": True}
    assert downstream.calls == [ctx]


async def test_check_keeps_its_own_copy_of_the_table():
    table = {"create_note": (WRITE,)}
    check = ToolScopeCheck(table)
    table["create_note"] = ()
    ctx = FakeContext("tools/call", {"name": "create_note"}, http_request(principal_with()))
    assert refusal_text(await check(ctx, Downstream())).endswith(WRITE)

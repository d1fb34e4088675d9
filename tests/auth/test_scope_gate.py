"""The HTTP scope gate: each tool's scope is enforced with a 403 challenge before the SDK runs the tool."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth.challenge import ChallengeResponder
from auth.principal import Principal
from auth.request_auth import RequestAuth
from auth.scope_gate import HEADER_MISMATCH, ScopeGate, fast_pass
from tests.support import (
    BASE_URL,
    CLIENT_ID,
    ISSUER,
    MCP_HEADERS,
    MODERN_META,
    PRM_URL,
    SERVER_URL,
    Signer,
    bearer,
    legacy_headers,
    make_settings,
    parse_mcp_response,
    rpc_body,
)
from web.app import build_app

READ, WRITE, CALC = "read:notes", "write:notes", "use:calculator"
GROUP_SCOPES = (READ, WRITE, CALC)
MODERN_VERSION = "2026-07-28"
NOTE_ID = "<note id>"  # replaced by the id of a freshly created note

TOOL_SCOPES = {
    "get_me": "",
    "add_numbers": CALC,
    "subtract_numbers": CALC,
    "multiply_numbers": CALC,
    "divide_numbers": CALC,
    "calculate_sum": CALC,
    "create_note": WRITE,
    "read_note": READ,
    "list_notes": READ,
    "update_note": WRITE,
    "delete_note": WRITE,
}
TOOL_ARGUMENTS: dict[str, dict[str, Any]] = {
    "get_me": {},
    "add_numbers": {"a": 6.0, "b": 3.0},
    "subtract_numbers": {"a": 6.0, "b": 3.0},
    "multiply_numbers": {"a": 6.0, "b": 3.0},
    "divide_numbers": {"a": 6.0, "b": 3.0},
    "calculate_sum": {"numbers": [1.0, 2.0, 3.0]},
    "create_note": {"title": "groceries", "content": "milk"},
    "read_note": {"note_id": NOTE_ID},
    "list_notes": {},
    "update_note": {"note_id": NOTE_ID, "title": "groceries (2)"},
    "delete_note": {"note_id": NOTE_ID},
}
SCOPED_TOOLS = [name for name, scope in TOOL_SCOPES.items() if scope]
CREATE_NOTE = {"name": "create_note", "arguments": TOOL_ARGUMENTS["create_note"]}


def insufficient_scope_challenge(scope: str) -> str:
    return (
        f'Bearer error="insufficient_scope", error_description="required scope: {scope}", '
        f'resource_metadata="{PRM_URL}", scope="{scope}"'
    )


def assert_insufficient_scope(response: Any, scope: str) -> None:
    assert response.status_code == 403, response.text
    assert response.headers.get_list("www-authenticate")[0] == insufficient_scope_challenge(scope)
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "insufficient_scope", "error_description": f"required scope: {scope}"}


def assert_header_mismatch(response: Any, request_id: int) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    message = response.json()
    assert message["jsonrpc"] == "2.0"
    assert message["id"] == request_id
    assert message["error"]["code"] == HEADER_MISMATCH == -32020


def call_tool(
    client: TestClient, name: str, arguments: dict[str, Any], token: str, **extra_headers: str
) -> dict[str, Any]:
    """A legacy tools/call that must reach the tool; its result."""
    body = rpc_body("tools/call", {"name": name, "arguments": arguments})
    response = client.post("/mcp", json=body, headers={**legacy_headers(token), **extra_headers})
    assert response.status_code == 200, response.text
    return parse_mcp_response(response)["result"]


def create_note(client: TestClient, signer: Signer) -> str:
    result = call_tool(client, "create_note", TOOL_ARGUMENTS["create_note"], signer.token(scope=WRITE))
    assert not result["isError"], result
    return result["structuredContent"]["id"]


def note_count(client: TestClient, signer: Signer) -> int:
    result = call_tool(client, "list_notes", {}, signer.token(scope=READ))
    assert not result["isError"], result
    return len(result["structuredContent"]["notes"])


def modern_request(
    method: str, params: dict[str, Any], token: str, *, request_id: int = 2
) -> tuple[dict[str, str], dict[str, Any]]:
    """Headers and body of a 2026-07-28 request, as the SDK client builds them (see the capture test)."""
    headers = {**MCP_HEADERS, **bearer(token), "MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": method}
    if method == "tools/call":
        headers["Mcp-Name"] = params["name"]
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": MODERN_META}}
    return headers, body


def era_request(
    era: str, method: str, params: dict[str, Any], token: str, *, request_id: int = 2
) -> tuple[dict[str, str], dict[str, Any]]:
    if era == "modern":
        return modern_request(method, params, token, request_id=request_id)
    return legacy_headers(token), rpc_body(method, params, request_id)


def sentinel(value: str) -> str:
    return f"=?base64?{base64.b64encode(value.encode()).decode()}?="


@contextlib.contextmanager
def running_app(**overrides: Any) -> Iterator[TestClient]:
    with TestClient(build_app(make_settings(**overrides)), base_url=BASE_URL) as test_client:
        yield test_client


@contextlib.asynccontextmanager
async def sdk_client(
    token: str,
    mode: str,
    *,
    requests: list[httpx2.Request] | None = None,
    responses: list[httpx2.Response] | None = None,
) -> AsyncIterator[tuple[Client, httpx2.AsyncClient]]:
    """The official SDK client over the real app in-process; records what went over HTTP."""
    app = build_app(make_settings())

    async def on_request(request: httpx2.Request) -> None:
        if requests is not None:
            await request.aread()
            requests.append(request)

    async def on_response(response: httpx2.Response) -> None:
        if responses is not None:
            await response.aread()
            responses.append(response)

    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app),
            headers=bearer(token),
            event_hooks={"request": [on_request], "response": [on_response]},
        ) as http_client,
        Client(streamable_http_client(SERVER_URL, http_client=http_client), mode=mode) as mcp_client,
    ):
        yield mcp_client, http_client


# --- each scope group, legacy era -----------------------------------------------------------------


@pytest.mark.parametrize("tool", SCOPED_TOOLS)
def test_tool_without_its_scope_is_403_with_the_exact_challenge(client, signer, tool):
    needed = TOOL_SCOPES[tool]
    others = " ".join(scope for scope in GROUP_SCOPES if scope != needed)
    arguments = {**TOOL_ARGUMENTS[tool], **({"note_id": "n-1"} if "note_id" in TOOL_ARGUMENTS[tool] else {})}
    body = rpc_body("tools/call", {"name": tool, "arguments": arguments})
    response = client.post("/mcp", json=body, headers=legacy_headers(signer.token(scope=f"openid profile {others}")))
    assert_insufficient_scope(response, needed)


@pytest.mark.parametrize("tool", list(TOOL_SCOPES))
def test_tool_with_exactly_its_scope_runs(client, signer, tool):
    note_id = create_note(client, signer)
    arguments = {name: note_id if value == NOTE_ID else value for name, value in TOOL_ARGUMENTS[tool].items()}
    result = call_tool(client, tool, arguments, signer.token(scope=TOOL_SCOPES[tool]))
    assert not result["isError"], result
    assert result["structuredContent"]


def test_get_me_needs_no_scope_at_all(client, signer):
    result = call_tool(client, "get_me", {}, signer.token(drop=("scope",)))
    assert result["structuredContent"]["scopes"] == []


def test_refused_write_changes_nothing(client, signer):
    note_id = create_note(client, signer)
    reader = signer.token(scope=f"{READ} {CALC}")
    for tool, arguments in [
        ("create_note", TOOL_ARGUMENTS["create_note"]),
        ("update_note", {"note_id": note_id, "title": "hijacked"}),
        ("delete_note", {"note_id": note_id}),
    ]:
        body = rpc_body("tools/call", {"name": tool, "arguments": arguments})
        assert_insufficient_scope(client.post("/mcp", json=body, headers=legacy_headers(reader)), WRITE)
    note = call_tool(client, "read_note", {"note_id": note_id}, reader)["structuredContent"]
    assert note["title"] == TOOL_ARGUMENTS["create_note"]["title"]
    assert note_count(client, signer) == 1


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": None, "scp": [WRITE]},
        {"scope": None, "scp": f"openid {WRITE}"},
        {"scope": None, "permissions": [WRITE]},
        {"scope": None, "roles": [WRITE]},
        {"scope": "openid", "scp": ["profile"], "permissions": [WRITE]},
        {"scope": f"openid {WRITE} profile"},
    ],
    ids=["scp-list", "scp-string", "permissions", "roles", "mixed", "scope-string"],
)
def test_scopes_from_any_claim_dialect_open_the_gate(client, signer, claims):
    result = call_tool(client, "create_note", TOOL_ARGUMENTS["create_note"], signer.token(**claims))
    assert not result["isError"], result


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": None, "scp": [READ, CALC]},
        {"scope": None, "permissions": ["write:note", "write:notes:all", "WRITE:NOTES"]},
        {"scope": "write:notes:extra write"},
    ],
    ids=["other-scopes", "near-misses", "prefixes"],
)
def test_near_miss_scopes_do_not_open_the_gate(client, signer, claims):
    body = rpc_body("tools/call", CREATE_NOTE)
    assert_insufficient_scope(client.post("/mcp", json=body, headers=legacy_headers(signer.token(**claims))), WRITE)


# --- the official SDK client, both eras ------------------------------------------------------------


@pytest.mark.parametrize(("mode", "version"), [("auto", MODERN_VERSION), ("legacy", "2025-11-25")])
async def test_sdk_client_without_the_scope_gets_an_error_from_the_403(idp, signer, mode, version):
    responses: list[httpx2.Response] = []
    async with sdk_client(signer.token(scope=f"{READ} {WRITE}"), mode, responses=responses) as (mcp_client, _):
        with pytest.raises(MCPError) as raised:
            await mcp_client.call_tool("add_numbers", TOOL_ARGUMENTS["add_numbers"])
        assert mcp_client.protocol_version == version
    # A 403 without a JSON-RPC body reaches the caller only as a generic error; the HTTP answer was the challenge.
    assert raised.value.code == -32603
    assert raised.value.message == "Server returned an error response"
    refused = responses[-1]
    assert refused.status_code == 403
    assert refused.headers.get_list("www-authenticate")[0] == insufficient_scope_challenge(CALC)


@pytest.mark.parametrize(("mode", "version"), [("auto", MODERN_VERSION), ("legacy", "2025-11-25")])
async def test_sdk_client_with_the_scope_runs_the_tool(idp, signer, mode, version):
    async with sdk_client(signer.token(scope=f"{CALC} {WRITE}"), mode) as (mcp_client, _):
        total = await mcp_client.call_tool("add_numbers", TOOL_ARGUMENTS["add_numbers"])
        note = await mcp_client.call_tool("create_note", TOOL_ARGUMENTS["create_note"])
        assert mcp_client.protocol_version == version
    assert not total.is_error
    assert total.structured_content == {"result": 9.0}
    assert not note.is_error
    assert note.structured_content["title"] == "groceries"


async def test_modern_request_from_the_sdk_is_replayed_with_disagreeing_headers(idp, signer):
    requests: list[httpx2.Request] = []
    async with sdk_client(signer.token(scope=READ), "auto", requests=requests) as (mcp_client, http_client):
        with pytest.raises(MCPError):
            await mcp_client.call_tool("create_note", TOOL_ARGUMENTS["create_note"])
        captured = requests[-1]
        assert captured.headers["mcp-protocol-version"] == MODERN_VERSION
        assert captured.headers["mcp-method"] == "tools/call"
        assert captured.headers["mcp-name"] == "create_note"
        sent = json.loads(captured.content)
        expected_headers, expected_body = modern_request("tools/call", CREATE_NOTE, "unused", request_id=sent["id"])
        assert sent == expected_body  # the hand-built modern requests below are what the SDK sends
        assert {k.lower(): v for k, v in expected_headers.items() if k.lower().startswith("mcp")} == {
            k: v for k, v in captured.headers.items() if k.startswith("mcp")
        }

        routing = {name: captured.headers[name] for name in ("accept", "content-type", "mcp-protocol-version")}

        async def replay(**headers: str) -> httpx2.Response:
            all_headers = {**routing, "mcp-method": "tools/call", "mcp-name": "create_note", **headers}
            return await http_client.post(SERVER_URL, content=captured.content, headers=all_headers)

        assert_insufficient_scope(await replay(), WRITE)
        assert_header_mismatch(await replay(**{"mcp-name": "get_me"}), sent["id"])
        assert_header_mismatch(await replay(**{"mcp-method": "tools/list"}), sent["id"])
        assert_insufficient_scope(await replay(**{"mcp-name": sentinel("create_note")}), WRITE)


# --- Mcp-Method / Mcp-Name headers that disagree with the body ---------------------------------------


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_mcp_name_of_an_unscoped_tool_cannot_smuggle_a_scoped_call(client, signer, era):
    headers, body = era_request(era, "tools/call", CREATE_NOTE, signer.token(scope=READ), request_id=7)
    response = client.post("/mcp", json=body, headers={**headers, "Mcp-Name": "get_me"})
    assert_header_mismatch(response, 7)
    assert note_count(client, signer) == 0


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_mismatch_is_refused_even_with_the_scope(client, signer, era):
    headers, body = era_request(era, "tools/call", CREATE_NOTE, signer.token(scope=WRITE))
    assert_header_mismatch(client.post("/mcp", json=body, headers={**headers, "Mcp-Name": "read_note"}), 2)
    assert note_count(client, signer) == 0


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_mcp_method_that_disagrees_with_the_body_is_400(client, signer, era):
    headers, body = era_request(era, "tools/call", {"name": "get_me", "arguments": {}}, signer.token(), request_id=3)
    response = client.post("/mcp", json=body, headers={**headers, "Mcp-Method": "tools/list"})
    assert_header_mismatch(response, 3)


@pytest.mark.parametrize("era", ["legacy", "modern"])
@pytest.mark.parametrize(
    "name", ["GET_ME", "get_me ", sentinel("create_note"), "=?base64?not base64?=", "=?base64?Z2V0X21l=?="]
)
def test_mcp_name_must_match_exactly(client, signer, era, name):
    headers, body = era_request(era, "tools/call", {"name": "get_me", "arguments": {}}, signer.token())
    assert_header_mismatch(client.post("/mcp", json=body, headers={**headers, "Mcp-Name": name}), 2)


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_base64_sentinel_that_matches_is_accepted(client, signer, era):
    token = signer.token(scope=WRITE)
    headers, body = era_request(era, "tools/call", {"name": "get_me", "arguments": {}}, token)
    response = client.post("/mcp", json=body, headers={**headers, "Mcp-Name": sentinel("get_me")})
    assert response.status_code == 200, response.text
    assert parse_mcp_response(response)["result"]["structuredContent"]["user_id"] == "user-123"
    headers, body = era_request(era, "tools/call", CREATE_NOTE, token)
    response = client.post("/mcp", json=body, headers={**headers, "Mcp-Name": sentinel("create_note")})
    assert response.status_code == 200, response.text
    assert not parse_mcp_response(response)["result"]["isError"]


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_matching_headers_behave_normally(client, signer, era):
    headers, body = era_request(era, "tools/call", CREATE_NOTE, signer.token(scope=READ))
    headers = {**headers, "Mcp-Method": "tools/call", "Mcp-Name": "create_note"}
    assert_insufficient_scope(client.post("/mcp", json=body, headers=headers), WRITE)
    headers, body = era_request(era, "tools/call", CREATE_NOTE, signer.token(scope=WRITE))
    headers = {**headers, "Mcp-Method": "tools/call", "Mcp-Name": "create_note"}
    response = client.post("/mcp", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert parse_mcp_response(response)["result"]["structuredContent"]["title"] == "groceries"


def test_modern_request_without_mcp_name_still_needs_the_scope(client, signer):
    headers, body = modern_request("tools/call", CREATE_NOTE, signer.token(scope=READ))
    del headers["Mcp-Name"]
    assert_insufficient_scope(client.post("/mcp", json=body, headers=headers), WRITE)


# --- a caller holding every scope: the gate leaves the body to the SDK, the headers are still checked -----

EVERY_SCOPE = " ".join(GROUP_SCOPES)
DISAGREEING_HEADERS = [
    {"Mcp-Name": "get_me"},
    {"Mcp-Name": "GET_ME"},
    {"Mcp-Name": sentinel("read_note")},
    {"Mcp-Method": "tools/list"},
    {"Mcp-Method": "tools/list", "Mcp-Name": "create_note"},
]


@pytest.mark.parametrize("era", ["legacy", "modern"])
@pytest.mark.parametrize("extra", DISAGREEING_HEADERS, ids=lambda extra: "+".join(f"{k}={v}" for k, v in extra.items()))
def test_disagreeing_headers_are_400_for_a_caller_with_every_scope(client, signer, era, extra):
    headers, body = era_request(era, "tools/call", CREATE_NOTE, signer.token(scope=EVERY_SCOPE), request_id=9)
    assert_header_mismatch(client.post("/mcp", json=body, headers={**headers, **extra}), 9)
    assert note_count(client, signer) == 0


def test_duplicated_mcp_name_is_400_for_a_caller_with_every_scope(client, signer):
    headers, body = modern_request("tools/call", CREATE_NOTE, signer.token(scope=EVERY_SCOPE), request_id=4)
    raw = [(name, value) for name, value in headers.items() if name != "Mcp-Name"]
    raw += [("Mcp-Name", "create_note"), ("Mcp-Name", "get_me")]
    response = client.post("/mcp", content=json.dumps(body), headers=httpx2.Headers(raw))
    assert_header_mismatch(response, 4)
    assert note_count(client, signer) == 0


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_caller_with_every_scope_runs_any_tool(client, signer, era):
    headers, body = era_request(era, "tools/call", CREATE_NOTE, signer.token(scope=EVERY_SCOPE))
    response = client.post("/mcp", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert parse_mcp_response(response)["result"]["structuredContent"]["title"] == "groceries"


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_body_over_the_limit_is_our_413_for_a_caller_with_every_scope(idp, signer, era):
    with running_app(mcp_max_body_bytes=2048) as client:
        big = {"name": "create_note", "arguments": {"title": "t", "content": "x" * 3000}}
        headers, body = era_request(era, "tools/call", big, signer.token(scope=EVERY_SCOPE))
        response = client.post("/mcp", json=body, headers=headers)
        assert response.status_code == 413
        assert response.json() == {"error": "request_too_large", "error_description": "request body too large"}


def raw_headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in values.items()]


@pytest.mark.parametrize(
    ("headers", "passes"),
    [
        (raw_headers(content_length="300"), True),  # legacy, no routing header: nothing to check
        (raw_headers(content_length="300", mcp_protocol_version=MODERN_VERSION, mcp_name="x", mcp_method="y"), True),
        (raw_headers(content_length="300", mcp_protocol_version="2099-01-01", mcp_method="y"), True),  # SDK: modern
        (raw_headers(content_length="300", mcp_name="x"), False),  # legacy with a routing header: ours to check
        (raw_headers(content_length="300", mcp_protocol_version="2025-11-25", mcp_method="y"), False),
        (raw_headers(content_length="300", mcp_protocol_version="2025-03-26", mcp_name="x"), False),
        # the SDK routes on the first version header; so does the gate
        (
            [
                *raw_headers(mcp_protocol_version="2025-11-25", mcp_name="x"),
                (b"mcp-protocol-version", b"2026-07-28"),
                *raw_headers(content_length="1"),
            ],
            False,
        ),
        (raw_headers(mcp_protocol_version=MODERN_VERSION), False),  # no length: read it here, bounded
        (raw_headers(content_length="4097"), False),  # over the limit: our 413
        (raw_headers(content_length="4096"), True),
        (raw_headers(content_length="-1"), False),
        (raw_headers(content_length="1e3"), False),
        (raw_headers(content_length="9" * 40), False),
        ([*raw_headers(content_length="3"), *raw_headers(content_length="3")], False),
    ],
)
def test_fast_pass_only_when_nothing_is_left_to_check(headers, passes):
    assert fast_pass(headers, 4096) is passes


async def test_a_caller_with_every_scope_gets_the_original_receive_on_the_modern_path():
    downstream, sent = Downstream(), Sent()
    headers = raw_headers(
        content_length=str(len(CREATE_RAW)), mcp_protocol_version=MODERN_VERSION, mcp_method="tools/call"
    )
    receive = ChunkedReceive([CREATE_RAW])
    await make_gate(downstream)(http_scope(principal_with(WRITE), headers=headers), receive, sent)
    assert downstream.receives == [receive]
    assert downstream.bodies == [CREATE_RAW]
    # the same request from a caller without the scope is read and refused here
    downstream, sent = Downstream(), Sent()
    await make_gate(downstream)(http_scope(principal_with(READ), headers=headers), ChunkedReceive([CREATE_RAW]), sent)
    assert downstream.bodies == []
    assert sent.status == 403


# --- odd bodies ----------------------------------------------------------------------------------


def test_batch_with_a_scoped_call_is_403_naming_every_missing_scope(client, signer):
    batch = [
        rpc_body("tools/list", request_id=1),
        rpc_body("tools/call", {"name": "get_me", "arguments": {}}, request_id=2),
        rpc_body("tools/call", CREATE_NOTE, request_id=3),
        rpc_body("tools/call", {"name": "add_numbers", "arguments": {"a": 1.0, "b": 2.0}}, request_id=4),
    ]
    token = signer.token(scope=READ)
    assert_insufficient_scope(client.post("/mcp", json=batch, headers=legacy_headers(token)), f"{WRITE} {CALC}")
    response = client.post("/mcp", json=batch[:3], headers=legacy_headers(signer.token(scope=CALC)))
    assert_insufficient_scope(response, WRITE)
    assert note_count(client, signer) == 0


def test_batch_with_every_scope_passes_the_gate(client, signer):
    batch = [rpc_body("tools/list", request_id=1), rpc_body("tools/call", CREATE_NOTE, request_id=2)]
    response = client.post("/mcp", json=batch, headers=legacy_headers(signer.token(scope=WRITE)))
    assert response.status_code not in (403, 413)
    assert response.status_code < 500


def test_body_that_is_not_json_is_answered_by_the_sdk(client, signer):
    response = client.post("/mcp", content=b"{not json", headers=legacy_headers(signer.token()))
    assert response.status_code == 400
    assert parse_mcp_response(response)["error"]["code"] == -32700


@pytest.mark.parametrize(
    "raw", [b'"tools/call"', b"42", b"null", b"true", b"[]", b"[1, 2]", b'{"method": "tools/call", "params": []}']
)
def test_json_that_is_not_a_request_object_is_no_500(client, signer, raw):
    response = client.post("/mcp", content=raw, headers=legacy_headers(signer.token()))
    assert 400 <= response.status_code < 500
    assert response.status_code != 403
    assert "error" in response.json()


def test_odd_body_that_still_names_a_scoped_tool_is_refused(client, signer):
    # Whatever else is wrong with it, the body names create_note: no scope, no pass to the SDK.
    raw = b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_\\u006eote"}}'
    assert_insufficient_scope(client.post("/mcp", content=raw, headers=legacy_headers(signer.token())), WRITE)


def test_duplicate_name_keys_are_judged_as_the_sdk_reads_them(client, signer):
    token = signer.token(scope=READ)
    raw = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_me","name":"create_note","arguments":{}}}'
    )
    assert_insufficient_scope(client.post("/mcp", content=raw, headers=legacy_headers(token)), WRITE)
    raw = (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_note","name":"get_me","arguments":{}}}'
    )
    response = client.post("/mcp", content=raw, headers=legacy_headers(token))
    assert response.status_code == 200
    assert parse_mcp_response(response)["result"]["structuredContent"]["user_id"] == "user-123"


@pytest.mark.parametrize("trick", ["9" * 5000, "[" * 5000 + "]" * 5000], ids=["huge-number", "deep-nesting"])
def test_json_too_odd_for_the_gate_never_runs_the_tool(client, signer, trick):
    # What json.loads cannot read is no way past the gate: the SDK's parser refuses it too.
    call = json.dumps(rpc_body("tools/call", CREATE_NOTE))
    raw = call[:-2] + f', "_meta": {{"x": {trick}}}}}}}'
    response = client.post("/mcp", content=raw.encode(), headers=legacy_headers(signer.token(scope=READ)))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32700
    assert note_count(client, signer) == 0


def test_body_over_the_limit_is_413_json(idp, signer):
    with running_app(mcp_max_body_bytes=2048) as client:
        token = signer.token(scope=WRITE)
        big = rpc_body("tools/call", {"name": "create_note", "arguments": {"title": "t", "content": "x" * 3000}})
        response = client.post("/mcp", json=big, headers=legacy_headers(token))
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"error": "request_too_large", "error_description": "request body too large"}
        assert note_count(client, signer) == 0
        small = rpc_body("tools/call", {"name": "create_note", "arguments": {"title": "t", "content": "x" * 1500}})
        assert len(json.dumps(small)) < 2048
        assert not call_tool(client, "create_note", small["params"]["arguments"], token)["isError"]


def test_body_over_the_limit_is_413_even_without_the_scope(idp, signer):
    with running_app(mcp_max_body_bytes=2048) as client:
        big = rpc_body("tools/call", {"name": "create_note", "arguments": {"title": "t", "content": "x" * 3000}})
        response = client.post("/mcp", json=big, headers=legacy_headers(signer.token(scope=READ)))
        assert response.status_code == 413


def test_get_and_delete_are_not_inspected(client, signer):
    token = signer.token(scope=READ)
    body = json.dumps(rpc_body("tools/call", CREATE_NOTE))
    # Accept without text/event-stream, so the SDK answers at once instead of opening a stream.
    get = client.request("GET", "/mcp", content=body, headers={**bearer(token), "Accept": "application/json"})
    assert get.status_code == 406
    delete = client.request("DELETE", "/mcp", content=body, headers=legacy_headers(token))
    assert delete.status_code == 405
    for response in (get, delete):
        assert "www-authenticate" not in response.headers
        assert response.json()["jsonrpc"] == "2.0"


# --- ScopeGate as an ASGI app on its own ------------------------------------------------------------


def principal_with(*scopes: str) -> Principal:
    return Principal(
        subject="user-123",
        client_id=CLIENT_ID,
        issuer=ISSUER,
        audience=(SERVER_URL,),
        scopes=frozenset(scopes),
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )


class Downstream:
    """Stands for the SDK: reads the whole body it is handed, then answers 200."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.receives: list[Receive] = []
        self.after_body: list[Message] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.receives.append(receive)
        if scope["type"] == "http" and scope["method"] == "POST":
            body = b""
            for _ in range(100):
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
            self.bodies.append(body)
            self.after_body.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class ChunkedReceive:
    """An ASGI receive that hands the body over in several http.request messages, then a disconnect."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.messages: list[Message] = [
            {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
            for index, chunk in enumerate(chunks)
        ]
        self.calls = 0

    async def __call__(self) -> Message:
        self.calls += 1
        if self.calls <= len(self.messages):
            return self.messages[self.calls - 1]
        return {"type": "http.disconnect"}


class Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return self.messages[0]["status"]

    @property
    def headers(self) -> dict[str, str]:
        return {name.decode(): value.decode() for name, value in self.messages[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(message.get("body", b"") for message in self.messages[1:])


def make_gate(downstream: ASGIApp, max_body_bytes: int = 4096) -> ScopeGate:
    return ScopeGate(
        downstream,
        tool_scopes={"create_note": (WRITE,), "get_me": ()},
        responder=ChallengeResponder(resource_metadata_url=PRM_URL, scopes=GROUP_SCOPES),
        max_body_bytes=max_body_bytes,
        path="/mcp",
    )


def http_scope(
    principal: Principal | None, *, method: str = "POST", path: str = "/mcp", headers: list | None = None
) -> Scope:
    state = {"auth": RequestAuth("ok", principal)} if principal is not None else {}
    return {"type": "http", "method": method, "path": path, "headers": headers or [], "state": state}


def split(raw: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *cuts, len(raw)]
    return [raw[start:end] for start, end in itertools.pairwise(edges)]


CREATE_RAW = json.dumps(rpc_body("tools/call", CREATE_NOTE)).encode()
CUT_IN_THE_NAME = CREATE_RAW.index(b"create_note") + 4


async def test_chunked_body_is_reassembled_and_replayed_whole():
    downstream, sent = Downstream(), Sent()
    chunks = split(CREATE_RAW, [5, CUT_IN_THE_NAME, CUT_IN_THE_NAME + 1, len(CREATE_RAW) - 1])
    assert len(chunks) == 5
    receive = ChunkedReceive(chunks)
    await make_gate(downstream)(http_scope(principal_with(WRITE)), receive, sent)
    assert downstream.bodies == [CREATE_RAW]
    assert downstream.after_body == [{"type": "http.disconnect"}]  # later messages pass through
    assert sent.status == 200


async def test_chunked_body_naming_a_scoped_tool_is_refused():
    downstream, sent = Downstream(), Sent()
    receive = ChunkedReceive(split(CREATE_RAW, [3, CUT_IN_THE_NAME, CUT_IN_THE_NAME + 3]))
    await make_gate(downstream)(http_scope(principal_with(READ)), receive, sent)
    assert downstream.bodies == []
    assert sent.status == 403
    assert sent.headers["www-authenticate"] == insufficient_scope_challenge(WRITE)
    assert json.loads(sent.body)["error"] == "insufficient_scope"


async def test_chunked_body_over_the_limit_stops_reading_and_is_413():
    downstream, sent = Downstream(), Sent()
    receive = ChunkedReceive([b"[" + b" " * 1023] * 10)
    await make_gate(downstream, max_body_bytes=2048)(http_scope(principal_with(WRITE)), receive, sent)
    assert downstream.bodies == []
    assert receive.calls == 3  # 3 KiB read, 7 KiB never asked for
    assert sent.status == 413
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.body) == {"error": "request_too_large", "error_description": "request body too large"}


async def test_disconnect_mid_body_judges_exactly_what_arrived():
    receive = ChunkedReceive([CREATE_RAW, b"  "])
    receive.messages[1] = {"type": "http.disconnect"}
    downstream, sent = Downstream(), Sent()
    await make_gate(downstream)(http_scope(principal_with(READ)), receive, sent)
    assert downstream.bodies == []
    assert sent.status == 403


async def test_body_of_exactly_the_limit_passes():
    downstream, sent = Downstream(), Sent()
    raw = CREATE_RAW + b" " * (2048 - len(CREATE_RAW))
    await make_gate(downstream, max_body_bytes=2048)(http_scope(principal_with(WRITE)), ChunkedReceive([raw]), sent)
    assert downstream.bodies == [raw]


async def test_header_mismatch_answer_from_the_gate_itself():
    downstream, sent = Downstream(), Sent()
    scope = http_scope(principal_with(WRITE), headers=[(b"mcp-name", b"get_me")])
    await make_gate(downstream)(scope, ChunkedReceive([CREATE_RAW]), sent)
    assert downstream.bodies == []
    assert sent.status == 400
    assert json.loads(sent.body) == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32020, "message": "Mcp-Name header does not match the body"},
    }


@pytest.mark.parametrize(
    "scope",
    [
        http_scope(principal_with(), method="GET"),
        http_scope(principal_with(), method="DELETE"),
        http_scope(principal_with(), path="/healthz"),
        http_scope(None),  # no caller: the bearer middleware has already answered, or the path is public
    ],
    ids=["GET", "DELETE", "other-path", "no-principal"],
)
async def test_requests_not_inspected_get_the_original_receive(scope):
    downstream, sent = Downstream(), Sent()
    receive = ChunkedReceive([CREATE_RAW])
    await make_gate(downstream)(scope, receive, sent)
    assert downstream.receives == [receive]
    assert sent.status == 200


async def test_lifespan_passes_straight_through():
    calls: list[Scope] = []

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope)

    await make_gate(lifespan_app)({"type": "lifespan"}, ChunkedReceive([]), Sent())
    assert calls == [{"type": "lifespan"}]


# --- configurable scope names and advertising ------------------------------------------------------


def test_configured_scope_name_is_the_one_challenged_and_accepted(idp, signer):
    custom = "api://notes/write"
    with running_app(notes_write_scope=custom) as client:
        body = rpc_body("tools/call", CREATE_NOTE)
        assert_insufficient_scope(
            client.post("/mcp", json=body, headers=legacy_headers(signer.token(scope=WRITE))), custom
        )
        result = call_tool(client, "create_note", TOOL_ARGUMENTS["create_note"], signer.token(scope=custom))
        assert not result["isError"], result
        metadata = client.get("/.well-known/oauth-protected-resource/mcp").json()
        assert metadata["scopes_supported"] == [READ, custom, CALC]
        tools = list_tools(client, signer.token())
        assert tools["create_note"]["description"].endswith(f"Requires scope: {custom}.")
        assert tools["create_note"]["_meta"]["required_scopes"] == [custom]


def test_empty_scope_setting_means_no_scope_needed(idp, signer):
    with running_app(notes_write_scope="") as client:
        result = call_tool(client, "create_note", TOOL_ARGUMENTS["create_note"], signer.token(drop=("scope",)))
        assert not result["isError"], result
        metadata = client.get("/.well-known/oauth-protected-resource/mcp").json()
        assert metadata["scopes_supported"] == [READ, CALC]
        tools = list_tools(client, signer.token())
        assert tools["create_note"]["description"].endswith("Requires no scope.")
        assert tools["create_note"]["_meta"]["required_scopes"] == []
        body = rpc_body("tools/call", {"name": "read_note", "arguments": {"note_id": "n-1"}})
        assert_insufficient_scope(client.post("/mcp", json=body, headers=legacy_headers(signer.token())), READ)


def test_scopes_are_advertised_in_metadata_and_the_401_challenge(client):
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
        assert client.get(path).json()["scopes_supported"] == [READ, WRITE, CALC]
    response = client.post("/mcp", json=rpc_body("tools/list"), headers=MCP_HEADERS)
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate")[0] == (
        f'Bearer resource_metadata="{PRM_URL}", scope="{READ} {WRITE} {CALC}"'
    )


# --- tools/list -----------------------------------------------------------------------------------


def list_tools(client: TestClient, token: str, era: str = "legacy") -> dict[str, dict[str, Any]]:
    headers, body = era_request(era, "tools/list", {}, token)
    response = client.post("/mcp", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return {tool["name"]: tool for tool in parse_mcp_response(response)["result"]["tools"]}


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_tools_list_without_scopes_shows_every_tool_and_its_scope(client, signer, era):
    tools = list_tools(client, signer.token(drop=("scope",)), era)
    assert sorted(tools) == sorted(TOOL_SCOPES)
    assert len(tools) == 11
    for name, scope in TOOL_SCOPES.items():
        suffix = f"Requires scope: {scope}." if scope else "Requires no scope."
        assert tools[name]["description"].endswith(suffix), name
        assert tools[name]["_meta"]["required_scopes"] == ([scope] if scope else []), name

"""The compatibility module: every patch of a library's private names, checked against the pinned versions.

When requirements.txt pins another PyJWT or mcp, the first test fails: check each patch against the new
version (docs/performance.md says what each buys), then update PATCHED_VERSIONS or drop the patch.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError
from mcp.server.connection import Connection
from mcp.server.runner import ServerRunner
from starlette.testclient import TestClient

from tests.support import (
    BASE_URL,
    MCP_HEADERS,
    MODERN_META,
    bearer,
    cyclic_garbage,
    legacy_headers,
    parse_mcp_response,
    rpc_body,
)
from web.app import build_app
from web.compat import PATCHED_VERSIONS, break_runner_cycles, decode_segment, is_canonical_segment, jws

SEGMENT_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ .!"
REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements.txt"


def pinned(package: str) -> str | None:
    for line in REQUIREMENTS.read_text().splitlines():
        match = re.match(rf"^{re.escape(package)}(\[[^\]]*\])?==([^\s;#]+)", line.strip(), re.IGNORECASE)
        if match:
            return match.group(2)
    return None


@pytest.mark.parametrize("package", sorted(PATCHED_VERSIONS))
def test_the_patches_were_written_for_the_pinned_and_installed_versions(package):
    assert pinned(package) == PATCHED_VERSIONS[package], (
        f"requirements.txt pins {package} {pinned(package)}: check web/compat.py's patches against it"
    )
    assert version(package) == PATCHED_VERSIONS[package]


ORIGINAL = PyJWS._decode_base64url_segment


def outcome(decode: object, segment: bytes) -> bytes | str:
    try:
        return decode(segment, "payload")  # type: ignore[operator]
    except DecodeError as exc:
        return f"DecodeError: {exc}"


EDGE_CASES = [
    b"",
    b"=",
    b"==",
    b"===",
    b"A",
    b"AA",
    b"AAA",
    b"AAAA",
    b"AA==",
    b"AA=",
    b"AAA=",
    b"AAAA==",
    b"A===",
    b"AB",  # non-zero bits after the last byte: not canonical
    b"AE",
    b"QQ",
    b"QR",
    b"QUI",
    b"QUJ",
    b"!!!!",
    b"AA!A",
    b"AA+A",  # standard base64, not base64url
    b"AA/A",
    b"AA A",
    b"AA\nA",
    b"A=A=",
    b"AA=A",
    b"\xff\xfe",
    base64.urlsafe_b64encode(bytes(range(256))).rstrip(b"="),
    base64.urlsafe_b64encode(bytes(range(256))),
    b"eyJhbGciOiJSUzI1NiJ9",
    b"eyJhbGciOiJSUzI1NiJ9=",
]


@pytest.mark.parametrize("segment", EDGE_CASES)
def test_edge_cases_match_pyjwt(segment):
    assert outcome(decode_segment, segment) == outcome(ORIGINAL, segment)


@settings(max_examples=2000, deadline=None)
@given(
    st.binary(max_size=24)
    | st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ .!", max_size=24).map(str.encode)
)
@example(b"QR")
def test_any_segment_decodes_as_pyjwt_decodes_it(segment):
    assert outcome(decode_segment, segment) == outcome(ORIGINAL, segment)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=40))
def test_the_unpadded_encoding_of_any_bytes_is_canonical_and_nothing_else_with_those_bytes(data):
    text = base64.urlsafe_b64encode(data).rstrip(b"=")
    assert is_canonical_segment(text) == bool(data)
    assert not is_canonical_segment(text + b"=" * (-len(text) % 4)) or len(text) % 4 == 0


def test_the_parser_is_pyjwt_with_only_the_segment_check_replaced():
    assert type(jws).__mro__[1] is PyJWS
    replaced = [name for name in vars(type(jws)) if not name.startswith("__")]
    assert replaced == ["_decode_base64url_segment"]


# --- the SDK's runner cycles ---------------------------------------------------------------------------


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
    assert [type(obj).__name__ for obj in garbage if isinstance(obj, ServerRunner | Connection)] == []


def test_the_runner_handlers_become_plain_properties_once():
    break_runner_cycles()
    assert isinstance(ServerRunner.__dict__["on_request"], property)
    assert isinstance(ServerRunner.__dict__["on_notify"], property)
    assert break_runner_cycles() == []  # already applied: nothing more to change

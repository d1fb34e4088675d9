"""Refuses a `tools/call` whose tool needs a scope the caller lacks, before the SDK runs it.

The JSON-RPC body decides which tool is called; `Mcp-Method`/`Mcp-Name` headers that disagree with
it are a 400, never a way around the gate. The body is read once (bounded) and replayed to the SDK.

A caller holding every scope any tool needs cannot be refused by the gate, so its body is not read here when
the SDK checks the headers itself (see `fast_pass`): the common case (its measured effect is in docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from mcp.shared.inbound import NAME_BEARING_METHODS, decode_header_value
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth.challenge import ChallengeResponder
from auth.errors import InsufficientScope, Reason, Refusal
from auth.refusal import refusal_headers, send_refusal
from auth.request_auth import request_auth, set_request_auth

HEADER_MISMATCH = -32020  # JSON-RPC code the 2026-07-28 transport uses for this


class GateRefusal(Exception):
    def __init__(self, status: int, code: int, message: str, request_id: object = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.request_id = status, code, message, request_id


def _messages(document: object) -> list[Mapping[str, Any]]:
    items = document if isinstance(document, list) else [document]
    return [item for item in items if isinstance(item, Mapping)]


def needed_scopes(
    document: object, headers: Mapping[str, str], tool_scopes: Mapping[str, tuple[str, ...]]
) -> tuple[str, ...]:
    """Every scope the tool calls in this body need; GateRefusal when headers disagree with the body."""
    needed: dict[str, None] = {}
    header_method = headers.get("mcp-method")
    header_name = headers.get("mcp-name")
    for message in _messages(document):
        method = message.get("method")
        params = message.get("params")
        params = params if isinstance(params, Mapping) else {}
        if header_method is not None and header_method != method:
            raise GateRefusal(400, HEADER_MISMATCH, "Mcp-Method header does not match the body", message.get("id"))
        name_key = NAME_BEARING_METHODS.get(method) if isinstance(method, str) else None
        named = params.get(name_key) if name_key is not None else None
        if name_key is not None and header_name is not None and decode_header_value(header_name) != named:
            raise GateRefusal(400, HEADER_MISMATCH, "Mcp-Name header does not match the body", message.get("id"))
        if method == "tools/call":
            name = params.get("name")
            for scope in tool_scopes.get(name, ()) if isinstance(name, str) else ():
                needed[scope] = None
    return tuple(needed)


def fast_pass(headers: list[tuple[bytes, bytes]], max_body_bytes: int) -> bool:
    """Whether a caller holding every tool scope may pass without the gate reading the body: it declares a
    length within the limit (so the 413 stays ours), and the headers leave nothing for the gate to check. That
    is so on the SDK's modern path (taken, as the SDK decides, on the first `MCP-Protocol-Version` header when it
    names no handshake version), whose ladder refuses routing headers that disagree with the body, and when
    no `Mcp-Method`/`Mcp-Name` header was sent at all."""
    version: bytes | None = None
    routing = False
    length: bytes | None = None
    for name, value in headers:
        if name == b"content-length":
            if length is not None:
                return False
            length = value
        elif name == b"mcp-protocol-version":
            if version is None:
                version = value
        elif name == b"mcp-method" or name == b"mcp-name":
            routing = True
    if length is None or not length.isdigit() or len(length) > 18 or int(length) > max_body_bytes:
        return False
    return not routing or (version is not None and version.decode("latin-1") not in HANDSHAKE_PROTOCOL_VERSIONS)


def called_tools(document: object) -> list[object]:
    """The `name` of every tools/call in a JSON-RPC message or batch (unvalidated: labels bound them)."""
    calls = [message for message in _messages(document) if message.get("method") == "tools/call"]
    return [params.get("name") if isinstance(params := call.get("params"), Mapping) else None for call in calls]


class ScopeGate:
    """Sits after the bearer middleware; only POSTs to the MCP path are inspected."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tool_scopes: Mapping[str, tuple[str, ...]],
        responder: ChallengeResponder,
        max_body_bytes: int,
        path: str = "/mcp",
    ) -> None:
        self.app = app
        self.tool_scopes = {name: tuple(scopes) for name, scopes in tool_scopes.items()}
        self.every_scope = tuple(dict.fromkeys(scope for scopes in self.tool_scopes.values() for scope in scopes))
        self.responder = responder
        self.max_body_bytes = max_body_bytes
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth = request_auth(scope) if scope["type"] == "http" else None
        principal = auth.principal if auth is not None else None
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path or principal is None:
            await self.app(scope, receive, send)
            return
        if principal.has_scopes(self.every_scope) and fast_pass(scope["headers"], self.max_body_bytes):
            await self.app(scope, receive, send)  # no tool can be refused, nothing left to check here
            return
        body, more = await _read_bounded(receive, self.max_body_bytes)
        if more:
            await send_refusal(send, Refusal(Reason.BODY_TOO_LARGE, status=413, error="request_too_large"))
            return
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            document = None  # not ours to answer: the SDK replies with a JSON-RPC parse error
        if document is not None:
            headers = {
                name.decode("latin-1"): value.decode("latin-1")
                for name, value in scope["headers"]
                if name in (b"mcp-method", b"mcp-name")
            }
            try:
                needed = needed_scopes(document, headers, self.tool_scopes)
            except GateRefusal as refusal:
                await _send_jsonrpc_error(send, refusal)
                return
            if needed and not principal.has_scopes(needed):
                refused = dataclasses.replace(
                    auth, outcome=InsufficientScope.error, refused_tools=tuple(called_tools(document))
                )
                set_request_auth(scope, refused)
                scheme = "dpop" if auth.binding == "dpop" else "bearer"
                await self.responder(InsufficientScope(needed), send, scheme)
                return
        await self.app(scope, _replay(body, receive), send)


async def _send_jsonrpc_error(send: Send, refusal: GateRefusal) -> None:
    """A header/body disagreement is a JSON-RPC error, as the transport specifies (not an HTTP refusal body)."""
    error = {"code": refusal.code, "message": refusal.message}
    body = json.dumps({"jsonrpc": "2.0", "id": refusal.request_id, "error": error}).encode()
    await send({"type": "http.response.start", "status": refusal.status, "headers": refusal_headers(body)})
    await send({"type": "http.response.body", "body": body})


async def _read_bounded(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The body, and whether it went past `limit` (then it is not read further)."""
    message = await receive()
    if message["type"] != "http.request":
        return b"", False
    first = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: the whole body in one message
        return (b"", True) if len(first) > limit else (first, False)
    body = bytearray(first)
    while len(body) <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body), False
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return (b"", True) if len(body) > limit else (bytes(body), False)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later messages: disconnects, passed through

    return replay

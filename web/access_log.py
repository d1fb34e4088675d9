"""Pure ASGI middleware: one access line and one metrics observation per HTTP request, with a request id.

What it logs is chosen field by field: never headers, the query string, bodies or tokens. Authentication's
outcome and caller (one RequestAuth, auth.request_auth) are read here after the answer.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from typing import cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth.request_auth import request_auth
from web.log_format import REQUEST_ID, DirectLines
from web.metrics import Metrics

REQUEST_ID_HEADER = b"x-request-id"
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
_UNSAFE_CHARS = re.compile(r"[^\x21-\x7e]")
MAX_PATH_CHARS = 256
MAX_FIELD_CHARS = 128

ACCESS_FORMAT = "%s %s %s %.1fms %s"

access_logger = logging.getLogger("access")


def incoming_request_id(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The caller's X-Request-ID when it is short and made of safe characters; else None."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1").strip()
            return text if _SAFE_REQUEST_ID.fullmatch(text) else None
    return None


def new_request_id() -> str:
    """32 random hex digits: as unique as a uuid4, without building a UUID object on every request."""
    return os.urandom(16).hex()


def loggable(value: object, limit: int = MAX_FIELD_CHARS) -> str | None:
    """A value safe for one log line: printable ASCII only (others escaped as ?), bounded in length."""
    if value is None:
        return None
    text = str(value)
    if not (text.isascii() and text.isprintable() and " " not in text):  # else all of it is in \x21-\x7e
        text = _UNSAFE_CHARS.sub("?", text)
    return text if len(text) <= limit else text[:limit] + "..."


class AccessLog:
    """Times the request, echoes or assigns X-Request-ID, then logs and counts the outcome."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics | None = None, logger: logging.Logger = access_logger) -> None:
        self.app = app
        self.metrics = metrics
        self.logger = logger
        self.direct = DirectLines(logger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = incoming_request_id(scope["headers"]) or new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500  # what the client gets if the app fails before answering
        header = (REQUEST_ID_HEADER, request_id.encode("latin-1"))

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [item for item in message.get("headers", ()) if item[0].lower() != REQUEST_ID_HEADER]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        context = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            REQUEST_ID.reset(context)
            self._record(scope, state, status, time.perf_counter() - started, request_id)

    def _record(self, scope: Scope, state: dict, status: int, seconds: float, request_id: str) -> None:
        auth = request_auth(scope)
        outcome = auth.outcome if auth is not None else None
        binding = auth.binding if auth is not None else None  # bearer/dpop/mtls: never the token or proof
        # No more of the path than the line shows (one character more says it was cut): the entry waits for its
        # batch, and the client chose the path's length.
        path = scope["path"][: MAX_PATH_CHARS + 1]
        if self.metrics is not None:
            self.metrics.observe_request(
                path=path,
                method=scope["method"],
                status=status,
                seconds=seconds,
                auth=outcome,
                issuer=auth.issuer if auth is not None else None,
                binding=binding,
            )
            for tool in auth.refused_tools if auth is not None else ():
                self.metrics.observe_tool_call(tool, "refused")
        if not self.logger.isEnabledFor(logging.INFO):
            return
        principal = auth.principal if auth is not None else None
        client = scope.get("client")
        entry = (
            scope["method"],
            path,
            status,
            seconds,
            client[0] if client else None,
            outcome,
            getattr(principal, "subject", None),
            getattr(principal, "client_id", None),
            request_id,
            auth.issuer if auth is not None else None,
            binding,
        )
        if not self.direct.defer(access_line, entry):
            message, fields = access_line(entry)
            self.logger.info(message, extra=fields)


def access_line(entry: tuple[object, ...]) -> tuple[str, dict[str, object]]:
    """The access line's message and extra fields, from what _record kept of the request (formatted later, when
    the log batch is written, on the default set-up)."""
    method, path, status, seconds, client, outcome, subject, client_id, request_id, issuer, binding = entry
    fields: dict[str, object] = {
        "method": loggable(method, 16),
        "path": loggable(path, MAX_PATH_CHARS),
        "status": status,
        "duration_ms": round(cast(float, seconds) * 1000, 1),
        "client": loggable(client),
        "auth": outcome,
        "binding": binding,
        "subject": loggable(subject),
        "client_id": loggable(client_id),
        "request_id": request_id,
        "issuer": loggable(issuer, 256),  # a configured issuer, "other" or "none"
    }
    context = " ".join(
        f"{name}={fields[name]}"
        for name in ("client", "auth", "subject", "client_id", "request_id", "issuer", "binding")
        if fields[name] is not None
    )
    return ACCESS_FORMAT % (fields["method"], fields["path"], status, fields["duration_ms"], context), fields

"""Access lines written straight into the batching handler: the same line logging would write, and only while
logging is set up as configure_logging leaves it."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from tests.support import MCP_HEADERS, bearer, rpc_body
from web.access_log import access_logger
from web.log_format import BatchingStreamHandler, DirectLines, JsonFormatter, TextFormatter, log_handler

GET_ME = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
FIELDS = {
    "method": "POST",
    "path": "/mcp",
    "status": 200,
    "duration_ms": 1.5,
    "client": "127.0.0.1",
    "auth": "ok",
    "subject": None,
    "client_id": "c-1",
    "request_id": "r-1",
    "issuer": "https://idp.example.com/",
}
TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO access: POST /mcp 200 \d+\.\dms client=testclient auth=ok "
    r"subject=user-123 client_id=client-abc request_id=direct-1 issuer=https://idp.example.com/ binding=bearer"
)


def logged_record(created: float, message: str, fields: dict[str, object]) -> logging.LogRecord:
    """The record logger.info(message, extra=fields) would make at `created`."""
    record = access_logger.makeRecord("access", logging.INFO, __file__, 1, message, (), None, extra=fields)
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord computes it
    return record


@pytest.mark.parametrize("created", [1_790_000_000.0, 1_790_000_000.0005, 1_790_000_000.25, 1_790_000_000.9999])
def test_a_direct_line_is_the_line_logging_writes(created):
    record = logged_record(created, "POST /mcp 200 1.5ms auth=ok", FIELDS)
    text = TextFormatter()
    assert text.line(created, "INFO", "access", record.getMessage()) == text.format(record)
    direct = JsonFormatter.line(created, "INFO", "access", record.getMessage(), FIELDS)
    assert direct == JsonFormatter().format(record)
    assert list(json.loads(direct)) == ["time", "level", "logger", "message", *(k for k, v in FIELDS.items() if v)]


@contextlib.contextmanager
def sole_handler(log_format: str = "text") -> Iterator[tuple[io.StringIO, BatchingStreamHandler]]:
    """The root logger as configure_logging leaves it (one batching handler, ours), writing to a string. Entered in
    the test itself: pytest adds its own capturing handlers to the root around each test's body."""
    stream = io.StringIO()
    handler = log_handler(log_format, flush_seconds=30)
    handler.setStream(stream)
    root, test_client_log = logging.getLogger(), logging.getLogger("httpx2")
    saved = root.handlers[:], root.level, test_client_log.level
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    test_client_log.setLevel(logging.WARNING)  # the in-process test client's own lines
    try:
        yield stream, handler
    finally:
        root.handlers = saved[0]
        root.setLevel(saved[1])
        test_client_log.setLevel(saved[2])
        handler.close()


def access_lines(stream: io.StringIO, handler: logging.Handler) -> list[str]:
    handler.flush()
    return [line for line in stream.getvalue().splitlines() if " access: " in line or '"access"' in line]


def no_logging_call(*args: object, **kwargs: object) -> None:
    raise AssertionError("the access line went through Logger.info")


def test_the_access_line_goes_direct_with_the_default_set_up(client, signer, monkeypatch):
    monkeypatch.setattr(access_logger, "info", no_logging_call)
    headers = {**MCP_HEADERS, **bearer(signer.token()), "X-Request-ID": "direct-1"}
    with sole_handler() as (stream, handler):
        assert client.post("/mcp", json=GET_ME, headers=headers).status_code == 200
    [line] = access_lines(stream, handler)
    assert TEXT_LINE.fullmatch(line), line


def test_json_access_lines_go_direct_too(client, signer, monkeypatch):
    monkeypatch.setattr(access_logger, "info", no_logging_call)
    headers = {**MCP_HEADERS, **bearer(signer.token()), "X-Request-ID": "direct-2"}
    with sole_handler("json") as (stream, handler):
        assert client.post("/mcp", json=GET_ME, headers=headers).status_code == 200
    [line] = access_lines(stream, handler)
    entry = json.loads(line)
    assert list(entry)[:4] == ["time", "level", "logger", "message"]
    assert entry["status"] == 200 and entry["subject"] == "user-123" and entry["request_id"] == "direct-2"


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def another_root_handler(handler: BatchingStreamHandler, logger: logging.Logger) -> ListHandler:
    extra = ListHandler()
    logging.getLogger().addHandler(extra)
    return extra


def an_extra_filter(handler: BatchingStreamHandler, logger: logging.Logger) -> None:
    handler.addFilter(logging.Filter("nothing-matches"))


def a_handler_on_the_logger(handler: BatchingStreamHandler, logger: logging.Logger) -> ListHandler:
    extra = ListHandler()
    logger.addHandler(extra)
    return extra


def another_formatter(handler: BatchingStreamHandler, logger: logging.Logger) -> None:
    handler.setFormatter(logging.Formatter("%(message)s"))


def no_propagation(handler: BatchingStreamHandler, logger: logging.Logger) -> None:
    logger.propagate = False


def plain_line(entry: tuple[object, ...]) -> tuple[str, dict[str, object]]:
    return str(entry[0]), {"request_id": "r"}


@pytest.mark.parametrize(
    "change", [another_root_handler, an_extra_filter, a_handler_on_the_logger, another_formatter, no_propagation]
)
def test_any_other_set_up_goes_through_logging(change):
    logger = logging.getLogger("test.direct")
    logger.setLevel(logging.INFO)
    direct = DirectLines(logger)
    with sole_handler() as (stream, handler):
        try:
            assert direct.defer(plain_line, ("first",)) is True
            extra = change(handler, logger)
            assert direct.defer(plain_line, ("second",)) is False
            if extra is not None:  # the caller's logger.info still reaches it
                logger.info("second")
                assert [record.getMessage() for record in extra.records] == ["second"]
        finally:
            logger.handlers.clear()
            logger.propagate = True
        handler.flush()
        assert stream.getvalue().count(" INFO test.direct: first\n") == 1


def test_access_lines_reach_an_added_handler(client, signer):
    """An operator's (or a test's) handler sees every access record, as before the direct path existed."""
    extra = ListHandler()
    with sole_handler() as (stream, handler):
        logging.getLogger().addHandler(extra)
        assert client.post("/mcp", json=GET_ME, headers={**MCP_HEADERS, **bearer(signer.token())}).status_code == 200
        lines = access_lines(stream, handler)
    records = [record for record in extra.records if record.name == "access"]
    assert len(records) == 1 and records[0].status == 200
    assert len(lines) == 1

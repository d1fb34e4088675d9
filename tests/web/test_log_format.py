"""Log output: text time stamps, and lines written in batches that are never lost at close or delayed for long."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from web.log_format import BatchingStreamHandler, JsonFormatter, TextFormatter, log_handler


class CountingStream(io.StringIO):
    """A stream that counts its writes and flushes, as stderr would make system calls."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def stream() -> CountingStream:
    return CountingStream()


@pytest.fixture
def batching(stream: CountingStream) -> Iterator[tuple[logging.Logger, BatchingStreamHandler]]:
    handler = BatchingStreamHandler(stream, flush_seconds=30)  # no timed flush during the test
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test.batching")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield logger, handler
    finally:
        logger.removeHandler(handler)
        handler.close()


def record_at(created: float, message: str = "hello") -> logging.LogRecord:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, message, (), None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


def wait_for(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_text_time_stamp_is_what_logging_prints():
    ours, stock = TextFormatter(), logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for created in (1_790_000_000.0, 1_790_000_000.25, 1_790_000_000.999, 1_790_000_001.5, 1_790_000_000.5):
        record = record_at(created)
        assert ours.format(record) == stock.format(record)


def test_info_lines_wait_for_the_batch_and_are_written_together(batching, stream):
    logger, handler = batching
    for number in range(5):
        logger.info("line %d", number)
    assert stream.getvalue() == ""
    handler.flush()
    assert stream.getvalue() == "".join(f"INFO line {number}\n" for number in range(5))
    assert stream.writes == 1


def test_a_warning_is_written_at_once_with_the_lines_before_it(batching, stream):
    logger, _ = batching
    logger.info("first")
    logger.warning("second")
    assert stream.getvalue() == "INFO first\nWARNING second\n"


def test_a_full_batch_is_written_at_once(stream):
    handler = BatchingStreamHandler(stream, flush_seconds=30, max_batch_chars=100)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        for _ in range(9):
            handler.handle(record_at(time.time(), "x" * 9))
        assert stream.getvalue() == ""
        handler.handle(record_at(time.time(), "x" * 9))  # the tenth line reaches 100 characters
        assert stream.getvalue() == "xxxxxxxxx\n" * 10
    finally:
        handler.close()


def test_lines_are_written_within_the_interval_without_further_logging(stream):
    handler = BatchingStreamHandler(stream, flush_seconds=0.05)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        handler.handle(record_at(time.time(), "idle afterwards"))
        assert wait_for(lambda: stream.getvalue() == "idle afterwards\n")
    finally:
        handler.close()


def test_close_writes_what_is_left(stream):
    handler = BatchingStreamHandler(stream, flush_seconds=30)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(record_at(time.time(), "last words"))
    handler.close()
    assert stream.getvalue() == "last words\n"


def test_a_broken_stream_is_reported_by_logging_not_raised(stream, monkeypatch):
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError("stderr is gone")

    reported = []
    handler = BatchingStreamHandler(Broken(), flush_seconds=30)
    monkeypatch.setattr(handler, "handleError", lambda record: reported.append(record.getMessage()))
    handler.handle(record_at(time.time(), "lost"))
    handler.handle(logging.LogRecord("x", logging.ERROR, __file__, 1, "also lost", (), None))
    assert reported == ["also lost"]
    handler.max_batch_chars = 1  # a deferred line (DirectLines' way in) then writes its batch at once: no raise
    handler.write_deferred(time.time(), "access", lambda entry: ("deferred, also lost", {}), ())
    assert reported == ["also lost", "a line of access"]
    handler.close()  # does not raise either


def render_line(entry: tuple[object, ...]) -> tuple[str, dict[str, object]]:
    (text,) = entry
    if text == "bad":
        raise ValueError("cannot render this one")
    return f"rendered {text}", {"request_id": f"r-{text}"}


def test_deferred_lines_are_rendered_when_written_in_order_with_the_others(stream):
    handler = BatchingStreamHandler(stream, flush_seconds=30)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(record_at(time.time(), "first"))
    handler.setFormatter(TextFormatter())
    rendered: list[object] = []
    handler.write_deferred(1_790_000_000.25, "access", lambda entry: rendered.append(entry) or render_line(entry), (2,))
    assert rendered == [] and stream.getvalue() == ""  # nothing formatted before the batch is written
    handler.handle(record_at(time.time(), "third"))
    handler.flush()
    first, second, third = stream.getvalue().splitlines()
    assert rendered == [(2,)]
    assert first == "first" and third.endswith(" INFO x: third")
    assert second == TextFormatter().line(1_790_000_000.25, "INFO", "access", "rendered 2")
    handler.close()


def test_a_deferred_line_that_cannot_be_rendered_costs_only_itself(stream, monkeypatch):
    reported = []
    handler = BatchingStreamHandler(stream, flush_seconds=30)
    handler.setFormatter(JsonFormatter())
    monkeypatch.setattr(handler, "handleError", lambda record: reported.append(record.getMessage()))
    for text in ("a", "bad", "c"):
        handler.write_deferred(1_790_000_000.0, "access", render_line, (text,))
    handler.flush()
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(entry["message"], entry["request_id"]) for entry in entries] == [
        ("rendered a", "r-a"),
        ("rendered c", "r-c"),
    ]
    assert reported == ["a line of access"]
    handler.close()


def test_closing_twice_is_harmless(stream):
    """logging.shutdown closes every handler at exit, also one closed before."""
    handler = BatchingStreamHandler(stream, flush_seconds=30)
    handler.close()
    handler.close()


def test_log_handler_batches_only_when_asked():
    immediate, batched = log_handler("text"), log_handler("json", flush_seconds=0.2)
    try:
        assert not isinstance(immediate, BatchingStreamHandler)
        assert isinstance(batched, BatchingStreamHandler) and batched.flush_seconds == 0.2
    finally:
        immediate.close()
        batched.close()


def test_a_deferred_line_meets_any_other_formatter_as_a_record(stream):
    handler = BatchingStreamHandler(stream, flush_seconds=30)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s %(request_id)s %(msecs)03d"))
    handler.write_deferred(1_790_000_000.25, "access", render_line, ("a",))
    handler.flush()
    assert stream.getvalue() == "INFO access rendered a r-a 250\n"
    handler.close()

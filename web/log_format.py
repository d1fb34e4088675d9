"""Log output: plain text lines or one JSON object per line, each tagged with the current request id.

Lines are written in batches (LOG_FLUSH_SECONDS): one write per batch instead of one per line, which was the
largest part of an access-log line's cost. WARNING and above are written at once, and all at exit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from contextvars import ContextVar
from datetime import UTC, datetime

# Set by the access-log middleware for the duration of one request.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Every attribute a plain LogRecord has; anything else on a record came in through `extra=`.
# uvicorn's color_message repeats the message with terminal escapes.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "color_message",
}


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to records logged while a request is being served."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and name not in entry and value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)  # ASCII only: safe whatever the locale of stderr


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, with the time's calendar part computed once per second rather than once per line."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return self.default_msec_format % (self._stamp, record.msecs)


class BatchingStreamHandler(logging.StreamHandler):
    """A StreamHandler that writes lines in batches: at most `flush_seconds` after they are logged, at once when
    the batch reaches `max_batch_chars` or a line is WARNING or worse, and on flush() and close() (logging
    flushes every handler at exit). A process killed outright loses at most `flush_seconds` of lines."""

    def __init__(self, stream: object, *, flush_seconds: float, max_batch_chars: int = 64 * 1024) -> None:
        super().__init__(stream)  # type: ignore[arg-type]
        self.flush_seconds = flush_seconds
        self.max_batch_chars = max_batch_chars
        self._batch: list[str] = []
        self._batch_chars = 0
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_every_interval, name="log-flush", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            self._batch.append(line)  # handle() holds the handler's lock around emit()
            self._batch_chars += len(line)
            if record.levelno >= logging.WARNING or self._batch_chars >= self.max_batch_chars:
                self._write_batch()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's contract: report through handleError, never raise
            self.handleError(record)

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_batch()
        finally:
            self.release()

    def close(self) -> None:
        self._closed.set()
        try:
            with contextlib.suppress(OSError, ValueError):  # the stream is gone: nothing left to write to
                self.flush()
        finally:
            super().close()

    def _write_batch(self) -> None:
        if self._batch:
            text, self._batch, self._batch_chars = "".join(self._batch), [], 0
            self.stream.write(text)
        if self.stream and hasattr(self.stream, "flush"):
            self.stream.flush()

    def _flush_every_interval(self) -> None:
        while not self._closed.wait(self.flush_seconds):
            # A closed or broken stderr: the next emit() reports it through handleError.
            if self._batch:
                with contextlib.suppress(OSError, ValueError):
                    self.flush()


def log_handler(log_format: str, flush_seconds: float = 0) -> logging.Handler:
    """The process's handler on stderr; with flush_seconds > 0, lines are written in batches."""
    handler: logging.StreamHandler = (
        BatchingStreamHandler(sys.stderr, flush_seconds=flush_seconds)
        if flush_seconds > 0
        else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(level: str, log_format: str = "text", flush_seconds: float = 0) -> None:
    """Root logging for the whole process (uvicorn and the MCP SDK included); call before MCPServer exists."""
    logging.basicConfig(level=level, handlers=[log_handler(log_format, flush_seconds)])
    logging.getLogger("httpx").setLevel(logging.WARNING)

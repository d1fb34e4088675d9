"""Log output: plain text lines or one JSON object per line, each tagged with the current request id (and, with
tracing on, the current trace and span ids).

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
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime

from opentelemetry import trace

# A deferred line's message and extra fields, computed from its entry when the batch is written.
Render = Callable[[tuple[object, ...]], tuple[str, dict[str, object]]]
# (created, formatter, logger name, render, entry, context fields): see BatchingStreamHandler.write_deferred
_DeferredLine = tuple[float, "logging.Formatter | None", str, Render, tuple[object, ...], "dict[str, str] | None"]
DEFERRED_LINE_CHARS = 200  # what a deferred line counts towards max_batch_chars before it is formatted

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


def trace_fields() -> dict[str, str] | None:
    """`trace_id` (32 hex digits) and `span_id` (16) of the current span, or None outside a valid span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return {"trace_id": trace.format_trace_id(context.trace_id), "span_id": trace.format_span_id(context.span_id)}


class TraceContextFilter(RequestIdFilter):
    """RequestIdFilter, plus `trace_id` and `span_id` of the span current when the record is logged. Installed only
    with tracing on (configure_logging's trace_ids), so logging costs nothing more with it off."""

    def filter(self, record: logging.LogRecord) -> bool:
        super().filter(record)
        if getattr(record, "trace_id", None) is None:
            fields = trace_fields()
            if fields is not None:
                record.trace_id, record.span_id = fields["trace_id"], fields["span_id"]
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {name: value for name, value in vars(record).items() if name not in _RECORD_ATTRIBUTES}
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(record.created, record.levelname, record.name, record.getMessage(), fields, exception)

    @staticmethod
    def line(
        created: float,
        level: str,
        logger: str,
        message: str,
        fields: dict[str, object],
        exception: str | None = None,
    ) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "logger": logger,
            "message": message,
        }
        for name, value in fields.items():
            if name not in entry and value is not None:
                entry[name] = value
        if exception:
            entry["exception"] = exception
        return json.dumps(entry, default=str)  # ASCII only: safe whatever the locale of stderr


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, with the time's calendar part computed once per second rather than once per line."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        # (second, its calendar part) in one attribute: lines are formatted on the log-flush thread as well
        self._stamp: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.time_stamp(record.created)

    def time_stamp(self, created: float) -> str:
        """What %(asctime)s shows for a record created at `created` (milliseconds as LogRecord counts them)."""
        second = int(created)
        cached_second, stamp = self._stamp
        if second != cached_second:
            stamp = time.strftime(self.default_time_format, self.converter(second))
            self._stamp = (second, stamp)
        return self.default_msec_format % (stamp, int((created - second) * 1000))

    def line(self, created: float, level: str, logger: str, message: str) -> str:
        """The line format() gives a record without exception or stack: TEXT_FORMAT, built directly."""
        return f"{self.time_stamp(created)} {level} {logger}: {message}"


class BatchingStreamHandler(logging.StreamHandler):
    """A StreamHandler that writes lines in batches: at most `flush_seconds` after they are logged, at once when
    the batch reaches `max_batch_chars` or a line is WARNING or worse, and on flush() and close() (logging
    flushes every handler at exit). A process killed outright loses at most `flush_seconds` of lines.

    A batch holds finished lines and deferred ones (write_deferred): the latter are formatted when their batch is
    written, many in a row, rather than one at a time at the end of each request."""

    def __init__(self, stream: object, *, flush_seconds: float, max_batch_chars: int = 64 * 1024) -> None:
        super().__init__(stream)  # type: ignore[arg-type]
        self.flush_seconds = flush_seconds
        self.max_batch_chars = max_batch_chars
        self._batch: list[str | _DeferredLine] = []
        self._batch_chars = 0
        self._stopped = threading.Event()  # (logging.Handler has a _closed of its own)
        self._flusher = threading.Thread(target=self._flush_every_interval, name="log-flush", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._add(self.format(record), record.levelno)  # handle() holds the handler's lock around emit()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's contract: report through handleError, never raise
            self.handleError(record)

    def write_deferred(
        self,
        created: float,
        logger: str,
        render: Render,
        entry: tuple[object, ...],
        context: dict[str, str] | None = None,
    ) -> None:
        """An INFO line of `logger`, logged at `created`: `render(entry)` gives its message and extra fields when the
        batch is written (plus `context`, fields taken when it was logged), and the formatter of this moment formats
        it (see DirectLines)."""
        self.acquire()
        try:
            self._batch.append((created, self.formatter, logger, render, entry, context))
            self._batch_chars += DEFERRED_LINE_CHARS
            if self._batch_chars >= self.max_batch_chars:
                self._write_batch()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - as emit(): reported through handleError, never raised to the caller
            self.handleError(logging.makeLogRecord({"msg": f"a line of {logger}", "levelno": logging.INFO}))
        finally:
            self.release()

    def _add(self, line: str, levelno: int) -> None:
        line += self.terminator
        self._batch.append(line)
        self._batch_chars += len(line)
        if levelno >= logging.WARNING or self._batch_chars >= self.max_batch_chars:
            self._write_batch()

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_batch()
        finally:
            self.release()

    def close(self) -> None:
        self._stopped.set()
        try:
            with contextlib.suppress(OSError, ValueError):  # the stream is gone: nothing left to write to
                self.flush()
        finally:
            super().close()

    def _write_batch(self) -> None:
        if self._batch:
            batch, self._batch, self._batch_chars = self._batch, [], 0
            text = "".join(item if type(item) is str else self._formatted(item) for item in batch)
            self.stream.write(text)
        if self.stream and hasattr(self.stream, "flush"):
            self.stream.flush()

    def _formatted(self, item: _DeferredLine) -> str:
        created, formatter, logger, render, entry, context = item
        try:
            message, fields = render(entry)
            if context is not None:
                fields = {**fields, **context}
            if type(formatter) is JsonFormatter:
                line = JsonFormatter.line(created, "INFO", logger, message, fields)
            elif type(formatter) is TextFormatter:
                line = formatter.line(created, "INFO", logger, message)
            else:  # any other formatter gets the record logging would have made
                record = logging.makeLogRecord({**fields, "name": logger, "msg": message, "created": created})
                record.levelno, record.levelname = logging.INFO, "INFO"
                record.msecs = int((created - int(created)) * 1000) + 0.0
                line = (formatter or logging.Formatter()).format(record)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - one line that cannot be formatted must not cost the batch
            self.handleError(logging.makeLogRecord({"msg": f"a line of {logger}", "levelno": logging.INFO}))
            return ""
        return line + self.terminator

    def _flush_every_interval(self) -> None:
        while not self._stopped.wait(self.flush_seconds):
            # A closed or broken stderr: the next emit() reports it through handleError.
            if self._batch:
                with contextlib.suppress(OSError, ValueError):
                    self.flush()


class DirectLines:
    """Puts one logger's INFO lines straight into the process's batching handler, skipping the LogRecord and the
    logging machinery around it (most of an access line's cost). The handler formats each line as its formatter
    would format the record, when it writes the batch: so the request that logged it pays only for a tuple.

    Only while logging is set up as configure_logging left it: the logger has no handlers or filters of its own
    and propagates to the root, whose only handler is a BatchingStreamHandler with our formatter and filter. Any
    other set-up (a handler added by an operator, pytest's caplog) makes write() return False, and the caller
    logs the usual way. Checked on every line, so a change to the set-up takes effect at once.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.root = logging.getLogger()

    def handler(self) -> BatchingStreamHandler | None:
        logger = self.logger
        if logger.handlers or logger.filters or not logger.propagate or logger.parent is not self.root:
            return None
        handlers = self.root.handlers
        if len(handlers) != 1:
            return None
        handler = handlers[0]
        if type(handler) is not BatchingStreamHandler or handler.level > logging.INFO:
            return None
        filters = handler.filters
        if len(filters) != 1 or type(filters[0]) not in (RequestIdFilter, TraceContextFilter):
            return None
        return handler

    def defer(self, render: Render, entry: tuple[object, ...]) -> bool:
        """One INFO line, logged now, whose message and extra fields are `render(entry)`, called later on the
        log-flush thread (so `entry` must hold only values that do not change, and the fields must carry
        `request_id` themselves). False when it must go through logging: the caller then logs it the usual way.
        The caller has checked logger.isEnabledFor(logging.INFO)."""
        handler = self.handler()
        if handler is None or type(handler.formatter) not in (TextFormatter, JsonFormatter):
            return False
        context = trace_fields() if type(handler.filters[0]) is TraceContextFilter else None
        handler.write_deferred(time.time(), self.logger.name, render, entry, context)
        return True


def log_handler(log_format: str, flush_seconds: float = 0, *, trace_ids: bool = False) -> logging.Handler:
    """The process's handler on stderr; with flush_seconds > 0, lines are written in batches; with trace_ids, each
    line logged inside a span carries its trace and span ids."""
    handler: logging.StreamHandler = (
        BatchingStreamHandler(sys.stderr, flush_seconds=flush_seconds)
        if flush_seconds > 0
        else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(TraceContextFilter() if trace_ids else RequestIdFilter())
    return handler


def configure_logging(
    level: str, log_format: str = "text", flush_seconds: float = 0, *, trace_ids: bool = False
) -> None:
    """Root logging for the whole process (uvicorn and the MCP SDK included); call before MCPServer exists."""
    logging.basicConfig(level=level, handlers=[log_handler(log_format, flush_seconds, trace_ids=trace_ids)])
    logging.getLogger("httpx").setLevel(logging.WARNING)

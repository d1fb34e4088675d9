"""OpenTelemetry tracing, on only when the standard OTEL_* variables ask for it: one server span per HTTP request.

Off (the default), nothing here is installed: no middleware, no wrapped store, no span on any request. On, the
app gets a TracerProvider with a batching processor and the chosen exporters, a SERVER span around every request
(continuing an incoming W3C `traceparent`), and a span per notes-store call. Span attributes are chosen one by one,
as the access line's fields are: never a header, query string, token, note or secret.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, StatusCode, Tracer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth.request_auth import request_auth
from settings import Settings
from tools.notes_store import Note, NotePage, NotesError, NotesStore, Owner
from web.access_log import MAX_FIELD_CHARS, MAX_PATH_CHARS, loggable
from web.metrics import KNOWN_METHODS, OTHER, route_template

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

DEFAULT_SERVICE_NAME = "mcp-oauth-resource-server"
TRACER_NAME = "mcp_oauth_resource_server"
OTLP_TRACES_PATH = "/v1/traces"  # appended to OTEL_EXPORTER_OTLP_ENDPOINT, as the OpenTelemetry spec says

Headers = list[tuple[bytes, bytes]]


def traces_exporters(
    traces_exporter: Iterable[str],
    otlp_endpoint: str = "",
    otlp_traces_endpoint: str = "",
    *,
    sdk_disabled: bool = False,
) -> tuple[str, ...]:
    """The exporters the standard variables ask for; empty means tracing is off.

    OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none win over everything (the spec); named exporters are used
    as named; with none named, an OTLP endpoint alone turns OTLP on; nothing set is off."""
    names = tuple(dict.fromkeys(name.strip().lower() for name in traces_exporter if name.strip()))
    if sdk_disabled or "none" in names:
        return ()
    if names:
        return names
    if otlp_endpoint or otlp_traces_endpoint:
        return ("otlp",)
    return ()


def exporters_of(settings: Settings) -> tuple[str, ...]:
    return traces_exporters(
        settings.otel_traces_exporter,
        settings.otel_exporter_otlp_endpoint,
        settings.otel_exporter_otlp_traces_endpoint,
        sdk_disabled=settings.otel_sdk_disabled,
    )


def otlp_traces_url(settings: Settings) -> str | None:
    """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is, else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces; None leaves the
    exporter's default (http://localhost:4318/v1/traces). Passed explicitly so a value from .env counts too."""
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    if settings.otel_exporter_otlp_endpoint:
        return settings.otel_exporter_otlp_endpoint.rstrip("/") + OTLP_TRACES_PATH
    return None


def span_exporter(name: str, settings: Settings) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()  # one JSON object per span, on stdout
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=otlp_traces_url(settings))


def tracer_provider(settings: Settings, exporters: Iterable[SpanExporter] | None = None) -> TracerProvider | None:
    """A TracerProvider exporting through a BatchSpanProcessor per exporter (those the settings name, unless
    `exporters` is given), or None when tracing is off. The SDK is imported only when tracing is on."""
    names = exporters_of(settings)
    if not names and exporters is None:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; OTEL_SERVICE_NAME (from settings, so .env counts) wins.
    resource = Resource.create({SERVICE_NAME: settings.otel_service_name} if settings.otel_service_name else {})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # server.py shuts it down, exporting the rest
    for exporter in exporters if exporters is not None else (span_exporter(name, settings) for name in names):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def start_tracing(settings: Settings) -> TracerProvider | None:
    """The process's tracer provider, installed globally (the MCP SDK's own spans use the global one) before the
    app is built; None when tracing is off. Call provider.shutdown() at exit: it exports the spans still held."""
    provider = tracer_provider(settings)
    if provider is not None:
        trace.set_tracer_provider(provider)
    return provider


class _HeaderGetter(Getter[Headers]):
    """W3C trace context from ASGI headers (names already lower-case)."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for header, value in carrier if header == name]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [header.decode("latin-1") for header, _ in carrier]


HEADER_GETTER = _HeaderGetter()


def span_name(method: str, route: str) -> str:
    """`{method} {route}` as the HTTP semantic conventions name server spans; the method alone for other paths."""
    method = method if method in KNOWN_METHODS else "HTTP"
    return method if route == OTHER else f"{method} {route}"


class TracingMiddleware:
    """Pure ASGI: a SERVER span around each HTTP request, child of the caller's `traceparent` when it sent a valid
    one. Outermost, so every log line of the request (the access line included) is written inside it. Auth outcome
    and client id come from the request's RequestAuth (auth.request_auth), read after the answer."""

    def __init__(self, app: ASGIApp, *, tracer: Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        route = route_template(path)
        attributes: dict[str, str] = {
            "http.request.method": method if method in KNOWN_METHODS else "_OTHER",
            "url.path": loggable(path, MAX_PATH_CHARS) or "",
            "url.scheme": scope.get("scheme", "http"),
        }
        if route != OTHER:
            attributes["http.route"] = route
        client = scope.get("client")
        if client:
            attributes["client.address"] = str(client[0])
        scope.setdefault("state", {})  # the dict the inner layers leave their RequestAuth in
        status = 500  # what the client gets if the app fails before answering
        parent = propagate.extract(scope["headers"], getter=HEADER_GETTER)

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracer.start_as_current_span(
            span_name(method, route),
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,  # an exception's text is not ours to publish
            set_status_on_exception=False,
        ) as span:
            try:
                await self.app(scope, receive, send_with_status)
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                raise
            finally:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(StatusCode.ERROR)
                auth = request_auth(scope)
                if auth is not None:
                    span.set_attribute("auth.outcome", auth.outcome)
                principal = auth.principal if auth is not None else None
                client_id = loggable(principal.client_id if principal is not None else None, MAX_FIELD_CHARS)
                if client_id is not None:
                    span.set_attribute("auth.client_id", client_id)


class TracedNotesStore:
    """The notes store with one CLIENT span per call (`notes.<operation>`, `db.system.name`); neither owner, note
    ids, cursors, titles nor content go into a span. Storage failures mark the span as an error; a refusal (not
    found, limit, bad input) only names its type in `error.type`. No exception text is recorded: a driver's may
    repeat a connection string."""

    def __init__(self, store: NotesStore, tracer: Tracer, *, system: str) -> None:
        self._store = store
        self._tracer = tracer
        self._system = system

    @contextlib.contextmanager
    def _span(self, operation: str) -> Iterator[None]:
        attributes = {"db.system.name": self._system, "db.operation.name": operation, "db.collection.name": "notes"}
        with self._tracer.start_as_current_span(
            f"notes.{operation}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                if not isinstance(exc, NotesError):
                    span.set_status(StatusCode.ERROR)
                raise

    async def create(self, owner: Owner, title: str, content: str) -> Note:
        with self._span("create"):
            return await self._store.create(owner, title, content)

    async def get(self, owner: Owner, note_id: str) -> Note:
        with self._span("get"):
            return await self._store.get(owner, note_id)

    async def list(self, owner: Owner, *, limit: int = 20, cursor: str | None = None) -> NotePage:
        with self._span("list"):
            return await self._store.list(owner, limit=limit, cursor=cursor)

    async def update(self, owner: Owner, note_id: str, *, title: str | None = None, content: str | None = None) -> Note:
        with self._span("update"):
            return await self._store.update(owner, note_id, title=title, content=content)

    async def delete(self, owner: Owner, note_id: str) -> None:
        with self._span("delete"):
            await self._store.delete(owner, note_id)

    async def ping(self) -> bool:
        return await self._store.ping()

    async def close(self) -> None:
        await self._store.close()

"""OpenTelemetry tracing: switched on by the standard variables only, spans through the real app, trace ids in logs."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from mcp.server._otel import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer, ProxyTracer, SpanKind, StatusCode
from starlette.testclient import TestClient

from settings import Settings, SettingsError, load_settings
from tests.support import BASE_URL, CLIENT_ID, MCP_HEADERS, FakeIdP, Signer, bearer, make_settings, rpc_body
from tools.notes_store_sqlite import SQLiteNotesStore
from web.app import build_app
from web.forwarded import ForwardedHeaders
from web.log_format import log_handler
from web.tracing import (
    DEFAULT_SERVICE_NAME,
    TracingMiddleware,
    otlp_traces_url,
    span_name,
    tracer_provider,
    traces_exporters,
)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
NOTES_SCOPES = "read:notes write:notes use:calculator"


# --- which variables switch tracing on (a pure function) -------------------------------------------------------


@pytest.mark.parametrize(
    ("exporter", "endpoint", "traces_endpoint", "disabled", "expected"),
    [
        ([], "", "", False, ()),  # nothing set: off
        ([], "http://collector:4318", "", False, ("otlp",)),  # an endpoint alone turns OTLP on
        ([], "", "http://collector:4318/v1/traces", False, ("otlp",)),
        (["none"], "http://collector:4318", "", False, ()),  # none wins over an endpoint (the spec)
        (["none"], "", "", False, ()),
        (["console"], "", "", False, ("console",)),
        (["otlp"], "", "", False, ("otlp",)),  # otlp without an endpoint: the exporter's default
        (["console"], "http://collector:4318", "", False, ("console",)),  # named exporters are used as named
        (["otlp", "console"], "", "", False, ("otlp", "console")),
        ([" Console ", "console"], "", "", False, ("console",)),
        (["otlp", "none"], "", "", False, ()),
        (["console"], "http://collector:4318", "", True, ()),  # OTEL_SDK_DISABLED wins over everything
        (["", " "], "", "", False, ()),
    ],
)
def test_which_variables_turn_tracing_on(exporter, endpoint, traces_endpoint, disabled, expected):
    assert traces_exporters(exporter, endpoint, traces_endpoint, sdk_disabled=disabled) == expected


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "expected otlp, console or none"),
        ("OTEL_TRACES_EXPORTER", "otlp,jaeger", "'jaeger'"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "expected an http:// or https:// URL"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector/v1/traces", "expected an http:// or https:// URL"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "only http/protobuf is supported"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json", "only http/protobuf is supported"),
    ],
)
def test_bad_tracing_variables_are_one_line_errors_naming_them(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=rf"^{variable}: ") as caught:
        load_settings()
    assert expected in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("endpoint", "traces_endpoint", "url"),
    [
        ("http://collector:4318", "", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "", "http://collector:4318/v1/traces"),
        ("http://collector:4318", "https://traces.example.com/custom", "https://traces.example.com/custom"),
        ("", "", None),
    ],
)
def test_otlp_traces_url(endpoint, traces_endpoint, url):
    settings = make_settings(otel_exporter_otlp_endpoint=endpoint, otel_exporter_otlp_traces_endpoint=traces_endpoint)
    assert otlp_traces_url(settings) == url


def exporters_installed(provider: TracerProvider) -> list[object]:
    processors = provider._active_span_processor._span_processors
    assert all(isinstance(processor, BatchSpanProcessor) for processor in processors)
    return [processor._batch_processor._exporter for processor in processors]


def test_tracing_off_builds_no_provider():
    assert tracer_provider(make_settings()) is None
    assert (
        tracer_provider(make_settings(otel_traces_exporter=["none"], otel_exporter_otlp_endpoint="http://c:1")) is None
    )


def test_console_exporter_and_service_name():
    provider = tracer_provider(make_settings(otel_traces_exporter=["console"], otel_service_name="notes-eu"))
    assert provider is not None
    try:
        assert [type(exporter) for exporter in exporters_installed(provider)] == [ConsoleSpanExporter]
        assert provider.resource.attributes["service.name"] == "notes-eu"
    finally:
        provider.shutdown()


def test_otlp_exporter_gets_the_endpoint_and_a_default_service_name():
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = tracer_provider(make_settings(otel_exporter_otlp_endpoint="http://127.0.0.1:9"))
    assert provider is not None
    try:
        [exporter] = exporters_installed(provider)
        assert isinstance(exporter, OTLPSpanExporter)
        assert exporter._endpoint == "http://127.0.0.1:9/v1/traces"
        assert provider.resource.attributes["service.name"] == DEFAULT_SERVICE_NAME
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    ("method", "route", "name"), [("POST", "/mcp", "POST /mcp"), ("GET", "other", "GET"), ("BREW", "/mcp", "HTTP /mcp")]
)
def test_span_names(method, route, name):
    assert span_name(method, route) == name


# --- spans through the real app ---------------------------------------------------------------------------------


class Traced:
    """The real app with tracing on, its spans kept in memory."""

    def __init__(self, client: TestClient, exporter: InMemorySpanExporter, provider: TracerProvider) -> None:
        self.client = client
        self.exporter = exporter
        self.provider = provider

    def spans(self) -> list[ReadableSpan]:
        self.provider.force_flush()
        return list(self.exporter.get_finished_spans())

    def server_spans(self) -> list[ReadableSpan]:
        return [span for span in self.spans() if span.kind is SpanKind.SERVER]

    def call(self, token: str | None, name: str, arguments: dict[str, Any], **headers: str) -> Any:
        body = rpc_body("tools/call", {"name": name, "arguments": arguments})
        auth = bearer(token) if token is not None else {}
        return self.client.post("/mcp", json=body, headers={**MCP_HEADERS, **auth, **headers})


@pytest.fixture
def traced(idp: FakeIdP) -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    settings = make_settings(otel_traces_exporter=["console"])
    provider = tracer_provider(settings, exporters=[exporter])
    assert provider is not None
    try:
        with TestClient(build_app(settings, tracer_provider=provider), base_url=BASE_URL) as client:
            yield Traced(client, exporter, provider)
    finally:
        provider.shutdown()


def attribute_values(spans: list[ReadableSpan]) -> list[str]:
    values = []
    for span in spans:
        values.append(span.name)
        values += [str(value) for value in (span.attributes or {}).values()]
        for event in span.events:
            values += [str(value) for value in (event.attributes or {}).values()]
    return values


def test_one_server_span_per_request_with_route_status_and_auth(traced: Traced, signer: Signer):
    response = traced.call(signer.token(scope=NOTES_SCOPES), "get_me", {})
    assert response.status_code == 200
    [span] = traced.server_spans()
    assert span.name == "POST /mcp"
    assert span.attributes["http.request.method"] == "POST"
    assert span.attributes["http.route"] == "/mcp"
    assert span.attributes["url.path"] == "/mcp"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["auth.outcome"] == "ok"
    assert span.attributes["auth.client_id"] == CLIENT_ID
    assert span.parent is None
    assert span.status.status_code is StatusCode.UNSET


def test_refused_requests_carry_their_outcome_and_no_client_id(traced: Traced, signer: Signer):
    assert traced.call(signer.token(aud="api://other"), "get_me", {}).status_code == 401
    assert traced.call(None, "get_me", {}).status_code == 401
    assert traced.call(signer.token(scope="read:notes"), "add_numbers", {"a": 1, "b": 2}).status_code == 403
    outcomes = [
        (span.attributes["auth.outcome"], span.attributes["http.response.status_code"])
        for span in traced.server_spans()
    ]
    assert outcomes == [("invalid_token", 401), ("missing", 401), ("insufficient_scope", 403)]
    assert "auth.client_id" not in traced.server_spans()[0].attributes


def test_query_string_stays_out_of_the_span(traced: Traced):
    traced.client.get("/healthz?token=query-secret-value")
    [span] = traced.server_spans()
    assert span.name == "GET /healthz" and span.attributes["url.path"] == "/healthz"
    assert not any("query-secret-value" in value for value in attribute_values(traced.spans()))


def test_an_incoming_traceparent_continues_its_trace(traced: Traced, signer: Signer):
    response = traced.call(signer.token(), "get_me", {}, traceparent=TRACEPARENT)
    assert response.status_code == 200
    [span] = traced.server_spans()
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None and span.parent.is_remote
    assert f"{span.parent.span_id:016x}" == PARENT_SPAN_ID


def test_without_a_traceparent_each_request_starts_its_own_trace(traced: Traced, signer: Signer):
    token = signer.token()
    traced.call(token, "get_me", {})
    traced.call(token, "get_me", {})
    first, second = traced.server_spans()
    assert first.context.trace_id != second.context.trace_id


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    traceparent=st.one_of(
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
        st.builds(
            "{}-{}-{}-{}".format,
            st.sampled_from(["00", "ff", "01", "0"]),
            st.text(alphabet="0123456789abcdefABCDEF", min_size=30, max_size=34),
            st.text(alphabet="0123456789abcdef", min_size=14, max_size=18),
            st.sampled_from(["00", "01", "zz", ""]),
        ),
    )
)
def test_any_traceparent_header_is_answered_and_a_bad_one_starts_a_new_trace(traced: Traced, traceparent: str):
    traced.exporter.clear()
    response = traced.client.get("/healthz", headers={"traceparent": traceparent})
    assert response.status_code == 200
    [span] = traced.server_spans()
    trace_id = f"{span.context.trace_id:032x}"
    if span.parent is not None:  # taken as a parent only when valid: its trace id is the header's
        assert trace_id == traceparent.split("-")[1].lower()
    assert span.context.trace_id != 0


def test_notes_calls_get_a_span_inside_the_request(traced: Traced, signer: Signer):
    token = signer.token(scope=NOTES_SCOPES)
    assert traced.call(token, "create_note", {"title": "secret title", "content": "secret content"}).status_code == 200
    assert traced.call(token, "read_note", {"note_id": "no-such-note"}).status_code == 200
    spans = traced.spans()
    server = [span for span in spans if span.kind is SpanKind.SERVER]
    notes = [span for span in spans if span.name.startswith("notes.")]
    assert [span.name for span in notes] == ["notes.create", "notes.get"]
    for note_span, server_span in zip(notes, server, strict=True):
        assert note_span.kind is SpanKind.CLIENT
        assert note_span.context.trace_id == server_span.context.trace_id
        assert note_span.parent is not None and note_span.parent.span_id == server_span.context.span_id
        assert note_span.attributes["db.system.name"] == "sqlite"
    assert "error.type" not in notes[0].attributes
    assert notes[1].attributes["error.type"] == "NoteNotFound"
    assert notes[1].status.status_code is StatusCode.UNSET  # a refusal, not a failure of the store
    values = attribute_values(spans)
    assert not any("secret" in value or "user-123" in value for value in values)


def test_no_token_in_any_span(traced: Traced, signer: Signer):
    good, bad = signer.token(scope=NOTES_SCOPES), signer.token(aud="api://other")
    traced.call(good, "get_me", {})
    traced.call(good, "create_note", {"title": "t", "content": "c"})
    traced.call(bad, "get_me", {})
    traced.client.get("/metrics", headers=bearer(good))
    values = attribute_values(traced.spans())
    assert values
    for token in (good, bad):
        for piece in (token, *token.split(".")):
            assert not any(piece in value for value in values)


# --- tracing off: nothing on the request path ---------------------------------------------------------------------


def test_with_tracing_off_no_span_is_started(idp: FakeIdP, signer: Signer, monkeypatch: pytest.MonkeyPatch):
    started: list[str] = []

    def spy(original):
        def start(self, name, *args, **kwargs):
            started.append(name)
            return original(self, name, *args, **kwargs)

        return start

    for tracer_class in (ProxyTracer, NoOpTracer):
        for method in ("start_span", "start_as_current_span"):
            monkeypatch.setattr(tracer_class, method, spy(getattr(tracer_class, method)))
    app = build_app(make_settings())
    assert not any(layer.cls is TracingMiddleware for layer in app.user_middleware)
    components = app.state.components
    assert not any(isinstance(layer, OpenTelemetryMiddleware) for layer in components.mcp.middleware)
    with TestClient(app, base_url=BASE_URL) as client:
        # The key set's fetch (a no-op span of its own, once, not per call) is over before the measured call.
        assert any(client.get("/readyz").status_code == 200 for _ in range(200))
        started.clear()
        body = rpc_body("tools/call", {"name": "create_note", "arguments": {"title": "t", "content": "c"}})
        response = client.post("/mcp", json=body, headers={**MCP_HEADERS, **bearer(signer.token(scope=NOTES_SCOPES))})
        assert response.status_code == 200 and response.json()["result"]["isError"] is False
    assert started == []


def test_with_tracing_on_the_middleware_is_outermost_after_the_forwarded_headers(traced: Traced):
    """Only the layer that believes X-Forwarded-For comes first: the span records the client it names."""
    app = traced.client.app
    layers = [layer.cls for layer in app.user_middleware]  # type: ignore[attr-defined]
    assert layers[:2] == [ForwardedHeaders, TracingMiddleware]
    assert isinstance(app.state.components.store, SQLiteNotesStore)  # type: ignore[attr-defined]


# --- trace ids in JSON log lines -----------------------------------------------------------------------------------


@contextlib.contextmanager
def json_logs(flush_seconds: float, *, trace_ids: bool) -> Iterator[io.StringIO]:
    """The root logger as configure_logging leaves it, writing JSON to a string (entered in the test itself: pytest
    adds its own handlers to the root around each test's body, which would send lines through logging)."""
    stream = io.StringIO()
    handler = log_handler("json", flush_seconds, trace_ids=trace_ids)
    handler.setStream(stream)  # type: ignore[attr-defined]
    root, test_client_log = logging.getLogger(), logging.getLogger("httpx2")
    saved = root.handlers[:], root.level, test_client_log.level
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    test_client_log.setLevel(logging.WARNING)
    try:
        yield stream
        handler.flush()
    finally:
        root.handlers = saved[0]
        root.setLevel(saved[1])
        test_client_log.setLevel(saved[2])
        handler.close()


def request_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if "request_id" in line]


@pytest.mark.parametrize("flush_seconds", [0, 30], ids=["each-line", "batched"])
def test_json_lines_of_a_request_carry_its_trace_and_span_ids(traced: Traced, signer: Signer, flush_seconds):
    bad = signer.token(aud="api://other")
    with json_logs(flush_seconds, trace_ids=True) as stream:
        traced.call(bad, "get_me", {}, traceparent=TRACEPARENT)  # a refusal line (auth) and the access line
    lines = request_lines(stream)
    assert {line["logger"] for line in lines} >= {"access", "auth.middleware"}
    [span] = traced.server_spans()
    for line in lines:
        assert line["trace_id"] == TRACE_ID
        assert line["span_id"] == f"{span.context.span_id:016x}"
        assert len(line["span_id"]) == 16


def test_lines_outside_a_request_carry_no_trace_ids(traced: Traced):
    with json_logs(0, trace_ids=True) as stream:
        logging.getLogger("outside").warning("not in a request")
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert "trace_id" not in line and "span_id" not in line


@pytest.mark.parametrize("flush_seconds", [0, 30], ids=["each-line", "batched"])
def test_with_tracing_off_json_lines_carry_no_trace_ids(client: TestClient, signer: Signer, flush_seconds):
    with json_logs(flush_seconds, trace_ids=False) as stream:
        body = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
        headers = {**MCP_HEADERS, **bearer(signer.token(aud="api://other")), "traceparent": TRACEPARENT}
        assert client.post("/mcp", json=body, headers=headers).status_code == 401
    lines = request_lines(stream)
    assert lines and all("trace_id" not in line and "span_id" not in line for line in lines)


def test_settings_fields_are_the_standard_variable_names():
    names = {name.upper() for name in Settings.model_fields if name.startswith("otel_")}
    assert names == {
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_SERVICE_NAME",
    }

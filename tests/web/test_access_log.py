"""One access line per request: its fields, the request id, JSON output, and nothing secret in any log line."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from auth.tooling.dev_issuer import DevIssuer
from tests.support import BASE_URL, CLIENT_ID, SERVER_URL, FakeIdP, Signer, bearer, make_settings, rpc_body
from tests.support import MCP_HEADERS as JSON_HEADERS
from web.access_log import MAX_PATH_CHARS, AccessLog, access_line, incoming_request_id, loggable
from web.app import build_app
from web.log_format import REQUEST_ID, JsonFormatter, RequestIdFilter, log_handler
from web.metrics import Metrics

GET_ME = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
NOTE_CONTENT = "the combination is 12-34-56, tell no one"
DEV_SECRET = "dev-secret-for-the-log-test-9f3b"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "access"]


def only_access_record(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    records = access_records(caplog)
    assert len(records) == 1, [record.getMessage() for record in records]
    return records[0]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


@pytest.fixture
def scoped_client(idp: FakeIdP) -> Iterator[TestClient]:
    """The default tool scopes apply: the calculator needs use:calculator, notes read:/write:notes."""
    with TestClient(build_app(make_settings()), base_url=BASE_URL) as test_client:
        yield test_client


# --- the access line --------------------------------------------------------------------------------------------


def test_an_authenticated_call_is_one_line_with_its_caller(client, signer, logs):
    logs.clear()
    response = client.post("/mcp?trace=yes", json=GET_ME, headers={**JSON_HEADERS, **bearer(signer.token())})
    assert response.status_code == 200

    record = only_access_record(logs)
    assert (record.method, record.path, record.status) == ("POST", "/mcp", 200)
    assert isinstance(record.duration_ms, float) and record.duration_ms >= 0
    assert (record.auth, record.subject, record.client_id) == ("ok", "user-123", CLIENT_ID)
    assert record.client == "testclient"
    assert record.request_id == response.headers["x-request-id"]
    message = record.getMessage()
    assert message.startswith("POST /mcp 200 ")
    assert "auth=ok subject=user-123 client_id=client-abc" in message
    assert "trace" not in message  # never the query string


@pytest.mark.parametrize(
    ("make_request", "status", "outcome"),
    [
        (lambda c, s: c.get("/healthz"), 200, "not_required"),
        (lambda c, s: c.get("/.well-known/oauth-protected-resource/mcp"), 200, "not_required"),
        (lambda c, s: c.post("/mcp", json=GET_ME, headers=JSON_HEADERS), 401, "missing"),
        (
            lambda c, s: c.post("/mcp", json=GET_ME, headers={**JSON_HEADERS, **bearer("not.a.jwt")}),
            401,
            "invalid_token",
        ),
        (
            lambda c, s: c.post("/mcp", json=GET_ME, headers={**JSON_HEADERS, **bearer(s.token(aud="api://other"))}),
            401,
            "invalid_token",
        ),
        (
            lambda c, s: c.post(
                "/mcp",
                json=rpc_body("tools/call", {"name": "add_numbers", "arguments": {"a": 1, "b": 2}}),
                headers={**JSON_HEADERS, **bearer(s.token())},
            ),
            403,
            "insufficient_scope",
        ),
        (lambda c, s: c.post("/mcp", json=GET_ME, headers={**JSON_HEADERS, "Host": "evil.example"}), 421, "forbidden"),
        (
            lambda c, s: c.post("/mcp", json=GET_ME, headers={**JSON_HEADERS, "Origin": "https://evil.example"}),
            403,
            "forbidden",
        ),
        (
            lambda c, s: c.post(
                "/mcp",
                json=GET_ME,
                headers=[*JSON_HEADERS.items(), ("Authorization", "Bearer a"), ("Authorization", "Bearer b")],
            ),
            400,
            "invalid_request",
        ),
    ],
)
def test_the_auth_outcome_is_logged(scoped_client, signer, logs, make_request, status, outcome):
    logs.clear()
    assert make_request(scoped_client, signer).status_code == status
    record = only_access_record(logs)
    assert (record.status, record.auth) == (status, outcome)
    if outcome == "insufficient_scope":  # authenticated, then refused by the scope gate: the caller is known
        assert (record.subject, record.client_id) == ("user-123", CLIENT_ID)
    else:
        assert record.subject is None and record.client_id is None


def test_the_path_is_logged_without_control_characters_and_bounded(client, logs):
    logs.clear()
    client.get("/%0Afake%20line?x=1")
    record = only_access_record(logs)
    assert record.path == "/?fake?line"
    assert "\n" not in record.getMessage()
    logs.clear()
    client.get("/" + "a" * 1000)
    assert only_access_record(logs).path == "/" + "a" * (MAX_PATH_CHARS - 1) + "..."


def test_a_waiting_access_entry_holds_no_more_of_the_path_than_its_line_shows():
    deferred: list[tuple[object, ...]] = []
    logger = logging.getLogger("test.access.waiting")
    logger.setLevel(logging.INFO)
    app = lambda scope, receive, send: None  # noqa: E731 - never called
    access = AccessLog(app, metrics=Metrics(), logger=logger)  # type: ignore[arg-type]
    access.direct.defer = lambda render, entry: deferred.append(entry) or True  # type: ignore[method-assign]
    scope = {"type": "http", "method": "GET", "path": "/" + "a" * 100_000, "client": ("127.0.0.1", 1)}
    access._record(scope, {}, 404, 0.001, "r-1")
    [entry] = deferred
    assert len(entry[1]) == MAX_PATH_CHARS + 1  # type: ignore[arg-type]
    assert access_line(entry)[1]["path"] == "/" + "a" * (MAX_PATH_CHARS - 1) + "..."
    assert dict(access.metrics.requests) == {("other", "GET", "404"): 1}  # type: ignore[union-attr]


def test_loggable_escapes_and_bounds():
    assert loggable("user\r\nforged=1") == "user??forged=1"
    assert loggable(None) is None
    assert loggable("x" * 500, 10) == "x" * 10 + "..."


def test_loggable_keeps_exactly_the_visible_ascii_characters():
    """The quick test for text that needs no escaping agrees with the escaping rule, character by character."""
    for code in range(0x110):
        char = chr(code)
        expected = char if 0x21 <= code <= 0x7E else "?"
        assert loggable(f"a{char}b") == f"a{expected}b", hex(code)
    assert loggable("caf\u00e9 \u2028x\x00") == "caf???x?"


# --- request ids ------------------------------------------------------------------------------------------------


def test_a_valid_request_id_is_echoed_and_logged(client, logs):
    logs.clear()
    response = client.get("/healthz", headers={"X-Request-ID": "gw-7f3a:01.b_c"})
    assert response.headers["x-request-id"] == "gw-7f3a:01.b_c"
    assert only_access_record(logs).request_id == "gw-7f3a:01.b_c"


def test_a_request_id_is_generated_when_none_is_sent(client, logs):
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert GENERATED_ID.fullmatch(first) and GENERATED_ID.fullmatch(second)
    assert first != second


@pytest.mark.parametrize("sent", ["a" * 129, "id with spaces", "<script>", 'quote"d', "semi;colon", "é-accent", ""])
def test_an_unsafe_request_id_is_replaced(client, logs, sent):
    logs.clear()
    response = client.get("/healthz", headers={"X-Request-ID": sent.encode("utf-8")})
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])
    assert only_access_record(logs).request_id == response.headers["x-request-id"]


def test_refusals_carry_the_request_id_too(client, logs):
    response = client.post("/mcp", json=GET_ME, headers={**JSON_HEADERS, "X-Request-ID": "req-401"})
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "req-401"
    assert response.headers.get_list("x-request-id") == ["req-401"]


def test_incoming_request_id_takes_the_first_header():
    assert incoming_request_id([(b"x-request-id", b"one"), (b"x-request-id", b"two")]) == "one"
    assert incoming_request_id([(b"x-other", b"one")]) is None
    assert incoming_request_id([(b"x-request-id", b"a" * 128)]) == "a" * 128


def test_the_filter_tags_records_with_the_current_request_id():
    record = logging.getLogger("x").makeRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    context = REQUEST_ID.set("req-9")
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(context)
    assert record.request_id == "req-9"


# --- JSON output ------------------------------------------------------------------------------------------------


@pytest.fixture
def json_log(idp: FakeIdP) -> Iterator[io.StringIO]:
    """Every log line of the process, formatted as the server does with LOG_FORMAT=json."""
    stream = io.StringIO()
    handler = log_handler("json")
    handler.setStream(stream)
    root, test_client_log = logging.getLogger(), logging.getLogger("httpx2")
    previous = root.level, test_client_log.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # The in-process test client's own request lines (full URLs) are not the server's log.
    test_client_log.setLevel(logging.WARNING)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous[0])
        test_client_log.setLevel(previous[1])


def json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_format_is_one_object_per_line(client, signer, json_log):
    response = client.post(
        "/mcp", json=GET_ME, headers={**JSON_HEADERS, **bearer(signer.token()), "X-Request-ID": "json-1"}
    )
    assert response.status_code == 200
    entries = json_lines(json_log)
    access = [entry for entry in entries if entry["logger"] == "access"]
    assert len(access) == 1
    entry = access[0]
    assert {"time", "level", "logger", "message"} <= set(entry)
    assert entry["level"] == "INFO"
    assert entry["time"].endswith("+00:00")
    assert entry["method"] == "POST" and entry["path"] == "/mcp" and entry["status"] == 200
    assert entry["auth"] == "ok" and entry["subject"] == "user-123" and entry["client_id"] == CLIENT_ID
    assert entry["request_id"] == "json-1"
    assert isinstance(entry["duration_ms"], float)


def test_json_lines_logged_inside_a_request_carry_its_id(client, json_log):
    client.post("/mcp", json=GET_ME, headers={**JSON_HEADERS, **bearer("not.a.jwt"), "X-Request-ID": "corr-2"})
    refusals = [entry for entry in json_lines(json_log) if entry["logger"] == "auth.middleware"]
    assert refusals and all(entry["request_id"] == "corr-2" for entry in refusals)


def test_json_formatter_keeps_extra_fields_and_exceptions():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info(), extra={"tool": "get_me"}
        )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed here"
    assert entry["tool"] == "get_me"
    assert "ValueError: boom" in entry["exception"]
    assert "msg" not in entry and "args" not in entry


# --- nothing secret ---------------------------------------------------------------------------------------------


def test_no_token_secret_or_note_content_in_any_log_line(idp: FakeIdP, signer: Signer, json_log, caplog):
    caplog.set_level(logging.DEBUG, logger="access")
    issuer = DevIssuer(
        issuer=f"{BASE_URL}/dev-issuer",
        audience=SERVER_URL,
        scopes=["read:notes", "write:notes"],
        client_id="dev-client",
        client_secret=DEV_SECRET,
    )
    good = signer.token(scope="read:notes write:notes")
    bad = signer.token(aud="api://someone-else")
    create = rpc_body("tools/call", {"name": "create_note", "arguments": {"title": "t", "content": NOTE_CONTENT}})
    with TestClient(build_app(make_settings(), dev_issuer=issuer), base_url=BASE_URL) as client:
        assert client.post("/mcp", json=create, headers={**JSON_HEADERS, **bearer(good)}).status_code == 200
        assert client.post("/mcp", json=GET_ME, headers={**JSON_HEADERS, **bearer(bad)}).status_code == 401
        assert client.post(f"/mcp?access_token={good}", json=GET_ME, headers=JSON_HEADERS).status_code == 401
        token_url = f"/dev-issuer/token?client_secret={DEV_SECRET}"
        form = {"grant_type": "client_credentials"}
        assert client.post(token_url, data=form, auth=("dev-client", DEV_SECRET)).status_code == 200
        assert client.post("/dev-issuer/token", data=form, auth=("dev-client", DEV_SECRET + "x")).status_code == 401

    server_records = [record for record in caplog.records if not record.name.startswith("httpx2")]
    captured = json_log.getvalue() + "\n".join(f"{record.getMessage()} {vars(record)}" for record in server_records)
    assert "access" in captured and "/dev-issuer/token" in captured  # the lines were really captured
    for secret in (*good.split("."), *bad.split("."), DEV_SECRET, NOTE_CONTENT, "12-34-56"):
        assert secret not in captured
    assert "Bearer" not in captured and "Basic " not in captured

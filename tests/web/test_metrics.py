"""GET /metrics: counters that move with known requests, the exposition format, and who may scrape."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from starlette.testclient import TestClient

from settings import SettingsError, load_settings
from tests.support import (
    BASE_URL,
    ISSUER,
    MCP_HEADERS,
    FakeIdP,
    Signer,
    bearer,
    make_settings,
    parse_mcp_response,
    rpc_body,
)
from tools.notes_store_sqlite import SQLiteNotesStore
from web.app import build_app, pool_stats_of
from web.metrics import Histogram, Metrics, exposition, metrics_registry, route_template

METRICS_TOKEN = "scrape-token-0123456789abcdef"
SCRAPE = bearer(METRICS_TOKEN)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def wait_until(condition: Callable[[], bool], *, attempts: int = 200, pause: float = 0.01) -> None:
    for _ in range(attempts):
        if condition():
            return
        time.sleep(pause)
    raise AssertionError("condition not reached in time")


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples by (name, labels); every line must be a comment or a well-formed sample."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = _SAMPLE.match(line)
        assert match, f"malformed exposition line: {line!r}"
        name, labels, value = match.groups()
        key = (name, frozenset(_LABEL.findall(labels or "")))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def call_tool(client: TestClient, token: str, name: str, arguments: dict) -> tuple[int, dict | None]:
    body = rpc_body("tools/call", {"name": name, "arguments": arguments})
    response = client.post("/mcp", json=body, headers={**MCP_HEADERS, **bearer(token)})
    result = parse_mcp_response(response).get("result") if response.status_code == 200 else None
    return response.status_code, result


@pytest.fixture
def client(idp: FakeIdP) -> Iterator[TestClient]:
    settings = make_settings(metrics_token=METRICS_TOKEN)
    with TestClient(build_app(settings), base_url=BASE_URL) as test_client:
        yield test_client


def scrape(client: TestClient) -> dict:
    response = client.get("/metrics", headers=SCRAPE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse_exposition(response.text)


# --- counters through the real app --------------------------------------------------------------------------------


def test_counters_move_with_known_requests(client, signer: Signer):
    before = scrape(client)
    full = signer.token(scope="use:calculator read:notes write:notes")
    assert call_tool(client, full, "get_me", {})[1]["isError"] is False
    status, result = call_tool(client, full, "divide_numbers", {"a": 1.0, "b": 0.0})
    assert status == 200 and result["isError"] is True
    assert call_tool(client, signer.token(scope="read:notes"), "add_numbers", {"a": 1.0, "b": 2.0})[0] == 403
    assert call_tool(client, signer.token(aud="api://other"), "get_me", {})[0] == 401
    assert client.post("/mcp", json=rpc_body("tools/list"), headers=MCP_HEADERS).status_code == 401
    assert client.get("/healthz").status_code == 200
    foreign_host = {**MCP_HEADERS, "Host": "x.test"}
    assert client.post("/mcp", json=rpc_body("tools/list"), headers=foreign_host).status_code == 421
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "mcp_http_requests_total"
    assert moved(requests, route="/mcp", method="POST", status="200") == 2
    assert moved(requests, route="/mcp", method="POST", status="403") == 1
    assert moved(requests, route="/mcp", method="POST", status="401") == 2
    assert moved(requests, route="/mcp", method="POST", status="421") == 1
    assert moved(requests, route="/healthz", method="GET", status="200") == 1
    assert moved(requests, route="/metrics", method="GET", status="200") == 1  # the first scrape
    assert moved("mcp_http_request_duration_seconds_count", route="/mcp") == 6

    auth = "mcp_auth_outcomes_total"
    assert moved(auth, outcome="ok", issuer=ISSUER) == 2
    assert moved(auth, outcome="insufficient_scope", issuer=ISSUER) == 1
    assert moved(auth, outcome="invalid_token", issuer=ISSUER) == 1
    assert moved(auth, outcome="missing", issuer="none") == 1
    assert moved(auth, outcome="forbidden", issuer="none") == 1
    assert moved(auth, outcome="not_required", issuer="none") == 2  # /healthz and the first scrape

    tools = "mcp_tool_calls_total"
    assert moved(tools, tool="get_me", outcome="ok") == 1
    assert moved(tools, tool="divide_numbers", outcome="tool_error") == 1
    assert moved(tools, tool="add_numbers", outcome="refused") == 1
    assert moved(tools, tool="add_numbers", outcome="ok") == 0


def test_unknown_tool_names_share_one_label(client, signer: Signer):
    token = signer.token()
    for name in ("no_such_tool", 'another\nmade-up"name'):
        status, result = call_tool(client, token, name, {})
        assert status == 200 and result["isError"] is True
    samples = scrape(client)
    assert value(samples, "mcp_tool_calls_total", tool="unknown", outcome="tool_error") == 2
    assert not any("made-up" in str(labels) for _, labels in samples)


def test_invented_paths_share_one_route_label(client):
    for path in ("/a", "/b/c", "/.well-known/x", "/mcp/"):
        client.get(path)
    samples = scrape(client)
    routes = {dict(labels).get("route") for name, labels in samples if name == "mcp_http_requests_total"}
    assert routes <= {"/mcp", "/healthz", "/readyz", "/metrics", "other", "/.well-known/oauth-protected-resource"}
    assert value(samples, "mcp_http_requests_total", route="other", method="GET", status="401") >= 3


def test_jwks_fetches_and_key_set_age_are_reported(client, idp: FakeIdP, signer: Signer):
    assert call_tool(client, signer.token(), "get_me", {})[0] == 200
    samples = scrape(client)
    assert value(samples, "mcp_jwks_fetches_total", issuer=ISSUER) == idp.jwks_fetches >= 1
    assert value(samples, "mcp_jwks_fetch_failures_total", issuer=ISSUER) == 0
    assert value(samples, "mcp_jwks_keys", issuer=ISSUER) == 1
    assert value(samples, "mcp_jwks_ready", issuer=ISSUER) == 1
    assert 0 <= value(samples, "mcp_jwks_age_seconds", issuer=ISSUER) < 60


def test_key_set_age_is_nan_before_the_first_fetch(idp: FakeIdP):
    idp.jwks_route.mock(side_effect=httpx.ConnectError("IdP unreachable"))
    app = build_app(make_settings(metrics_token=METRICS_TOKEN))
    with TestClient(app, base_url=BASE_URL) as client:
        wait_until(lambda: app.state.components.keys.failure_count >= 1)
        samples = scrape(client)
    assert math.isnan(value(samples, "mcp_jwks_age_seconds", issuer=ISSUER))
    assert value(samples, "mcp_jwks_ready", issuer=ISSUER) == 0
    assert value(samples, "mcp_jwks_fetch_failures_total", issuer=ISSUER) >= 1


# --- who may scrape -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789abcdef", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x", "Bearer"],
)
def test_with_a_metrics_token_anything_else_is_401(client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert "mcp_http_requests_total" not in response.text


def test_the_metrics_token_scheme_is_case_insensitive(client):
    assert client.get("/metrics", headers={"Authorization": f"bearer {METRICS_TOKEN}"}).status_code == 200


def test_an_idp_token_does_not_open_metrics(client, signer: Signer):
    assert client.get("/metrics", headers=bearer(signer.token())).status_code == 401


@pytest.mark.parametrize(
    ("peer", "headers", "status"),
    [
        (("127.0.0.1", 40000), {}, 200),
        (("::1", 40000), {}, 200),
        (("127.0.0.1", 40000), {"X-Forwarded-For": "203.0.113.9"}, 403),
        (("127.0.0.1", 40000), {"Forwarded": "for=203.0.113.9"}, 403),
        (("10.1.2.3", 40000), {}, 403),
        (("testclient", 50000), {}, 403),
    ],
)
def test_without_a_metrics_token_only_direct_loopback_peers_may_scrape(idp: FakeIdP, peer, headers, status):
    with TestClient(build_app(make_settings()), base_url=BASE_URL, client=peer) as client:
        response = client.get("/metrics", headers=headers)
    assert response.status_code == status
    if status == 200:
        assert "# TYPE mcp_http_requests_total counter" in response.text


def test_metrics_are_not_behind_the_host_guard(client):
    assert client.get("/metrics", headers={**SCRAPE, "Host": "10.0.0.7:8000"}).status_code == 200


def test_metrics_token_setting(monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN", "short")
    with pytest.raises(SettingsError, match=r"^METRICS_TOKEN: expected at least 16 characters") as caught:
        load_settings()
    assert "short" not in str(caught.value)
    monkeypatch.setenv("METRICS_TOKEN", "  ")
    assert load_settings().metrics_token is None
    monkeypatch.setenv("METRICS_TOKEN", METRICS_TOKEN)
    settings = load_settings()
    assert settings.metrics_token == SecretStr(METRICS_TOKEN)
    assert METRICS_TOKEN not in repr(settings)


# --- the exposition format ----------------------------------------------------------------------------------------


def test_histogram_buckets_are_cumulative_and_end_with_inf():
    histogram = Histogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(seconds)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert histogram.count == 4 and histogram.sum == pytest.approx(3.65)


def render(metrics: Metrics, accept: str | None = None) -> str:
    body, _ = exposition(metrics_registry(metrics), accept)
    return body.decode()


def test_render_escapes_label_values_and_parses_back():
    metrics = Metrics(tool_names=['odd"tool\\name\nx'])
    metrics.observe_tool_call('odd"tool\\name\nx', "ok")
    metrics.observe_request(path="/mcp", method="BREW", status=418, seconds=0.2, auth=None)
    text = render(metrics)
    assert 'tool="odd\\"tool\\\\name\\nx"' in text
    samples = parse_exposition(text)
    assert value(samples, "mcp_http_requests_total", route="/mcp", method="other", status="418") == 1
    assert value(samples, "mcp_http_request_duration_seconds_bucket", route="/mcp", le="0.25") == 1
    assert value(samples, "mcp_http_request_duration_seconds_bucket", route="/mcp", le="0.1") == 0
    assert text.endswith("\n")
    for family in ("mcp_http_requests_total", "mcp_auth_outcomes_total", "mcp_tool_calls_total"):
        assert f"# TYPE {family} counter" in text
    assert "# TYPE mcp_http_request_duration_seconds histogram" in text


def test_exposition_parses_with_prometheus_client(client, signer: Signer):
    assert call_tool(client, signer.token(), "get_me", {})[0] == 200
    text = client.get("/metrics", headers=SCRAPE).text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["mcp_http_requests"].type == "counter"
    assert families["mcp_http_request_duration_seconds"].type == "histogram"
    assert families["mcp_jwks_age_seconds"].type == "gauge"
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for sample in families["mcp_tool_calls"].samples
    }
    assert samples[("mcp_tool_calls_total", (("outcome", "ok"), ("tool", "get_me")))] == 1
    # prometheus-client's default collectors, on this app's own registry
    assert families["process_cpu_seconds"].type == "counter"
    assert "process_resident_memory_bytes" in families
    assert "python_gc_collections" in families
    assert "python_info" in families
    buckets = [s for s in families["mcp_http_request_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert buckets and all(s.labels["le"] for s in buckets)


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(client):
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = client.get("/metrics", headers={**SCRAPE, "Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.text.endswith("# EOF\n")
    assert "# TYPE mcp_http_requests counter" in response.text


def test_two_apps_in_one_process_keep_their_own_registries(idp: FakeIdP, signer: Signer):
    settings = make_settings(metrics_token=METRICS_TOKEN)
    with (
        TestClient(build_app(settings), base_url=BASE_URL) as first,
        TestClient(build_app(settings), base_url=BASE_URL) as second,
    ):
        assert call_tool(first, signer.token(), "get_me", {})[0] == 200
        assert value(scrape(first), "mcp_tool_calls_total", tool="get_me", outcome="ok") == 1
        assert value(scrape(second), "mcp_tool_calls_total", tool="get_me", outcome="ok") == 0


# --- pool gauges (the PostgreSQL notes store's statistics, through a callable) ----------------------------------


def test_pool_statistics_become_gauges():
    stats = {"pool_size": 4, "pool_available": 3, "requests_waiting": 0, "usage_ms": 12.5}
    text = render(Metrics(pool_stats=lambda: stats))
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name, expected in stats.items():
        family = families[f"mcp_notes_db_pool_{name}"]
        assert family.type == "gauge"
        assert family.samples[0].value == expected


def test_pool_statistics_are_read_at_each_scrape():
    stats = {"pool_available": 1}
    metrics = Metrics(pool_stats=lambda: stats)
    registry = metrics_registry(metrics)
    assert registry.get_sample_value("mcp_notes_db_pool_pool_available") == 1
    stats["pool_available"] = 7
    assert registry.get_sample_value("mcp_notes_db_pool_pool_available") == 7


def test_pool_statistics_with_odd_names_or_values_are_left_out():
    stats = {"Bad-Name": 1, "password=x": 2, "ok": 3, "flag": True, "text": "3", "": 4}
    samples = parse_exposition(render(Metrics(pool_stats=lambda: stats)))
    pool = {name for name, _ in samples if name.startswith("mcp_notes_db_pool_")}
    assert pool == {"mcp_notes_db_pool_ok"}


def test_a_failing_pool_callable_costs_only_the_pool_gauges(caplog):
    secret_url = "postgresql://app:hunter2-secret@db.internal/notes"

    def broken() -> dict[str, float]:
        raise RuntimeError(f"connection to {secret_url} failed")

    metrics = Metrics(tool_names=["get_me"], pool_stats=broken)
    metrics.observe_tool_call("get_me", "ok")
    with caplog.at_level("WARNING"):
        text = render(metrics)
    assert "mcp_notes_db_pool_" not in text
    assert value(parse_exposition(text), "mcp_tool_calls_total", tool="get_me", outcome="ok") == 1
    assert "hunter2" not in caplog.text and "RuntimeError" in caplog.text


def test_without_a_pool_callable_there_are_no_pool_gauges():
    assert "mcp_notes_db_pool_" not in render(Metrics())


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/mcp", "/mcp"),
        ("/mcp/", "other"),
        ("/healthz", "/healthz"),
        ("/readyz", "/readyz"),
        ("/metrics", "/metrics"),
        ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource"),
        ("/.well-known/oauth-protected-resource/team-a/mcp", "/.well-known/oauth-protected-resource"),
        ("/.well-known/openid-configuration", "/.well-known/openid-configuration"),
        ("/.well-known/oauth-protected-resourcex", "other"),
        ("/dev-issuer/token", "/dev-issuer"),
        ("/favicon.ico", "other"),
    ],
)
def test_route_templates(path, route):
    assert route_template(path) == route


def test_request_observations_are_counted_at_once():
    metrics = Metrics()
    for index in range(3):
        metrics.observe_request(path="/mcp", method="POST", status=200, seconds=0.001 * index, auth="ok")
        assert sum(metrics.requests.values()) == index + 1
    samples = parse_exposition(render(metrics))
    assert value(samples, "mcp_http_requests_total", route="/mcp", method="POST", status="200") == 3
    assert value(samples, "mcp_http_request_duration_seconds_count", route="/mcp") == 3
    assert value(samples, "mcp_auth_outcomes_total", outcome="ok", issuer="none") == 3


def test_a_store_with_a_pool_reports_its_statistics_and_sqlite_does_not(tmp_path):
    class PooledStore:
        def pool_stats(self) -> dict[str, float]:
            return {"pool_size": 2}

    stats = pool_stats_of(PooledStore())
    assert stats is not None and stats() == {"pool_size": 2}
    assert pool_stats_of(SQLiteNotesStore(tmp_path / "notes.db")) is None

"""Request, auth, tool and JWKS counters in plain dicts, exposed to prometheus-client by one custom collector."""

from __future__ import annotations

import bisect
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNKNOWN_TOOL = "unknown"
OTHER = "other"
NO_ISSUER = "none"  # the issuer label of an outcome no bearer check judged
BINDINGS = frozenset({"bearer", "dpop", "mtls"})  # auth.binding; a bounded label set
POOL_GAUGE_PREFIX = "mcp_notes_db_pool_"
_METRIC_NAME_PART = re.compile(r"[a-z][a-z0-9_]{0,62}")

# Route templates: exact paths, then prefixes. Labels stay few whatever paths clients invent.
_EXACT_ROUTES = ("/mcp", "/healthz", "/readyz", "/metrics")
_PREFIX_ROUTES = (
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/dev-issuer",
)

# Statistics of the notes store's connection pool at scrape time, by name (e.g. psycopg_pool's get_stats()).
PoolStats = Callable[[], Mapping[str, float]]

logger = logging.getLogger(__name__)


class KeySetStats(Protocol):
    """What the metrics read from the JWKS cache at scrape time."""

    fetch_count: int
    failure_count: int

    @property
    def age(self) -> float | None: ...

    @property
    def ready(self) -> bool: ...

    @property
    def key_count(self) -> int: ...


def route_template(path: str) -> str:
    """The label for a request path: one of a fixed set, never the raw path."""
    if path in _EXACT_ROUTES:
        return path
    for prefix in _PREFIX_ROUTES:
        if path == prefix or path.startswith(prefix + "/"):
            return prefix
    return OTHER


class Histogram:
    """Observation counts per bucket (not cumulative until rendered), their sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        running, rows = 0, []
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            rows.append((bound, running))
        return rows


class Metrics:
    """The process's counters. Single event loop, so plain dict increments need no lock; prometheus-client reads
    them only at scrape time (MetricsCollector), so a request pays for a few dict updates and nothing else."""

    def __init__(
        self,
        *,
        key_sets: Mapping[str, KeySetStats] | None = None,
        tool_names: Iterable[str] = (),
        pool_stats: PoolStats | None = None,
    ) -> None:
        self.key_sets = dict(key_sets or {})  # by configured issuer
        self.tool_names = frozenset(tool_names)
        self.pool_stats = pool_stats
        self.requests: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.durations: dict[str, Histogram] = {}
        # (outcome, issuer): the issuer is a configured one, "other" or "none" (RequestAuth.issuer), so bounded
        self.auth_outcomes: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.auth_bindings: defaultdict[tuple[str, str], int] = defaultdict(int)  # (binding, outcome)
        self.tool_calls: defaultdict[tuple[str, str], int] = defaultdict(int)

    def observe_request(
        self,
        *,
        path: str,
        method: str,
        status: int,
        seconds: float,
        auth: str | None,
        issuer: str | None = None,
        binding: str | None = None,
    ) -> None:
        route = route_template(path)
        self.requests[(route, method if method in KNOWN_METHODS else OTHER, str(status))] += 1
        histogram = self.durations.get(route)
        if histogram is None:
            histogram = self.durations[route] = Histogram(DURATION_BUCKETS)
        histogram.observe(seconds)
        if auth is not None:
            self.auth_outcomes[(auth, issuer or NO_ISSUER)] += 1
            if binding in BINDINGS:
                self.auth_bindings[(binding, auth)] += 1

    def observe_tool_call(self, tool: object, outcome: str) -> None:
        name = tool if isinstance(tool, str) and tool in self.tool_names else UNKNOWN_TOOL
        self.tool_calls[(name, outcome)] += 1


class MetricsCollector:
    """A prometheus-client collector over Metrics: families built from the counters at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self.metrics
        yield counter_family(
            "mcp_http_requests",
            "HTTP requests by route template, method and status.",
            ("route", "method", "status"),
            metrics.requests.items(),
        )
        durations = HistogramMetricFamily(
            "mcp_http_request_duration_seconds", "Time to answer an HTTP request, by route template.", labels=("route",)
        )
        for route, histogram in sorted(metrics.durations.items()):
            durations.add_metric((route,), histogram.cumulative(), histogram.sum)
        yield durations
        yield counter_family(
            "mcp_auth_outcomes",
            "Bearer authentication outcomes by reason and issuer (a configured issuer, other or none).",
            ("outcome", "issuer"),
            metrics.auth_outcomes.items(),
        )
        yield counter_family(
            "mcp_auth_bindings",
            "Authentication outcomes by how the token was presented (bearer, dpop, mtls).",
            ("binding", "outcome"),
            metrics.auth_bindings.items(),
        )
        yield counter_family(
            "mcp_tool_calls",
            "Tool calls by tool and outcome (ok, tool_error, refused).",
            ("tool", "outcome"),
            metrics.tool_calls.items(),
        )
        if metrics.key_sets:
            yield from key_set_families(metrics.key_sets)
        if metrics.pool_stats is not None:
            yield from pool_families(metrics.pool_stats)


def counter_family(
    name: str, documentation: str, labels: tuple[str, ...], counts: Iterable[tuple[tuple[str, ...], int]]
) -> CounterMetricFamily:
    """A counter family with one sample per (label values, count), sorted (a stable exposition)."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, count in sorted(counts):
        family.add_metric(values, count)
    return family


def key_set_families(key_sets: Mapping[str, KeySetStats]) -> Iterator[Metric]:
    """The JWKS gauges and counters, one sample per trusted issuer (labelled with its configured issuer)."""
    labels = ("issuer",)
    fetches = CounterMetricFamily("mcp_jwks_fetches", "JWKS fetch attempts.", labels=labels)
    failures = CounterMetricFamily("mcp_jwks_fetch_failures", "JWKS fetches that failed.", labels=labels)
    ages = GaugeMetricFamily(
        "mcp_jwks_age_seconds", "Age of the key set held (NaN before the first fetch).", labels=labels
    )
    counts = GaugeMetricFamily("mcp_jwks_keys", "Usable signing keys held.", labels=labels)
    ready = GaugeMetricFamily("mcp_jwks_ready", "1 when a usable key set is held.", labels=labels)
    for issuer, keys in key_sets.items():
        age = keys.age
        fetches.add_metric((issuer,), keys.fetch_count)
        failures.add_metric((issuer,), keys.failure_count)
        ages.add_metric((issuer,), float("nan") if age is None else age)
        counts.add_metric((issuer,), keys.key_count)
        ready.add_metric((issuer,), int(keys.ready))
    yield from (fetches, failures, ages, counts, ready)


def pool_families(pool_stats: PoolStats) -> Iterator[Metric]:
    """One gauge per statistic the store reports, `mcp_notes_db_pool_<name>`. Names that are not a plain
    lower-case identifier are left out; a failing callable costs the pool gauges of this scrape, not the scrape."""
    try:
        stats = dict(pool_stats())
    except Exception as exc:  # noqa: BLE001 - a driver error may repeat the database URL: its type only
        logger.warning("notes database pool statistics unavailable: %s", type(exc).__name__)
        return
    for name, value in sorted(stats.items()):
        if not (isinstance(name, str) and _METRIC_NAME_PART.fullmatch(name)):
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        yield GaugeMetricFamily(
            POOL_GAUGE_PREFIX + name, f"Notes database connection pool: {name}, as the pool reports it.", value=value
        )


def metrics_registry(metrics: Metrics) -> CollectorRegistry:
    """A registry of this app's own (not prometheus-client's global one, so several apps in one process do not
    clash): the counters above plus the default process, platform and GC collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(MetricsCollector(metrics))
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The registry in the format the scraper asked for (Accept: OpenMetrics or text), and its content type;
    the Prometheus text format 0.0.4 by default."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type

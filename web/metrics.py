"""Request, auth, tool and JWKS counters in plain dicts, rendered in the Prometheus text format."""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNKNOWN_TOOL = "unknown"
PENDING_REQUESTS = 256  # request observations held before they are counted (render() counts them too)
OTHER = "other"

# Route templates: exact paths, then prefixes. Labels stay few whatever paths clients invent.
_EXACT_ROUTES = ("/mcp", "/healthz", "/readyz", "/metrics")
_PREFIX_ROUTES = (
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/dev-issuer",
)


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
        for bound, count in zip((*map(_number, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            rows.append((bound, running))
        return rows


class Metrics:
    """The process's counters. Single event loop, so plain dict increments need no lock."""

    def __init__(self, *, keys: KeySetStats | None = None, tool_names: Iterable[str] = ()) -> None:
        self.keys = keys
        self.tool_names = frozenset(tool_names)
        self.requests: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self.durations: dict[str, Histogram] = {}
        self.auth_outcomes: defaultdict[str, int] = defaultdict(int)
        self.tool_calls: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._pending: list[tuple[str, str, int, float, str | None]] = []

    def observe_request(self, *, path: str, method: str, status: int, seconds: float, auth: str | None) -> None:
        """Kept as it is and counted with the next ones (PENDING_REQUESTS at a time, or at the next render()):
        many counted in a row cost less than each at the end of its own request."""
        self._pending.append((path, method, status, seconds, auth))
        if len(self._pending) >= PENDING_REQUESTS:
            self._count_pending()

    def _count_pending(self) -> None:
        pending, self._pending = self._pending, []
        requests, durations, auth_outcomes = self.requests, self.durations, self.auth_outcomes
        for path, method, status, seconds, auth in pending:
            route = route_template(path)
            requests[(route, method if method in KNOWN_METHODS else OTHER, str(status))] += 1
            histogram = durations.get(route)
            if histogram is None:
                histogram = durations[route] = Histogram(DURATION_BUCKETS)
            histogram.observe(seconds)
            if auth is not None:
                auth_outcomes[auth] += 1

    def observe_tool_call(self, tool: object, outcome: str) -> None:
        name = tool if isinstance(tool, str) and tool in self.tool_names else UNKNOWN_TOOL
        self.tool_calls[(name, outcome)] += 1

    def render(self) -> str:
        self._count_pending()
        lines: list[str] = []
        _family(lines, "mcp_http_requests_total", "counter", "HTTP requests by route template, method and status.")
        for (route, method, status), value in sorted(self.requests.items()):
            labels = {"route": route, "method": method, "status": status}
            lines.append(_sample("mcp_http_requests_total", labels, value))
        name = "mcp_http_request_duration_seconds"
        _family(lines, name, "histogram", "Time to answer an HTTP request, by route template.")
        for route, histogram in sorted(self.durations.items()):
            for bound, count in histogram.cumulative():
                lines.append(_sample(f"{name}_bucket", {"route": route, "le": bound}, count))
            lines.append(_sample(f"{name}_sum", {"route": route}, histogram.sum))
            lines.append(_sample(f"{name}_count", {"route": route}, histogram.count))
        _family(lines, "mcp_auth_outcomes_total", "counter", "Bearer authentication outcomes by reason.")
        for outcome, value in sorted(self.auth_outcomes.items()):
            lines.append(_sample("mcp_auth_outcomes_total", {"outcome": outcome}, value))
        _family(lines, "mcp_tool_calls_total", "counter", "Tool calls by tool and outcome (ok, tool_error, refused).")
        for (tool, outcome), value in sorted(self.tool_calls.items()):
            lines.append(_sample("mcp_tool_calls_total", {"tool": tool, "outcome": outcome}, value))
        if self.keys is not None:
            self._render_keys(lines, self.keys)
        return "\n".join(lines) + "\n"

    @staticmethod
    def _render_keys(lines: list[str], keys: KeySetStats) -> None:
        age = keys.age
        gauges = (
            ("mcp_jwks_fetches_total", "counter", "JWKS fetch attempts.", keys.fetch_count),
            ("mcp_jwks_fetch_failures_total", "counter", "JWKS fetches that failed.", keys.failure_count),
            ("mcp_jwks_age_seconds", "gauge", "Age of the key set held (NaN before the first fetch).", age),
            ("mcp_jwks_keys", "gauge", "Usable signing keys held.", keys.key_count),
            ("mcp_jwks_ready", "gauge", "1 when a usable key set is held.", int(keys.ready)),
        )
        for name, kind, help_text, value in gauges:
            _family(lines, name, kind, help_text)
            lines.append(_sample(name, {}, math.nan if value is None else value))


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    if not labels:
        return f"{name} {_number(value)}"
    rendered = ",".join(f'{key}="{_escape(label)}"' for key, label in labels.items())
    return f"{name}{{{rendered}}} {_number(value)}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))

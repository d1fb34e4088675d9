"""The performance floor (issues 19, 21, 22) and the figures it is judged on, computed from the runs. No I/O here."""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from bench.memory import MemoryResult
from bench.session import Run
from bench.targets import JWKS_COOLDOWN

SPEEDUP_ONE_TOKEN = 1.9  # A's calls/s over C's, one token reused
SPEEDUP_ROTATING = 1.8  # the same, 1000 tokens round-robin
FLOODS = {  # scenario -> (title, A's 401s/s over C's calls/s with one token)
    "bad_signature": ("bad signatures", 8.0),
    "unknown_kid": ("unknown kids", 8.0),
    "forged_payload": ("forged payloads", 4.0),
    "bad_proof": ("bad DPoP proof signatures", 4.0),
}
# A's CPU per call in a scenario over its CPU per call with one reused bearer JWT (or 1000 of them), same repeat
TOKEN_SOURCE_COSTS = (  # target, scenario, reference scenario, title, most allowed
    ("I", "opaque_one", "one_token", "cached introspected token vs cached JWT", 1.05),
    ("A", "dpop_one", "one_token", "DPoP call vs Bearer call, one token", 1.5),
    ("A", "dpop_rotating", "rotating", "DPoP call vs Bearer call, 1000 tokens", 1.5),
)
MEMORY_TOKENS = 100_000  # the floor's pass over distinct valid tokens
MEMORY_BOUND_MIB = 64.0  # stated bound at OAUTH_TOKEN_CACHE_ENTRIES=10000 (the default); see docs/performance.md
STARTUP_SECONDS = 1.5  # A, from process start to its first correct answer, slowest start


class Status(enum.Enum):
    PASS = enum.auto()
    FAIL = enum.auto()
    SKIP = enum.auto()  # not measured in this run (a scenario or the memory run left out)


@dataclass(frozen=True)
class Check:
    what: str
    floor: str
    measured: str
    status: Status
    correctness: bool = False  # a check of the answers, not of speed: its FAIL always fails the run

    def line(self) -> str:
        return f"{self.status.name} {self.what}: {self.measured} (floor: {self.floor})"


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else math.nan


def runs_of(runs: list[Run], target: str, scenario: str) -> list[Run]:
    return [run for run in runs if run.target == target and run.scenario == scenario]


def paired(runs: list[Run], left: tuple[str, str], right: tuple[str, str]) -> list[tuple[Run, Run]]:
    """(left run, right run) of the same repeat, for (target, scenario) pairs; a repeat missing either is left out."""
    by_repeat = {run.repeat: run for run in runs_of(runs, *right)}
    return [(run, by_repeat[run.repeat]) for run in runs_of(runs, *left) if run.repeat in by_repeat]


def speedup(runs: list[Run], scenario: str, reference: str = "C", reference_scenario: str | None = None) -> float:
    """Median over repeats of A's requests/s in `scenario` over the reference's in `reference_scenario`."""
    pairs = paired(runs, ("A", scenario), (reference, reference_scenario or scenario))
    return median(a.rps / ref.rps for a, ref in pairs if ref.rps > 0)


def cpu_ratio(runs: list[Run], scenario: str, left: str = "A", right: str = "B") -> float:
    """Median over repeats of `left`'s CPU per request over `right`'s, back to back."""
    pairs = paired(runs, (left, scenario), (right, scenario))
    return median(a.cpu_us_per_request / b.cpu_us_per_request for a, b in pairs if b.cpu_us_per_request > 0)


def cost_over(runs: list[Run], scenario: str, reference: str, target: str = "A") -> float:
    """Median over repeats of `target`'s CPU per request in `scenario` over its CPU per request in `reference`."""
    pairs = paired(runs, (target, scenario), (target, reference))
    return median(a.cpu_us_per_request / b.cpu_us_per_request for a, b in pairs if b.cpu_us_per_request > 0)


def fetch_budget(duration: float) -> int:
    """JWKS fetches allowed in one run: one per cooldown begun."""
    return math.floor(duration / JWKS_COOLDOWN) + 1


def _status(met: bool, measured: float) -> Status:
    if math.isnan(measured):
        return Status.SKIP
    return Status.PASS if met else Status.FAIL


def checks(
    runs: list[Run], *, duration: float, startups: dict[str, list[float]], memory: MemoryResult | None
) -> list[Check]:
    """Every line of the floor, judged on these runs; SKIP where this run measured nothing to judge."""
    return [
        *speedup_checks(runs),
        *flood_checks(runs),
        *token_source_checks(runs),
        jwks_check(runs, duration),
        memory_check(memory),
        startup_check(startups.get("A", [])),
        wrong_answers_check(sum(run.wrong for run in runs) + (memory.wrong if memory else 0)),
    ]


def speedup_checks(runs: list[Run]) -> list[Check]:
    found = []
    for scenario, title, floor in (
        ("one_token", "A vs C, one token", SPEEDUP_ONE_TOKEN),
        ("rotating", "A vs C, 1000 tokens", SPEEDUP_ROTATING),
    ):
        ratio, plus = speedup(runs, scenario), speedup(runs, scenario, "C+")
        measured = f"{ratio:.2f}x calls/s (vs C+: {plus:.2f}x)"
        found.append(Check(title, f">= {floor:g}x", measured, _status(ratio >= floor, ratio)))
    return found


def flood_checks(runs: list[Run]) -> list[Check]:
    """A's 401s per second in each flood over C's calls per second with one token, in the same repeat."""
    found = []
    for scenario, (title, floor) in FLOODS.items():
        ratio = speedup(runs, scenario, "C", "one_token")
        cost = median(run.cpu_us_per_request for run in runs_of(runs, "A", scenario))
        measured = f"{ratio:.1f}x ({cost:.0f} us CPU per 401)"
        what = f"{title}: A's 401s/s vs C's calls/s"
        found.append(Check(what, f">= {floor:g}x", measured, _status(ratio >= floor, ratio)))
    return found


def token_source_checks(runs: list[Run]) -> list[Check]:
    """Introspected and DPoP calls against plain bearer JWT calls: CPU per call, each target against itself."""
    found = []
    for target, scenario, reference, title, most in TOKEN_SOURCE_COSTS:
        ratio = cost_over(runs, scenario, reference, target)
        cost = median(run.cpu_us_per_request for run in runs_of(runs, target, scenario))
        measured = f"{ratio:.3f}x CPU per call ({cost:.0f} us)"
        what = f"{title}: {target}'s CPU per call"
        found.append(Check(what, f"<= {most:g}x", measured, _status(ratio <= most, ratio)))
    return found


def introspection_figure(runs: list[Run]) -> list[str]:
    """Introspection requests per 1000 calls with 1000 distinct opaque tokens round-robin. A figure, not a floor:
    the first pass over the tokens introspects each once, later passes are answered from the cache."""
    found = runs_of(runs, "I", "opaque_rotating")
    if not found:
        return []
    per_1000 = median(1000 * run.introspections / max(run.result.requests, 1) for run in found)
    calls = sum(run.result.requests for run in found)
    total = sum(run.introspections for run in found)
    return [
        f"Introspection, 1000 distinct opaque tokens: {per_1000:.1f} introspection requests per 1000 calls"
        f" (median of {len(found)} runs; {total:,} over {calls:,} calls in all)"
    ]


def jwks_check(runs: list[Run], duration: float) -> Check:
    budget = fetch_budget(duration)
    floor = f"<= 1 per {JWKS_COOLDOWN:g} s cooldown, so <= {budget} per {duration:g} s run"
    worst = {name: max(run.jwks_fetches for run in found) for name in FLOODS if (found := runs_of(runs, "A", name))}
    if not worst:
        return Check("JWKS fetches during floods", floor, "no flood run", Status.SKIP)
    measured = ", ".join(f"{name} {count}" for name, count in worst.items()) + " (most in one run)"
    status = Status.PASS if max(worst.values()) <= budget else Status.FAIL
    return Check("JWKS fetches during floods", floor, measured, status)


def startup_check(seconds: list[float]) -> Check:
    """The slowest of A's starts counts."""
    slowest = max(seconds, default=math.nan)
    measured = f"slowest {slowest:.2f} s, median {median(seconds):.2f} s of {len(seconds)}"
    status = _status(slowest <= STARTUP_SECONDS, slowest)
    return Check("A's start-up to its first correct answer", f"<= {STARTUP_SECONDS:g} s", measured, status)


def wrong_answers_check(wrong: int) -> Check:
    status = Status.PASS if wrong == 0 else Status.FAIL
    return Check("wrong answers, all runs", "0", str(wrong), status, correctness=True)


def memory_check(memory: MemoryResult | None) -> Check:
    what = f"RSS growth over {MEMORY_TOKENS:,} distinct valid tokens"
    floor = f"<= {MEMORY_BOUND_MIB:g} MiB at OAUTH_TOKEN_CACHE_ENTRIES=10,000"
    if memory is None:
        return Check(what, floor, "not run (--memory-tokens 0)", Status.SKIP)
    measured = (
        f"{memory.growth_mib:+.1f} MiB over {memory.tokens:,} tokens at {memory.cache_entries:,} entries,"
        f" {memory.answered:,} answered, {memory.wrong} wrong"
    )
    if memory.wrong or memory.answered < memory.tokens:
        return Check(what, floor, measured, Status.FAIL)
    if memory.tokens < MEMORY_TOKENS or memory.cache_entries != 10_000:
        return Check(what, floor, measured + " (not the floor's configuration)", Status.SKIP)
    return Check(what, floor, measured, Status.PASS if memory.growth_mib <= MEMORY_BOUND_MIB else Status.FAIL)


def a_vs_b(runs: list[Run], side_by_side: dict[str, list[float]]) -> list[str]:
    """A's CPU per request over B's: what the auth layers cost. A figure, not a floor."""

    def percent(ratio: float) -> str:
        return "not measured" if math.isnan(ratio) else f"{ratio - 1:+.1%}"

    lines = []
    for scenario, title in (("one_token", "one token"), ("rotating", "1000 tokens")):
        together, back_to_back = median(side_by_side.get(scenario, [])), cpu_ratio(runs, scenario)
        if not (math.isnan(together) and math.isnan(back_to_back)):
            lines.append(
                f"A vs B, {title}: CPU per request {percent(together)} side by side,"
                f" {percent(back_to_back)} back to back"
            )
    return lines

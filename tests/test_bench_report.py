"""The benchmark's arithmetic, floor lines, exit status and report, on made-up runs: a line passes only when its
figure says so, and a floor nothing measured is skipped, never passed."""

from __future__ import annotations

import json

import pytest

from bench import floor, report
from bench.floor import Status
from bench.memory import MemoryResult
from bench.run import exit_status
from bench.scenarios import SCENARIOS
from bench.session import Run
from bench.wrk import WrkResult

SECONDS = 5.0


def run(
    target: str,
    scenario: str,
    repeat: int,
    *,
    rps: float,
    cpu_us: float = 300.0,
    fetches: int = 0,
    introspections: int = 0,
) -> Run:
    requests = int(rps * SECONDS)
    result = WrkResult(requests, int(SECONDS * 1e6), requests, 0, 0, 0, 4000, 9000)
    return Run(target, scenario, repeat, result, cpu_us * requests / 1e6, 80.0, fetches, introspections)


def full_runs(
    *,
    a_one: float = 2000,
    a_many: float = 1900,
    floods: float = 10_000,
    fetches: int = 0,
    opaque_cpu: float = 310,
    dpop_cpu: float = 420,
) -> list[Run]:
    """Three repeats of every scenario; C serves 1000 calls/s."""
    runs = []
    for repeat in range(3):
        runs += [
            run("A", "one_token", repeat, rps=a_one),
            run("B", "one_token", repeat, rps=2200, cpu_us=270),
            run("C", "one_token", repeat, rps=1000),
            run("C+", "one_token", repeat, rps=1200),
            run("A", "rotating", repeat, rps=a_many),
            run("B", "rotating", repeat, rps=2200),
            run("C", "rotating", repeat, rps=1000),
            run("C+", "rotating", repeat, rps=1200),
            *(
                run("A", name, repeat, rps=floods, cpu_us=60, fetches=fetches)
                for name in ("bad_signature", "forged_payload", "unknown_kid", "bad_proof")
            ),
            run("I", "one_token", repeat, rps=a_one),
            run("I", "opaque_one", repeat, rps=a_one, cpu_us=opaque_cpu),
            run("I", "opaque_rotating", repeat, rps=a_many, cpu_us=opaque_cpu, introspections=1000 - 400 * repeat),
            run("A", "dpop_one", repeat, rps=1500, cpu_us=dpop_cpu),
            run("A", "dpop_rotating", repeat, rps=1400, cpu_us=dpop_cpu),
        ]
    return runs


def memory(*, growth: float = 40.0, tokens: int = 100_000, wrong: int = 0, answered: int | None = None) -> MemoryResult:
    answered = tokens if answered is None else answered
    return MemoryResult(tokens, 10_000, answered, wrong, 90.0, 90.0 + growth, 60.0)


def by_what(checks: list[floor.Check]) -> dict[str, floor.Check]:
    return {check.what: check for check in checks}


def judged(runs: list[Run], *, startups: list[float] | None = None, mem: MemoryResult | None = None):
    return by_what(floor.checks(runs, duration=SECONDS, startups={"A": startups or [0.6, 0.7]}, memory=mem))


def test_a_speedup_pairs_runs_of_the_same_repeat_only():
    runs = [run("A", "one_token", 0, rps=2000), run("C", "one_token", 0, rps=1000), run("A", "one_token", 1, rps=9000)]
    assert floor.speedup(runs, "one_token") == pytest.approx(2.0)


def test_every_floor_passes_on_figures_above_it():
    checks = judged(full_runs(), mem=memory())
    assert {check.status for check in checks.values()} == {Status.PASS}
    assert "2.00x" in checks["A vs C, one token"].measured
    assert "vs C+: 1.67x" in checks["A vs C, one token"].measured


@pytest.mark.parametrize(
    ("runs", "what"),
    [
        (full_runs(a_one=1850), "A vs C, one token"),
        (full_runs(a_many=1750), "A vs C, 1000 tokens"),
        (full_runs(floods=7900), "bad signatures: A's 401s/s vs C's calls/s"),
        (full_runs(floods=7900), "unknown kids: A's 401s/s vs C's calls/s"),
        (full_runs(floods=3900), "forged payloads: A's 401s/s vs C's calls/s"),
        (full_runs(fetches=2), "JWKS fetches during floods"),
        (full_runs(floods=3900), "bad DPoP proof signatures: A's 401s/s vs C's calls/s"),
        (full_runs(opaque_cpu=316), "cached introspected token vs cached JWT: I's CPU per call"),
        (full_runs(dpop_cpu=451), "DPoP call vs Bearer call, one token: A's CPU per call"),
        (full_runs(dpop_cpu=451), "DPoP call vs Bearer call, 1000 tokens: A's CPU per call"),
    ],
)
def test_a_figure_below_its_floor_fails_that_line(runs: list[Run], what: str):
    checks = judged(runs, mem=memory())
    assert checks[what].status is Status.FAIL
    assert checks[what].line().startswith(f"FAIL {what}: ")


def test_forged_payloads_have_a_lower_floor_than_the_other_floods():
    checks = judged(full_runs(floods=5000), mem=memory())
    assert checks["forged payloads: A's 401s/s vs C's calls/s"].status is Status.PASS
    assert checks["bad signatures: A's 401s/s vs C's calls/s"].status is Status.FAIL


def test_token_source_costs_compare_a_with_itself_in_the_same_repeat():
    runs = [run("A", "dpop_one", 0, rps=1, cpu_us=450), run("A", "one_token", 0, rps=1, cpu_us=300)]
    runs += [run("A", "dpop_one", 1, rps=1, cpu_us=999)]  # no bearer run in repeat 1: left out
    assert floor.cost_over(runs, "dpop_one", "one_token") == pytest.approx(1.5)


def test_introspection_requests_per_1000_calls_is_a_figure():
    (line,) = floor.introspection_figure(full_runs())
    # 9500 calls per run; 1000, 600, 200 introspections: the median run's 600 -> 63.2 per 1000 calls
    assert line.startswith("Introspection, 1000 distinct opaque tokens: 63.2 introspection requests per 1000 calls")
    assert "1,800 over 28,500 calls" in line
    assert floor.introspection_figure([]) == []


def test_one_jwks_fetch_per_cooldown_begun_is_allowed():
    assert floor.fetch_budget(5.0) == 1
    assert floor.fetch_budget(10.0) == 2
    assert judged(full_runs(fetches=1), mem=memory())["JWKS fetches during floods"].status is Status.PASS


def test_the_slowest_start_counts():
    checks = judged(full_runs(), startups=[0.6, 0.7, 1.6], mem=memory())
    assert checks["A's start-up to its first correct answer"].status is Status.FAIL


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (memory(growth=64.0), Status.PASS),
        (memory(growth=64.5), Status.FAIL),
        (memory(wrong=1), Status.FAIL),
        (memory(answered=99_000), Status.FAIL),  # the pass ended before every token was answered
        (memory(tokens=1000), Status.SKIP),  # a short run is not the floor's configuration
        (None, Status.SKIP),
    ],
)
def test_memory_floor(result: MemoryResult | None, status: Status):
    assert floor.memory_check(result).status is status


def test_floors_without_runs_are_skipped_not_passed():
    only_calls = [r for r in full_runs() if r.scenario == "one_token"]
    checks = judged(only_calls)
    assert checks["A vs C, one token"].status is Status.PASS
    assert checks["A vs C, 1000 tokens"].status is Status.SKIP
    assert checks["bad signatures: A's 401s/s vs C's calls/s"].status is Status.SKIP
    assert checks["JWKS fetches during floods"].status is Status.SKIP


def test_a_wrong_answer_fails_its_line():
    runs = full_runs()
    runs[0] = Run("A", "one_token", 0, WrkResult(10, 5_000_000, 9, 1, 0, 0, 1, 1), 1.0, 80.0, 0)
    assert judged(runs, mem=memory())["wrong answers, all runs"].status is Status.FAIL


def test_a_vs_b_is_a_figure_from_both_measures():
    lines = floor.a_vs_b(full_runs(), {"one_token": [1.08, 1.10, 1.12]})
    assert lines[0] == "A vs B, one token: CPU per request +10.0% side by side, +11.1% back to back"
    assert lines[1] == "A vs B, 1000 tokens: CPU per request not measured side by side, +0.0% back to back"


def check(what: str, status: Status) -> floor.Check:
    return floor.Check(what, "x", "y", status, correctness=what.startswith("wrong"))


@pytest.mark.parametrize(
    ("statuses", "fail_on_floor", "expected"),
    [
        ({"A vs C, one token": Status.PASS, "wrong answers, all runs": Status.PASS}, True, 0),
        ({"A vs C, one token": Status.SKIP, "wrong answers, all runs": Status.PASS}, True, 0),
        ({"A vs C, one token": Status.FAIL, "wrong answers, all runs": Status.PASS}, True, 1),
        ({"A vs C, one token": Status.FAIL, "wrong answers, all runs": Status.PASS}, False, 0),
        ({"A vs C, one token": Status.PASS, "wrong answers, all runs": Status.FAIL}, False, 1),
    ],
)
def test_exit_status(statuses: dict[str, Status], fail_on_floor: bool, expected: int):
    checks = [check(what, status) for what, status in statuses.items()]
    assert exit_status(checks, fail_on_floor=fail_on_floor) == expected


def test_the_report_holds_the_table_a_vs_b_and_every_floor_line():
    runs = full_runs()
    checks = floor.checks(runs, duration=SECONDS, startups={"A": [0.6]}, memory=None)
    text = report.results_text(
        header=["Machine: test"],
        labels={"A": "this server"},
        runs=runs,
        scenarios=list(SCENARIOS),
        startups={"A": [0.6], "C": [0.5]},
        a_vs_b=["A vs B, one token: ..."],
        checks=checks,
    )
    assert "| one token reused | A | 2000 | 4.00 | 9.00 | 300 | 80 | 0 | 0 |" in text
    assert "| unknown-kid flood, 1000 kids | A | 10000 |" in text
    assert "Start-up to the first correct answer (median): A 0.60 s, C 0.50 s" in text
    assert "A vs B, one token: ..." in text
    assert all(check.line() in text for check in checks)
    raw = json.loads(report.results_json(runs, {"A": [0.6]}, {}, None, checks))
    assert len(raw["runs"]) == len(runs)
    assert raw["checks"][-1] == {
        "what": "wrong answers, all runs",
        "floor": "0",
        "measured": "0",
        "status": "PASS",
        "correctness": True,
    }

"""The benchmark's arithmetic and verdicts, on made-up runs: a goal is met only when its figure says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.run import Bench, Run, per_repeat_ratios, quartiles, verdicts


def run(target: str, scenario: str, repeat: int, *, requests: int, cpu_seconds: float, fetches: int = 0) -> Run:
    wrk = {"requests": requests, "duration_us": 5_000_000, "wrong": 0, "socket_errors": 0, "timeouts": 0}
    return Run(target, scenario, repeat, wrk, cpu_seconds, 80.0, fetches)


def bench_with(runs: list[Run], *, paired: dict[str, list[float]], alternating: dict[str, list[float]]) -> Bench:
    bench = Bench(Path("."), 5.0, 16, 1, 0, 0)
    bench.runs = runs
    bench.paired = paired
    bench.alternating = alternating
    return bench


def rows(lines: list[str]) -> dict[str, str]:
    return {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}


def test_quartiles_of_one_or_none():
    assert quartiles([1.5]) == (1.5, 1.5, 1.5)
    low, middle, high = quartiles([1.0, 2.0, 3.0, 4.0, 5.0])
    assert low < middle == 3.0 < high


def test_ratios_pair_runs_of_the_same_repeat_only():
    runs = [
        run("A", "one_token", 0, requests=1000, cpu_seconds=1.1),
        run("B", "one_token", 0, requests=1000, cpu_seconds=1.0),
        run("A", "one_token", 1, requests=1000, cpu_seconds=1.3),  # B's run of repeat 1 is missing
    ]
    assert per_repeat_ratios(bench_with(runs, paired={}, alternating={}), "one_token", "A", "B", "cpu_seconds") == [
        pytest.approx(1.1)
    ]


def test_verdicts_follow_the_figures():
    runs = []
    for repeat in range(3):
        runs += [
            run("A", "one_token", repeat, requests=10_000, cpu_seconds=9.0),  # 2000 req/s
            run("B", "one_token", repeat, requests=11_000, cpu_seconds=9.0),
            run("C", "one_token", repeat, requests=5_000, cpu_seconds=9.0),  # 1000 req/s
            run("C+", "one_token", repeat, requests=6_000, cpu_seconds=9.0),
            run("A", "unknown_kid", repeat, requests=40_000, cpu_seconds=9.0, fetches=1),  # 8x C
        ]
    bench = bench_with(runs, paired={"one_token": [1.01, 1.02, 1.03]}, alternating={"one_token": [1.01, 1.02, 1.03]})
    lines, figures = verdicts(bench, {"A": [1.2, 1.4, 1.6]}, None)
    table = rows(lines)

    assert figures["auth_cpu_overhead_one_token"] == pytest.approx(0.02)
    assert table["auth: A's CPU per request vs B's, one token"].endswith("| met |")
    assert "+2.0% in alternating short runs" in table["auth: A's CPU per request vs B's, one token"]
    assert figures["speedup_one_token"] == pytest.approx(2.0)
    assert table["A req/s vs C, one token"].endswith("| met |")
    assert figures["unknown_kid_vs_reference"] == pytest.approx(8.0)
    assert table["unknown kid: A's 401s/s vs C's calls/s"].endswith("**not met** |")
    assert table["unknown kid: JWKS fetches"].endswith("| met |")
    assert table["A: start to first correct answer"].endswith("**not met** |")  # the slowest start counts
    assert table["wrong answers, all runs"].endswith("| met |")


def test_a_wrong_answer_fails_the_verdict():
    broken = run("A", "one_token", 0, requests=100, cpu_seconds=1.0)
    broken.wrk["wrong"] = 1
    lines, figures = verdicts(bench_with([broken], paired={}, alternating={}), {}, None)
    assert figures["wrong_answers"] == 1
    assert rows(lines)["wrong answers, all runs"].endswith("**not met** |")

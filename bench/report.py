"""What a bench run prints and keeps: the table of runs, A vs B, the floor lines, results.md and results.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bench.floor import Check, median, runs_of
from bench.memory import MemoryResult
from bench.scenarios import Scenario
from bench.session import Run


def runs_table(runs: list[Run], scenarios: list[Scenario]) -> list[str]:
    """One row per scenario and target: medians over the repeats, the largest RSS, the sums of fetches and errors."""
    lines = [
        "| scenario | target | req/s | p50 ms | p99 ms | CPU us/req | RSS MiB | JWKS | introspections | wrong |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in scenarios:
        for name in scenario.targets:
            found = runs_of(runs, name, scenario.name)
            if not found:
                continue
            lines.append(
                f"| {scenario.title} | {name} | {median(run.rps for run in found):.0f} "
                f"| {median(run.result.p50_us / 1000 for run in found):.2f} "
                f"| {median(run.result.p99_us / 1000 for run in found):.2f} "
                f"| {median(run.cpu_us_per_request for run in found):.0f} "
                f"| {max(run.rss_mib for run in found):.0f} "
                f"| {sum(run.jwks_fetches for run in found)} "
                f"| {sum(run.introspections for run in found)} "
                f"| {sum(run.wrong for run in found)} |"
            )
    return lines


def results_text(
    *,
    header: list[str],
    labels: dict[str, str],
    runs: list[Run],
    scenarios: list[Scenario],
    startups: dict[str, list[float]],
    a_vs_b: list[str],
    checks: list[Check],
) -> str:
    startup = ", ".join(f"{name} {median(values):.2f} s" for name, values in startups.items() if values)
    lines = [
        *header,
        "",
        *(f"- {name}: {label}" for name, label in labels.items()),
        "",
        *runs_table(runs, scenarios),
        "",
        f"Start-up to the first correct answer (median): {startup or 'not measured'}",
        "",
        *a_vs_b,
        "",
        "Floor:",
        *(check.line() for check in checks),
    ]
    return "\n".join(lines) + "\n"


def results_json(
    runs: list[Run],
    startups: dict[str, list[float]],
    side_by_side: dict[str, list[float]],
    memory: MemoryResult | None,
    checks: list[Check],
) -> str:
    raw: dict[str, Any] = {
        "runs": [dataclasses.asdict(run) for run in runs],
        "startups": startups,
        "side_by_side_a_over_b": side_by_side,
        "memory": dataclasses.asdict(memory) if memory else None,
        "checks": [{**dataclasses.asdict(check), "status": check.status.name} for check in checks],
    }
    return json.dumps(raw, indent=2)


def write(workdir: Path, text: str, raw: str) -> Path:
    (workdir / "results.json").write_text(raw)
    path = workdir / "results.md"
    path.write_text(text)
    return path

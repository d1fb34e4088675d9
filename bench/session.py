"""One bench session's measurements: wrk runs against started targets, with the CPU, RSS and JWKS fetches each costs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import wrk
from bench.proc_stats import cpu_seconds, rss_mib
from bench.scenarios import Scenario
from bench.targets import FakeIdP, Target
from bench.wrk import Load, WrkResult


@dataclass(frozen=True)
class Run:
    """One wrk run against one target, with what the server spent on it."""

    target: str
    scenario: str
    repeat: int
    result: WrkResult
    cpu_seconds: float
    rss_mib: float
    jwks_fetches: int
    introspections: int = 0  # introspection requests the fake IdP answered during the run

    @property
    def rps(self) -> float:
        return self.result.rps

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds * 1e6 / max(self.result.requests, 1)

    @property
    def wrong(self) -> int:
        return self.result.failures


@dataclass
class Session:
    """The started targets and everything measured on them."""

    workdir: Path
    duration: float
    connections: int
    server_cpu: int | None
    load_cpu: int | None
    idp: FakeIdP
    targets: dict[str, Target]
    token_files: dict[str, Path]
    # token files made afresh before each run that uses them (DPoP proofs: each good once, and only for a while)
    fresh_token_files: dict[str, Callable[[], Path]] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    side_by_side: dict[str, list[float]] = field(default_factory=dict)  # scenario -> A/B CPU per request

    def load(self, target: Target, scenario: Scenario) -> Load:
        make = self.fresh_token_files.get(scenario.tokens)
        path = make() if make is not None else self.token_files[scenario.tokens]
        return Load(target.port, scenario.mode, target.tool, path)

    def wrk(self, load: Load, seconds: float) -> WrkResult:
        return wrk.run(load, connections=self.connections, seconds=seconds, cpu=self.load_cpu)

    def start_up(self, times: int) -> dict[str, list[float]]:
        """Seconds from process start to the first correct answer, each target started `times` times."""
        results: dict[str, list[float]] = {name: [] for name in self.targets}
        for _ in range(times):
            for target in self.targets.values():
                try:
                    results[target.name].append(target.start(self.workdir, self.server_cpu))
                finally:
                    target.stop()
        return results

    def measure(self, target: Target, scenario: Scenario, repeat: int) -> Run:
        load = self.load(target, scenario)
        (fetches, introspections), cpu = self.idp.counts(), cpu_seconds(target.pid)
        result = self.wrk(load, self.duration)
        cpu = cpu_seconds(target.pid) - cpu
        fetches_after, introspections_after = self.idp.counts()
        fetches, introspections = fetches_after - fetches, introspections_after - introspections
        run = Run(target.name, scenario.name, repeat, result, cpu, rss_mib(target.pid), fetches, introspections)
        self.runs.append(run)
        status = "ok" if run.wrong == 0 else f"WRONG {run.wrong} {result.wrong_kinds}"
        print(
            f"  {scenario.name:14} {target.name:2}: {run.rps:8.0f} req/s  p50 {result.p50_us / 1000:6.2f} ms"
            f"  p99 {result.p99_us / 1000:6.2f} ms  {run.cpu_us_per_request:6.0f} us CPU/req"
            f"  jwks {fetches}  introspections {introspections}  {status}"
        )
        return run

    def measure_side_by_side(self, scenario: Scenario, repeat: int) -> float:
        """A's CPU per request over B's, both loaded at once on the same CPU: whatever the machine does to one
        it does to the other, so the ratio holds still where back-to-back runs drift. RuntimeError on a wrong
        answer."""
        pair = [self.targets["A"], self.targets["B"]]
        if repeat % 2:
            pair.reverse()  # neither goes first every time
        before = {target.name: cpu_seconds(target.pid) for target in pair}
        results = wrk.run_together(
            [self.load(target, scenario) for target in pair],
            connections=self.connections,
            seconds=self.duration,
            cpu=self.load_cpu,
        )
        per_request = {}
        for target, result in zip(pair, results, strict=True):
            if result.failures:
                raise RuntimeError(
                    f"{target.name} gave {result.failures} wrong answers side by side: {result.wrong_kinds}"
                )
            per_request[target.name] = (cpu_seconds(target.pid) - before[target.name]) / max(result.requests, 1)
        ratio = per_request["A"] / per_request["B"]
        self.side_by_side.setdefault(scenario.name, []).append(ratio)
        cost = {name: f"{seconds * 1e6:5.0f} us" for name, seconds in per_request.items()}
        print(f"  {scenario.name:14} A|B side by side: A {cost['A']}, B {cost['B']} CPU/req, A/B {ratio:.3f}")
        return ratio

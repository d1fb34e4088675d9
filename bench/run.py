"""The benchmark: this server with auth (A), the same stack without auth (B), the SDK's defaults (C), under wrk.

`make bench` (or `.venv/bin/python -m bench.run`) runs every scenario on 127.0.0.1, interleaved over several
repeats, checks every answer, and prints the table that docs/performance.md reports.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.tokens import Issuer, write_tokens

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LUA_SCRIPT = PROJECT_ROOT / "bench" / "lua" / "mcp_call.lua"
LOOPBACK = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 30.0
JWKS_COOLDOWN = 10.0  # OAUTH_JWKS_REFRESH_COOLDOWN_SECONDS, the default
MEMORY_RUN_LIMIT = 600  # seconds: the memory run's upper bound
MEMORY_BOUND_MIB = 64  # the stated bound for the default OAUTH_TOKEN_CACHE_ENTRIES (10,000)
MODERN = "2026-07-28"
TARGETS = ("A", "B", "C", "C+")
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def pin(cpu: int | None) -> dict[str, Any]:
    """Popen arguments that run the child on one CPU (server and load generator apart), when there are two."""
    if cpu is None:
        return {}
    return {"preexec_fn": lambda: os.sched_setaffinity(0, {cpu})}


def call_tool_once(port: int, tool: str, token: str | None, request_id: int = 1, timeout: float = 2.0) -> bool:
    """One tools/call over a fresh connection; True only for the right answer (a + b for this id)."""
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": {"a": request_id, "b": 0.5}, "_meta": MODERN_META},
    }
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request("POST", "/mcp", json.dumps(body), headers)
        response = connection.getresponse()
        answer = json.loads(response.read()) if response.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return (
        isinstance(answer, dict)
        and answer.get("id") == request_id
        and answer.get("result", {}).get("structuredContent") == {"result": request_id + 0.5}
    )


@dataclass
class Target:
    """One server under test: how to start it, which tool it offers, and the process once started."""

    name: str
    label: str
    command: list[str]
    tool: str
    env: dict[str, str]
    port: int
    log_path: Path
    token: str | None = None  # sent with the start-up probe
    process: subprocess.Popen[bytes] | None = None

    def start(self, workdir: Path, cpu: int | None) -> float:
        """Start the process; the seconds until its first correct tools/call answer."""
        started = time.perf_counter()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
                self.command, cwd=workdir, env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL, **pin(cpu)
            )
        deadline = started + START_TIMEOUT
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            if call_tool_once(self.port, self.tool, self.token):
                return time.perf_counter() - started
            time.sleep(0.005)
        raise RuntimeError(f"{self.name} gave no correct answer within {START_TIMEOUT} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


@dataclass
class Run:
    """One wrk run against one target, with what the server spent on it."""

    target: str
    scenario: str
    repeat: int
    wrk: dict[str, Any]
    cpu_seconds: float
    rss_mib: float
    jwks_fetches: int

    @property
    def rps(self) -> float:
        return self.wrk["requests"] / (self.wrk["duration_us"] / 1e6)

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds * 1e6 / max(self.wrk["requests"], 1)

    @property
    def wrong(self) -> int:
        return self.wrk["wrong"] + self.wrk["socket_errors"] + self.wrk["timeouts"]


@dataclass
class Scenario:
    name: str
    title: str
    mode: str
    token_file: Path | None
    targets: tuple[str, ...]


@dataclass
class Bench:
    workdir: Path
    duration: float
    connections: int
    server_cpu: int | None
    load_cpu: int | None
    idp_port: int
    targets: dict[str, Target] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    paired: dict[str, list[float]] = field(default_factory=dict)  # scenario -> A/B CPU ratios, side by side
    alternating: dict[str, list[float]] = field(default_factory=dict)  # scenario -> A/B CPU ratios, short runs

    def jwks_fetches(self) -> int:
        return jwks_fetches(self.idp_port)

    def wrk_command(self, target: Target, mode: str, token_file: Path | None, seconds: float, limit: int) -> list[str]:
        return [
            "wrk",
            "-t1",
            f"-c{self.connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "5s",
            "-s",
            str(LUA_SCRIPT),
            f"http://{LOOPBACK}:{target.port}",
            "--",
            mode,
            target.tool,
            str(token_file) if token_file else "-",
            str(limit),
        ]

    def wrk(self, target: Target, mode: str, token_file: Path | None, seconds: float, limit: int = 0) -> dict[str, Any]:
        return self.wrk_together([(target, mode, token_file)], seconds, limit)[0]

    def wrk_together(
        self, loads: list[tuple[Target, str, Path | None]], seconds: float, limit: int = 0
    ) -> list[dict[str, Any]]:
        """One wrk per target, all running at the same time; their results in the same order."""
        processes = [
            subprocess.Popen(  # noqa: S603 - wrk from the bench set-up
                self.wrk_command(target, mode, token_file, seconds, limit),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                **pin(self.load_cpu),
            )
            for target, mode, token_file in loads
        ]
        results = []
        for process in processes:
            output, errors = process.communicate(timeout=seconds + 60)
            line = next((line for line in output.splitlines() if line.startswith("WRK_RESULT ")), None)
            if process.returncode != 0 or line is None:
                raise RuntimeError(f"wrk failed ({process.returncode}):\n{output}\n{errors}")
            results.append(json.loads(line.removeprefix("WRK_RESULT ")))
        return results

    def side_by_side(self, scenario: Scenario, repeat: int) -> float:
        """A's CPU per request over B's, both loaded at once on the same CPU: whatever the machine does to one
        it does to the other, so the ratio holds still where back-to-back runs drift."""
        first, second = self.targets["A"], self.targets["B"]
        if repeat % 2:
            first, second = second, first  # neither goes first every time
        before = {target.name: cpu_seconds(target.pid) for target in (first, second)}
        results = self.wrk_together(
            [(first, scenario.mode, scenario.token_file), (second, scenario.mode, scenario.token_file)], self.duration
        )
        per_request = {}
        for target, result in zip((first, second), results, strict=True):
            wrong = result["wrong"] + result["socket_errors"] + result["timeouts"]
            if wrong:
                raise RuntimeError(f"{target.name} gave {wrong} wrong answers side by side: {result['wrong_kinds']}")
            per_request[target.name] = (cpu_seconds(target.pid) - before[target.name]) / max(result["requests"], 1)
        ratio = per_request["A"] / per_request["B"]
        cost = {name: f"{seconds * 1e6:5.0f} us" for name, seconds in per_request.items()}
        print(f"  {scenario.name:14} A|B side by side: A {cost['A']}, B {cost['B']} CPU/req: {ratio - 1:+.1%}")
        return ratio

    def alternate(self, scenario: Scenario, pairs: int, seconds: float) -> list[float]:
        """A's CPU per request over B's in short back-to-back runs, A B, B A, A B ...: drift over a few seconds
        is small, and neither process shares the CPU with the other while it is measured."""
        ratios = []
        for pair in range(pairs):
            order = ("A", "B") if pair % 2 == 0 else ("B", "A")
            per_request = {}
            for name in order:
                target = self.targets[name]
                cpu = cpu_seconds(target.pid)
                result = self.wrk(target, scenario.mode, scenario.token_file, seconds)
                wrong = result["wrong"] + result["socket_errors"] + result["timeouts"]
                if wrong:
                    raise RuntimeError(f"{name} gave {wrong} wrong answers: {result['wrong_kinds']}")
                per_request[name] = (cpu_seconds(target.pid) - cpu) / max(result["requests"], 1)
            ratios.append(per_request["A"] / per_request["B"])
        low, middle, high = quartiles(ratios)
        print(
            f"  {scenario.name:14} A/B alternating, {pairs} pairs of {seconds:g} s: median {middle - 1:+.1%}"
            f" (quartiles {low - 1:+.1%} .. {high - 1:+.1%})"
        )
        return ratios

    def measure(self, target: Target, scenario: Scenario, repeat: int) -> Run:
        fetches, cpu = self.jwks_fetches(), cpu_seconds(target.pid)
        result = self.wrk(target, scenario.mode, scenario.token_file, self.duration)
        cpu, fetches = cpu_seconds(target.pid) - cpu, self.jwks_fetches() - fetches
        run = Run(target.name, scenario.name, repeat, result, cpu, rss_mib(target.pid), fetches)
        self.runs.append(run)
        status = "ok" if run.wrong == 0 else f"WRONG {run.wrong} {result['wrong_kinds']}"
        print(
            f"  {scenario.name:14} {target.name}: {run.rps:8.0f} req/s  p50 {result['p50_us'] / 1000:6.2f} ms"
            f"  p99 {result['p99_us'] / 1000:6.2f} ms  {run.cpu_us_per_request:6.0f} us CPU/req"
            f"  jwks {fetches}  {status}",
        )
        return run


def server_env(base: dict[str, str], port: int, idp_port: int, **extra: str) -> dict[str, str]:
    env = {
        **base,
        "HOST": LOOPBACK,
        "PORT": str(port),
        "OAUTH_ISSUER": f"http://{LOOPBACK}:{idp_port}/",
        "OAUTH_JWKS_URI": f"http://{LOOPBACK}:{idp_port}/jwks",
        "MCP_SERVER_URL": f"http://{LOOPBACK}:{port}/mcp",
        "NOTES_DB_PATH": ":memory:",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    env.update(extra)
    return env


def clean_environment() -> dict[str, str]:
    """This process's environment without settings variables (a stray OAUTH_* must not change the targets)."""
    prefixes = ("OAUTH_", "MCP_", "NOTES_", "DEV_", "CORS_", "LOG_", "METRICS_", "HOST", "PORT", "FORWARDED_")
    return {name: value for name, value in os.environ.items() if not name.upper().startswith(prefixes)}


def make_targets(bench: Bench, sdk_python: Path) -> dict[str, Target]:
    python = sys.executable
    base = clean_environment()
    ports = {name: free_port() for name in TARGETS}
    logs = {name: bench.workdir / f"server-{name}.log" for name in TARGETS}
    reference = str(PROJECT_ROOT / "bench" / "sdk_reference.py")
    return {
        "A": Target(
            "A",
            "this server, auth on (production mode, fake IdP)",
            [python, str(PROJECT_ROOT / "server.py")],
            "add_numbers",
            server_env(base, ports["A"], bench.idp_port),
            ports["A"],
            logs["A"],
        ),
        "B": Target(
            "B",
            "the same stack, bearer middleware and scope gate left out (bench/noauth_server.py)",
            [python, "-m", "bench.noauth_server"],
            "add_numbers",
            server_env(base, ports["B"], bench.idp_port),
            ports["B"],
            logs["B"],
        ),
        "C": Target(
            "C",
            "the SDK's MCPServer, mcp.run('streamable-http') defaults, sync add tool, in a venv with only"
            " `pip install mcp` (uvicorn then runs h11 on asyncio)",
            [str(sdk_python), reference, "--port", str(ports["C"])],
            "add",
            dict(base),
            ports["C"],
            logs["C"],
        ),
        "C+": Target(
            "C+",
            "C in this project's venv, where uvicorn's defaults pick uvloop and httptools",
            [python, reference, "--port", str(ports["C+"])],
            "add",
            dict(base),
            ports["C+"],
            logs["C+"],
        ),
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        value = values[0] if values else math.nan
        return value, value, value
    low, middle, high = statistics.quantiles(values, n=4)
    return low, middle, high


def runs_of(bench: Bench, target: str, scenario: str) -> list[Run]:
    return [run for run in bench.runs if run.target == target and run.scenario == scenario]


def per_repeat_ratios(bench: Bench, scenario: str, left: str, right: str, metric: str) -> list[float]:
    ratios = []
    for left_run in runs_of(bench, left, scenario):
        right_run = next((run for run in runs_of(bench, right, scenario) if run.repeat == left_run.repeat), None)
        if right_run is not None:
            ratios.append(getattr(left_run, metric) / getattr(right_run, metric))
    return ratios


def start_up(bench: Bench, times: int) -> dict[str, list[float]]:
    """Seconds from process start to the first correct answer, each target started `times` times."""
    results: dict[str, list[float]] = {name: [] for name in bench.targets}
    for _ in range(times):
        for target in bench.targets.values():
            try:
                results[target.name].append(target.start(bench.workdir, bench.server_cpu))
            finally:
                target.stop()
    return results


def mcp_calls_answered(port: int) -> int:
    """POST /mcp answers so far, from the server's own /metrics (open to loopback without a token)."""
    with contextlib.closing(http.client.HTTPConnection(LOOPBACK, port, timeout=5)) as connection:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("mcp_http_requests_total{") and 'route="/mcp"' in line and 'method="POST"' in line
    )


def memory_run(bench: Bench, issuer: Issuer, distinct: int, cache_entries: int) -> dict[str, Any]:
    """RSS growth of A while `distinct` different valid tokens each make one call, with a bounded cache."""
    port = free_port()
    env = server_env(clean_environment(), port, bench.idp_port, OAUTH_TOKEN_CACHE_ENTRIES=str(cache_entries))
    print(f"minting {distinct} ES256 tokens for the memory run ...")
    tokens = issuer.many_es256("memory", distinct, audience=env["MCP_SERVER_URL"])
    token_file = write_tokens(bench.workdir / "tokens-memory.txt", tokens)
    source = bench.targets["A"]
    log = bench.workdir / "server-A-memory.log"
    target = Target("A-memory", source.label, source.command, source.tool, env, port, log, token=tokens[0])
    try:
        target.start(bench.workdir, bench.server_cpu)
        # Settle allocator and lazy imports with the one token, then measure the pass over every token.
        bench.wrk(target, "call", write_tokens(bench.workdir / "tokens-memory-one.txt", tokens[:1]), 3)
        before, answered = rss_mib(target.pid), mcp_calls_answered(port)
        started = time.perf_counter()
        # wrk runs for its whole duration even once the script stops sending: it is stopped when all are answered.
        wrk = subprocess.Popen(  # noqa: S603 - wrk from the bench set-up
            bench.wrk_command(target, "call", token_file, MEMORY_RUN_LIMIT, distinct),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **pin(bench.load_cpu),
        )
        while wrk.poll() is None and mcp_calls_answered(port) < answered + distinct:
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        wrk.send_signal(signal.SIGINT)
        output = wrk.communicate(timeout=60)[0]
        result = json.loads(next(line for line in output.splitlines() if line.startswith("WRK_RESULT "))[11:])
        after = rss_mib(target.pid)
    finally:
        target.stop()
    return {
        "tokens": distinct,
        "cache_entries": cache_entries,
        "requests": result["requests"],
        "wrong": result["wrong"] + result["socket_errors"] + result["timeouts"],
        "rss_before_mib": before,
        "rss_after_mib": after,
        "growth_mib": after - before,
        "seconds": seconds,
    }


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]  # noqa: S607
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}, "
        f"{wrk_version.split(' [')[0]}"
    )


def table(bench: Bench, scenarios: list[Scenario]) -> list[str]:
    lines = [
        "| scenario | target | req/s | p50 ms | p99 ms | CPU us/req | RSS MiB | JWKS fetches | wrong |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in scenarios:
        for name in scenario.targets:
            runs = runs_of(bench, name, scenario.name)
            lines.append(
                f"| {scenario.title} | {name} | {median([run.rps for run in runs]):.0f} "
                f"| {median([run.wrk['p50_us'] / 1000 for run in runs]):.2f} "
                f"| {median([run.wrk['p99_us'] / 1000 for run in runs]):.2f} "
                f"| {median([run.cpu_us_per_request for run in runs]):.0f} "
                f"| {max(run.rss_mib for run in runs):.0f} "
                f"| {sum(run.jwks_fetches for run in runs)} "
                f"| {sum(run.wrong for run in runs)} |"
            )
    return lines


@dataclass(frozen=True)
class Goal:
    what: str
    goal: str
    measured: str
    met: bool

    def row(self) -> str:
        return f"| {self.what} | {self.goal} | {self.measured} | {'met' if self.met else '**not met**'} |"


def verdicts(
    bench: Bench, startups: dict[str, list[float]], memory: dict[str, Any] | None
) -> tuple[list[str], dict[str, Any]]:
    def overhead(scenario: str) -> float:
        """A's CPU per request over B's in back-to-back runs of the same repeat."""
        return median([ratio - 1 for ratio in per_repeat_ratios(bench, scenario, "A", "B", "cpu_us_per_request")])

    def overhead_side_by_side(scenario: str) -> float:
        return median([ratio - 1 for ratio in bench.paired.get(scenario, [])])

    def overhead_alternating(scenario: str) -> str:
        ratios = bench.alternating.get(scenario)
        if not ratios:
            return ""
        low, middle, high = quartiles(ratios)
        return f"; {middle - 1:+.1%} in alternating short runs (quartiles {low - 1:+.1%} .. {high - 1:+.1%})"

    def speedup(scenario: str, reference: str = "C", reference_scenario: str = "one_token") -> float:
        """A's req/s over the reference's in the same repeat (the reference serving valid calls)."""
        ratios = []
        for run in runs_of(bench, "A", scenario):
            ref = next((r for r in runs_of(bench, reference, reference_scenario) if r.repeat == run.repeat), None)
            if ref is not None:
                ratios.append(run.rps / ref.rps)
        return median(ratios)

    floods = {"bad_signature": "bad signatures", "forged_payload": "forged payloads", "unknown_kid": "unknown kid"}
    fetch_budget = math.floor(bench.duration / JWKS_COOLDOWN) + 1
    worst_fetches = {name: max((run.jwks_fetches for run in runs_of(bench, "A", name)), default=0) for name in floods}
    wrong = sum(run.wrong for run in bench.runs)
    figures: dict[str, Any] = {
        "auth_cpu_overhead_one_token": overhead_side_by_side("one_token"),
        "auth_cpu_overhead_1000_tokens": overhead_side_by_side("rotating"),
        "auth_cpu_overhead_one_token_back_to_back": overhead("one_token"),
        "auth_cpu_overhead_1000_tokens_back_to_back": overhead("rotating"),
        "side_by_side_ratios": bench.paired,
        "alternating_ratios": bench.alternating,
        "speedup_one_token": speedup("one_token"),
        "speedup_1000_tokens": speedup("rotating", reference_scenario="rotating"),
        "speedup_one_token_vs_c_plus": speedup("one_token", "C+"),
        "speedup_1000_tokens_vs_c_plus": speedup("rotating", "C+", "rotating"),
        **{f"{name}_vs_reference": speedup(name) for name in floods},
        "startup_seconds": {name: median(values) for name, values in startups.items()},
        "startup_seconds_max": {name: max(values) for name, values in startups.items() if values},
        "jwks_fetches_per_run_max": worst_fetches,
        "wrong_answers": wrong,
        "memory": memory,
    }
    one, many = figures["auth_cpu_overhead_one_token"], figures["auth_cpu_overhead_1000_tokens"]
    one_seq = figures["auth_cpu_overhead_one_token_back_to_back"]
    many_seq = figures["auth_cpu_overhead_1000_tokens_back_to_back"]
    fast_one, fast_many = figures["speedup_one_token"], figures["speedup_1000_tokens"]
    plus_one, plus_many = figures["speedup_one_token_vs_c_plus"], figures["speedup_1000_tokens_vs_c_plus"]
    goals = [
        Goal(
            "auth: A's CPU per request vs B's, one token",
            "<= +3 %",
            f"{one:+.1%} side by side ({one_seq:+.1%} back to back{overhead_alternating('one_token')})",
            one <= 0.03,
        ),
        Goal(
            "auth: A's CPU per request vs B's, 1000 tokens",
            "<= +10 %",
            f"{many:+.1%} side by side ({many_seq:+.1%} back to back{overhead_alternating('rotating')})",
            many <= 0.10,
        ),
        Goal("A req/s vs C, one token", ">= 2x", f"{fast_one:.2f}x (vs C+: {plus_one:.2f}x)", fast_one >= 2),
        Goal("A req/s vs C, 1000 tokens", ">= 1.8x", f"{fast_many:.2f}x (vs C+: {plus_many:.2f}x)", fast_many >= 1.8),
    ]
    for name, title in floods.items():
        ratio = figures[f"{name}_vs_reference"]
        goals.append(Goal(f"{title}: A's 401s/s vs C's calls/s", ">= 10x", f"{ratio:.1f}x", ratio >= 10))
        fetches = worst_fetches[name]
        budget = f"<= 1 per {JWKS_COOLDOWN:g} s cooldown, so <= {fetch_budget} per {bench.duration:g} s run"
        goals.append(Goal(f"{title}: JWKS fetches", budget, f"at most {fetches} in a run", fetches <= fetch_budget))
    if memory is not None:
        grew = memory["growth_mib"]
        goals.append(
            Goal(
                f"RSS growth over {memory['tokens']:,} distinct valid tokens",
                f"<= {MEMORY_BOUND_MIB} MiB with OAUTH_TOKEN_CACHE_ENTRIES={memory['cache_entries']:,}",
                f"{grew:+.1f} MiB, {memory['wrong']} wrong",
                grew <= MEMORY_BOUND_MIB and memory["wrong"] == 0,
            )
        )
    start, slowest = figures["startup_seconds"].get("A", math.nan), figures["startup_seconds_max"].get("A", math.nan)
    started = f"median {start:.2f} s, max {slowest:.2f} s"
    goals.append(Goal("A: start to first correct answer", "<= 1.5 s", started, slowest <= 1.5))
    goals.append(Goal("wrong answers, all runs", "0", str(wrong), wrong == 0))
    lines = ["| target | goal | measured (medians of per-repeat ratios) | |", "|---|---|---|---|"]
    return [*lines, *(goal.row() for goal in goals)], figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--startups", type=int, default=3, help="starts per target for the start-up time")
    parser.add_argument(
        "--alternating-pairs",
        type=int,
        default=16,
        help="A/B pairs of short back-to-back runs, a second view of the auth overhead (0 skips them)",
    )
    parser.add_argument("--alternating-seconds", type=float, default=2.0, help="seconds per alternating run")
    parser.add_argument("--memory-tokens", type=int, default=100_000, help="0 skips the memory run")
    parser.add_argument("--cache-entries", type=int, default=10_000, help="OAUTH_TOKEN_CACHE_ENTRIES of the memory run")
    parser.add_argument(
        "--scenarios",
        default="one_token,rotating,bad_signature,forged_payload,unknown_kid",
        help="comma-separated subset to run (the flood ratios need one_token for C's calls/s)",
    )
    parser.add_argument("--out", type=Path, help="directory for logs, tokens and results (default: a temp dir)")
    parser.add_argument(
        "--sdk-python",
        type=Path,
        default=PROJECT_ROOT / ".venv" / "sdk-reference" / "bin" / "python",
        help="interpreter of the venv with only the SDK, for C (bench/setup.sh makes it)",
    )
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress lines show as they come, through make and pipes too
    if shutil.which("wrk") is None or not args.sdk_python.exists():
        print("wrk or the SDK reference venv is missing: run bench/setup.sh (make bench does)", file=sys.stderr)
        return 2

    workdir = args.out or Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = (cpus[-1], cpus[0]) if len(cpus) >= 2 else (None, None)
    print(f"machine: {machine()}\nworkdir: {workdir}")

    idp_port = free_port()
    issuer = Issuer(f"http://{LOOPBACK}:{idp_port}/", audience="")
    issuer.write_jwks(workdir / "jwks.json")
    idp = start_idp(workdir, idp_port, load_cpu)
    bench = Bench(workdir, args.duration, args.connections, server_cpu, load_cpu, idp_port)
    try:
        return run_all(bench, issuer, args)
    finally:
        for target in bench.targets.values():
            target.stop()
        idp.send_signal(signal.SIGTERM)
        idp.wait(timeout=10)


def jwks_fetches(idp_port: int) -> int:
    """How often the fake IdP on `idp_port` has served its JWKS."""
    with contextlib.closing(http.client.HTTPConnection(LOOPBACK, idp_port, timeout=5)) as connection:
        connection.request("GET", "/stats")
        return json.loads(connection.getresponse().read())["jwks_fetches"]


def start_idp(workdir: Path, idp_port: int, cpu: int | None = None) -> subprocess.Popen[bytes]:
    """The fake IdP on `idp_port`, serving workdir/jwks.json (its output in workdir/idp.log), once it answers;
    RuntimeError if it exits or takes longer than START_TIMEOUT."""
    command = [sys.executable, "-m", "bench.fake_idp", "--port", str(idp_port), "--jwks", str(workdir / "jwks.json")]
    with (workdir / "idp.log").open("wb") as log:
        idp = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            command, cwd=PROJECT_ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL, **pin(cpu)
        )
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(OSError):
            jwks_fetches(idp_port)
            return idp
        if time.monotonic() > deadline or idp.poll() is not None:
            idp.kill()
            idp.wait()
            raise RuntimeError(f"the fake IdP did not start; see {workdir / 'idp.log'}")
        time.sleep(0.05)


def run_all(bench: Bench, issuer: Issuer, args: argparse.Namespace) -> int:
    bench.targets = make_targets(bench, args.sdk_python)
    issuer.audience = bench.targets["A"].env["MCP_SERVER_URL"]  # B ignores tokens; A must accept them
    print("minting tokens ...")
    one = issuer.rs256("bench-one")
    rotating = [issuer.rs256(f"bench-{index}") for index in range(1000)]
    unknown = [issuer.unknown_kid(index) for index in range(1000)]
    files = {
        "one": write_tokens(bench.workdir / "tokens-one.txt", [one]),
        "rotating": write_tokens(bench.workdir / "tokens-1000.txt", rotating),
        "unknown": write_tokens(bench.workdir / "tokens-unknown-kid.txt", unknown),
    }
    for target in bench.targets.values():
        target.token = one
    calls = tuple(bench.targets)
    scenarios = [
        Scenario("one_token", "one token reused", "call", files["one"], calls),
        Scenario("rotating", "1000 tokens round-robin", "call", files["rotating"], calls),
        Scenario("bad_signature", "bad signatures, all distinct", "bad_signature", files["one"], ("A",)),
        Scenario("forged_payload", "forged payloads, all distinct", "forged_payload", files["one"], ("A",)),
        Scenario("unknown_kid", "unknown kid flood, 1000 kids", "reject", files["unknown"], ("A",)),
    ]
    selected = set(args.scenarios.split(","))
    if unknown_names := selected - {scenario.name for scenario in scenarios}:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown_names))}")
    scenarios = [scenario for scenario in scenarios if scenario.name in selected]

    print(f"start-up, {args.startups} times per target ...")
    startups = start_up(bench, args.startups)
    for name, values in startups.items():
        print(f"  {name}: " + ", ".join(f"{value:.2f} s" for value in values))

    for target in bench.targets.values():
        target.start(bench.workdir, bench.server_cpu)
        bench.wrk(target, "call", files["rotating"], 2)  # warm-up: lazy imports, caches, allocator
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats}")
        order = calls if repeat % 2 == 0 else calls[::-1]  # A B C C+, then C+ C B A, ...
        for scenario in scenarios:
            for name in order:
                if name in scenario.targets:
                    bench.measure(bench.targets[name], scenario, repeat)
            if "B" in scenario.targets:
                bench.paired.setdefault(scenario.name, []).append(bench.side_by_side(scenario, repeat))
    if args.alternating_pairs > 0:
        print("A/B in alternating short runs ...")
        for scenario in scenarios:
            if "B" in scenario.targets:
                bench.alternating[scenario.name] = bench.alternate(
                    scenario, args.alternating_pairs, args.alternating_seconds
                )
    for target in bench.targets.values():
        target.stop()

    memory = None
    if args.memory_tokens > 0:
        memory = memory_run(bench, issuer, args.memory_tokens, args.cache_entries)
        print(
            f"memory: {memory['tokens']} tokens, cache {memory['cache_entries']}: RSS {memory['rss_before_mib']:.1f}"
            f" -> {memory['rss_after_mib']:.1f} MiB ({memory['growth_mib']:+.1f}) in {memory['seconds']:.0f} s,"
            f" {memory['wrong']} wrong",
        )

    lines, figures = verdicts(bench, startups, memory)
    report = [
        f"Machine: {machine()}",
        f"wrk -t1 -c{bench.connections} -d{bench.duration:g}s per run, {args.repeats} interleaved repeats, medians;"
        f" server pinned to CPU {bench.server_cpu}, wrk and the fake IdP to CPU {bench.load_cpu}.",
        "",
        *(f"- {name}: {target.label}" for name, target in bench.targets.items()),
        "",
        *table(bench, scenarios),
        "",
        "Start-up to the first correct answer (median): "
        + ", ".join(f"{name} {value:.2f} s" for name, value in figures["startup_seconds"].items()),
        "",
        *lines,
    ]
    text = "\n".join(report)
    print("\n" + text)
    (bench.workdir / "results.md").write_text(text + "\n")
    raw = {"figures": figures, "runs": [run.__dict__ for run in bench.runs], "startups": startups}
    (bench.workdir / "results.json").write_text(json.dumps(raw, indent=2, default=str))
    print(f"\nresults: {bench.workdir / 'results.md'}")
    return 0 if figures["wrong_answers"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

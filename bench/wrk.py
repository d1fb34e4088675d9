"""wrk, the load generator: the command line for one load, the result line its Lua script prints, and runs."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.proc_stats import pin

LUA_SCRIPT = Path(__file__).resolve().parent / "lua" / "mcp_call.lua"
RESULT_PREFIX = "WRK_RESULT "
LOOPBACK = "127.0.0.1"
# what bench/lua/mcp_call.lua sends and expects
MODES = ("call", "bad_signature", "forged_payload", "reject", "dpop_call", "bad_proof")


@dataclass(frozen=True)
class Load:
    """What one wrk sends to one server: `mode` requests for `tool`, with the tokens of `token_file`."""

    port: int
    mode: str
    tool: str
    token_file: Path | None


@dataclass(frozen=True)
class WrkResult:
    """The figures of one wrk run, as bench/lua/mcp_call.lua reports them."""

    requests: int
    duration_us: int
    ok: int
    wrong: int
    socket_errors: int
    timeouts: int
    p50_us: int
    p99_us: int
    wrong_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us > 0 else 0.0

    @property
    def failures(self) -> int:
        """Answers that were not the right one, and requests that got none."""
        return self.wrong + self.socket_errors + self.timeouts


def parse_result(output: str) -> WrkResult:
    """The WRK_RESULT line of wrk's output; ValueError if there is none or it is not the script's JSON."""
    line = next((line for line in output.splitlines() if line.startswith(RESULT_PREFIX)), None)
    if line is None:
        raise ValueError("no WRK_RESULT line in wrk's output")
    try:
        data = json.loads(line.removeprefix(RESULT_PREFIX))
        return WrkResult(
            requests=int(data["requests"]),
            duration_us=int(data["duration_us"]),
            ok=int(data["ok"]),
            wrong=int(data["wrong"]),
            socket_errors=int(data["socket_errors"]),
            timeouts=int(data["timeouts"]),
            p50_us=int(data["p50_us"]),
            p99_us=int(data["p99_us"]),
            wrong_kinds={str(kind): int(count) for kind, count in dict(data["wrong_kinds"]).items()},
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"unreadable WRK_RESULT line: {line!r}") from exc


def command(load: Load, *, connections: int, seconds: float, limit: int = 0) -> list[str]:
    """wrk's command line: one thread, `connections` open, for `seconds`; `limit` > 0 stops after that many."""
    return [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA_SCRIPT),
        f"http://{LOOPBACK}:{load.port}",
        "--",
        load.mode,
        load.tool,
        str(load.token_file) if load.token_file else "-",
        str(limit),
    ]


def start(load: Load, *, connections: int, seconds: float, cpu: int | None, limit: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - wrk from the bench set-up
        command(load, connections=connections, seconds=seconds, limit=limit),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **pin(cpu),
    )


def run_together(loads: list[Load], *, connections: int, seconds: float, cpu: int | None) -> list[WrkResult]:
    """One wrk per load, all at the same time; their results in the same order. RuntimeError if wrk fails."""
    processes = [start(load, connections=connections, seconds=seconds, cpu=cpu) for load in loads]
    results = []
    for process in processes:
        output, errors = process.communicate(timeout=seconds + 60)
        if process.returncode != 0:
            raise RuntimeError(f"wrk failed ({process.returncode}):\n{output}\n{errors}")
        try:
            results.append(parse_result(output))
        except ValueError as exc:
            raise RuntimeError(f"{exc}:\n{output}\n{errors}") from exc
    return results


def run(load: Load, *, connections: int, seconds: float, cpu: int | None) -> WrkResult:
    return run_together([load], connections=connections, seconds=seconds, cpu=cpu)[0]

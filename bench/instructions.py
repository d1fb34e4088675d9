"""Instructions per tool call, counted by valgrind: A (auth on) against B (the same stack without the bearer layer
and scope gate), without the noise of CPU time.

CPU time per call carries each process's luck and the machine's drift (±3 % from one process to the next, see
bench/processes.py). The number of instructions a server executes for the same calls carries much less: valgrind's
cachegrind counts them, and two runs on an otherwise idle machine agree within about 0.1 %. It does not see how
long they take (caches, the TLB, branch prediction), so it tells how much work the auth code adds, not what that
work costs on a given machine: `bench.run` and `bench.processes` measure that.

Each server is run under cachegrind twice, with the same start and warm-up (1000 tokens round-robin, as bench.run,
or the one token), once followed by `--count` tool calls and once staying idle as long as those calls took: the
difference over `--count` is the cost of one call, start-up, warm-up, shutdown and the work done on a timer
(uvicorn's tick every 0.1 s, the log flush every 0.2 s) cancelling out. Every answer is checked. About 6 minutes
for A and B on two CPUs (valgrind runs Python about 50 times slower). Run nothing else meanwhile: a loaded
machine makes the calls take longer, and the timers' work then differs between the two runs.

    .venv/bin/python -m bench.instructions
    .venv/bin/python -m bench.instructions --tree before=/tmp/before --tree after=. --calls rotating
    .venv/bin/python -m bench.instructions --connections 8     # calls in flight together, as under wrk's load
    .venv/bin/python -m bench.instructions --functions 25      # where A's extra instructions are, by C function
    .venv/bin/python -m bench.instructions --pages             # pages missed per call, TLB-shaped (a model)

`--connections N` spreads the measured calls over N kept-alive connections, one thread each, so that up to N are
in flight at once (valgrind makes the server the slow side). Every connection makes one call at the end of the
warm-up in both runs, so opening them cancels out too.

`--functions N` prints the N functions whose instructions per call differ most between the first two servers: the
interpreter's C functions (`_PyEval_EvalFrameDefault` runs the Python code itself), each named with the source file
its instructions come from, as cachegrind attributes them.

`--pages` runs cachegrind's cache simulation with 4 KiB lines in the shape of the TLBs (PAGE_SIMULATION): it counts
the pages a call touches that were not among the last ones touched, a proxy for TLB misses, which this VM has no
counters for. A model, not the hardware: no page-walk caches, no huge pages, and instructions and data share the
second level as they do in the real STLB.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from bench.processes import TOKEN_SETS, Kind, add_tree_arguments, kinds_of
from bench.run import LOOPBACK, MODERN, MODERN_META, clean_environment, free_port, server_env, start_idp
from bench.tokens import Issuer

TOOL = "add_numbers"
START_TIMEOUT = 600.0  # seconds: Python's start-up under valgrind
STOP_TIMEOUT = 300.0  # seconds: a server's graceful stop under valgrind
WARM_UP_TOKENS = 1000
# Two runs of a server differ by a few million instructions whatever they do (start-up, timers): over 20 calls
# that was ±10 % of a call, over 2000 it is within 0.5 %.
MIN_COUNT = 500
# Nothing that happens once in a while may land in one run's measured calls and not in another's: no JWKS refresh
# and no cached verification running out during a run (the settings' maxima), and no automatic collection by
# the cyclic collector (SITE_CUSTOMIZE; calls leave no cyclic garbage, see web/sdk_cycles.py). A full collection
# in the window of 1000 calls moved a server's figure by up to 1 %. A fixed hash seed lays dicts and sets out alike
# in every run.
STEADY = {"OAUTH_JWKS_CACHE_SECONDS": "604800", "OAUTH_TOKEN_CACHE_SECONDS": "3600", "PYTHONHASHSEED": "0"}
# `--pages`: the cache simulation with 4 KiB lines, so that it counts pages rather than cache lines, in the shape of
# this VM's TLBs (Intel: 128 instruction and 64 data entries, then 1536 shared): a miss in the first level is a
# page not among the last 64 (data) or 128 (instructions) touched, a miss in the second one a page walk.
PAGE_SIMULATION = ("--I1=524288,8,4096", "--D1=262144,4,4096", "--LL=6291456,12,4096")
SITE_CUSTOMIZE = "import gc\n\ngc.set_threshold(0)  # bench.instructions: no automatic collections\n"


@dataclass(frozen=True)
class Counts:
    """Cachegrind's totals for one process: event name -> count, and the instructions of each function."""

    events: dict[str, int]
    functions: dict[str, int] = field(default_factory=dict)

    def per_call(self, baseline: Counts, calls: int) -> dict[str, float]:
        return {name: (count - baseline.events.get(name, 0)) / calls for name, count in self.events.items()}

    def functions_per_call(self, baseline: Counts, calls: int) -> dict[str, float]:
        names = self.functions.keys() | baseline.functions.keys()
        return {name: (self.functions.get(name, 0) - baseline.functions.get(name, 0)) / calls for name in sorted(names)}


def read_counts(text: str) -> Counts:
    """The `events:` and `summary:` lines of a cachegrind output file, and the instructions (`Ir`) of each
    function, named `function (source file)`: the interpreter's C functions, which Python code runs through."""
    names: list[str] | None = None
    functions: dict[str, int] = {}
    source, function = "???", None
    for line in text.splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith("fl="):
            source = line[3:].strip().rsplit("/", 1)[-1]
        elif line.startswith("fn="):
            function = f"{line[3:].strip()} ({source})"
        elif line[:1].isdigit() and function is not None and names and names[0] == "Ir":
            columns = line.split()
            if len(columns) > 1:
                functions[function] = functions.get(function, 0) + int(columns[1])
        elif line.startswith("summary:") and names is not None:
            values = [int(value) for value in line.split()[1:]]
            if len(values) != len(names):
                raise ValueError(f"summary has {len(values)} values for {len(names)} events")
            return Counts(dict(zip(names, values, strict=True)), functions)
    raise ValueError("no events/summary lines: not a cachegrind output file")


def largest_differences(first: dict[str, float], second: dict[str, float], count: int) -> list[tuple[str, float]]:
    """The `count` functions whose figures per call differ most between two servers, largest first."""
    differences = {name: first.get(name, 0.0) - second.get(name, 0.0) for name in first.keys() | second.keys()}
    return sorted(differences.items(), key=lambda item: (-abs(item[1]), item[0]))[:count]


def print_differences(
    what: str, first: tuple[str, dict[str, float]], second: tuple[str, dict[str, float]], count: int, decimals: int = 0
) -> None:
    """The table of largest_differences: each function's difference, then its figure in either server."""
    (first_name, mine), (second_name, theirs) = first, second
    print(f"functions whose {what} per call differ most ({first_name} - {second_name}, {first_name}, {second_name}):")
    for name, difference in largest_differences(mine, theirs, count):
        figures = (f"{value:12,.{decimals}f}" for value in (mine.get(name, 0.0), theirs.get(name, 0.0)))
        print(f"  {difference:+12,.{decimals}f} {' '.join(figures)}  {name}")


def call_body(request_id: int) -> str:
    params = {"name": TOOL, "arguments": {"a": request_id, "b": 0.5}, "_meta": MODERN_META}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})


def right_answer(payload: bytes, request_id: int) -> bool:
    try:
        answer = json.loads(payload)
    except ValueError:
        return False
    result = answer.get("result") if isinstance(answer, dict) else None
    return (
        isinstance(result, dict)
        and answer.get("id") == request_id
        and result.get("structuredContent") == {"result": request_id + 0.5}
    )


class Caller:
    """Tool calls over one kept-alive connection, as wrk makes them; a wrong answer stops the run."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection(LOOPBACK, port, timeout=120)
        self.request_id = 0

    def call(self, token: str) -> None:
        self.request_id += 1
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": "tools/call",
            "Mcp-Name": TOOL,
            "Authorization": f"Bearer {token}",
        }
        self.connection.request("POST", "/mcp", call_body(self.request_id), headers)
        response = self.connection.getresponse()
        payload = response.read()
        if response.status != 200 or not right_answer(payload, self.request_id):
            raise RuntimeError(f"wrong answer to call {self.request_id}: {response.status} {payload[:200]!r}")

    def close(self) -> None:
        self.connection.close()


def wait_until_serving(process: subprocess.Popen[bytes], port: int, token: str, log: Path) -> Caller:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; see {log}")
        caller = Caller(port)
        try:
            caller.call(token)
            return caller
        except (OSError, http.client.HTTPException):
            caller.close()
            time.sleep(0.5)
    raise RuntimeError(f"no answer within {START_TIMEOUT:g} s; see {log}")


def split(count: int, parts: int) -> list[int]:
    """`count` calls shared out over `parts` connections, as evenly as they go."""
    return [count // parts + (index < count % parts) for index in range(parts)]


def call_many(caller: Caller, tokens: list[str], count: int, offset: int) -> None:
    for index in range(count):
        caller.call(tokens[(offset + index) % len(tokens)])


def tokens_for(issuer: Issuer, audience: str) -> tuple[str, list[str]]:
    """The one token and the 1000 rotating ones, for a server whose URL is `audience`."""
    one = issuer.rs256("bench-one", audience)
    return one, [issuer.rs256(f"bench-{index}", audience) for index in range(WARM_UP_TOKENS)]


def plan(one: str, rotating: list[str], warm_up: str, calls: str) -> tuple[list[str], list[str]]:
    """The warm-up's tokens, in order (ending with 200 calls of the one token), and the measured calls' tokens."""
    warm = [*rotating, *[one] * 200] if warm_up == "rotating" else [one] * (len(rotating) + 200)
    return warm, ([one] if calls == "one_token" else rotating)


class Launch(NamedTuple):
    """How one server of a kind is started and called: its port and environment, the one token, then the tokens
    of the warm-up and of the measured calls."""

    port: int
    env: dict[str, str]
    one: str
    warm_up: list[str]
    measured: list[str]


def launch(kind: Kind, site: Path, args: argparse.Namespace, issuer: Issuer, idp_port: int) -> Launch:
    """A server of `kind` on a free port, in the steady settings, with `site` (its `sitecustomize`) on its path."""
    port = free_port()
    env = {
        **server_env(clean_environment(), port, idp_port, **STEADY),
        "PYTHONPATH": f"{site}{os.pathsep}{kind.root}",
    }
    one, rotating = tokens_for(issuer, env["MCP_SERVER_URL"])
    warm_up, measured = plan(one, rotating, args.warm_up, args.calls)
    return Launch(port, env, one, warm_up, measured)


def run_once(
    kind: Kind, count: int, idle: float, args: argparse.Namespace, issuer: Issuer, idp_port: int, workdir: Path
) -> tuple[Counts, float]:
    """One server of `kind` under cachegrind: start, warm up, `count` measured calls, `idle` seconds without any,
    stop. Its counts, and how long the measured calls took."""
    label = f"{kind.name}-{count}"
    port, env, one, warm_up, measured = launch(kind, workdir / "site", args, issuer, idp_port)
    out = workdir / f"{label}.cachegrind"
    log = workdir / f"{label}.log"
    if args.pages:
        cache_sim = ["--cache-sim=yes", *PAGE_SIMULATION]
    elif args.last_level:
        cache_sim = ["--cache-sim=yes", f"--LL={args.last_level}"]
    else:
        cache_sim = ["--cache-sim=no"]
    command = ["valgrind", "--tool=cachegrind", *cache_sim, f"--cachegrind-out-file={out}", *kind.command()]
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - valgrind and our own interpreter and scripts
            command, cwd=workdir, env=env, stdout=sink, stderr=sink, stdin=subprocess.DEVNULL
        )
    try:
        caller = wait_until_serving(process, port, one, log)
        for token in warm_up:
            caller.call(token)
        callers = [caller, *(Caller(port) for _ in range(args.connections - 1))]
        for other in callers[1:]:
            other.call(one)
        shares = split(count, len(callers))
        offsets = [sum(shares[:index]) for index in range(len(callers))]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(callers)) as pool:
            for future in [
                pool.submit(call_many, each, measured, share, offset)
                for each, share, offset in zip(callers, shares, offsets, strict=True)
            ]:
                future.result()
        seconds = time.monotonic() - started
        time.sleep(idle)
        for each in callers:
            each.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"{label}: the server exited with {process.returncode}; see {log}")
    return read_counts(out.read_text()), seconds


def per_call(
    kind: Kind, args: argparse.Namespace, issuer: Issuer, idp_port: int, workdir: Path
) -> tuple[dict[str, float], dict[str, float]]:
    """The measured run, then the baseline, which stays idle as long as the measured calls took: the work done on
    a timer in that time (uvicorn's tick, the log flush) is in both, and cancels out. Events per call, and the
    instructions per call of each function."""
    measured, seconds = run_once(kind, args.count, 0.0, args, issuer, idp_port, workdir)
    baseline, _ = run_once(kind, 0, seconds, args, issuer, idp_port, workdir)
    return measured.per_call(baseline, args.count), measured.functions_per_call(baseline, args.count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", choices=TOKEN_SETS, default="one_token", help="the measured calls")
    parser.add_argument("--count", type=int, default=2000, help="measured calls per server")
    parser.add_argument(
        "--warm-up",
        choices=TOKEN_SETS,
        default="rotating",
        help="before the measured calls: 1000 tokens round-robin (as bench.run does) or the one token",
    )
    parser.add_argument(
        "--connections", type=int, default=1, help="kept-alive connections sharing the measured calls (wrk: 16)"
    )
    parser.add_argument(
        "--last-level",
        metavar="SIZE,ASSOC,LINE",
        help="simulate the caches too, with this last level (e.g. 2097152,16,64), and print its misses per call",
    )
    parser.add_argument(
        "--pages",
        action="store_true",
        help="simulate the TLBs instead (caches of 4 KiB pages) and print their misses per call",
    )
    parser.add_argument(
        "--functions",
        type=int,
        default=0,
        metavar="N",
        help="also print the N functions whose instructions per call differ most between the first two servers",
    )
    add_tree_arguments(parser)
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)), help="valgrind runs at once")
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= 64:
        parser.error("--connections must be between 1 and 64")
    if args.pages and args.last_level:
        parser.error("--pages and --last-level are two different simulations: choose one")
    if not 0 <= args.functions <= 1000:
        parser.error("--functions must be between 0 and 1000")
    if args.count < MIN_COUNT:
        parser.error(f"--count must be at least {MIN_COUNT}: fewer calls share out too little of a run's own noise")
    try:
        kinds = kinds_of(args)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if shutil.which("valgrind") is None:
        print("valgrind is missing: run bench/setup.sh", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-instructions-"))
    (workdir / "site").mkdir()
    (workdir / "site" / "sitecustomize.py").write_text(SITE_CUSTOMIZE)
    idp_port = free_port()
    issuer = Issuer(f"http://{LOOPBACK}:{idp_port}/", audience="")
    issuer.write_jwks(workdir / "jwks.json")
    idp = start_idp(workdir, idp_port)
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            counts = list(pool.map(lambda kind: per_call(kind, args, issuer, idp_port, workdir), kinds))
    finally:
        idp.send_signal(signal.SIGTERM)
        idp.wait(timeout=10)

    per_kind = {kind.name: events for kind, (events, _) in zip(kinds, counts, strict=True)}
    functions = {kind.name: per_function for kind, (_, per_function) in zip(kinds, counts, strict=True)}
    over = f" over {args.connections} connections" if args.connections > 1 else ""
    print(f"instructions per tool call ({args.count} calls{over}, {args.calls}, after a {args.warm_up} warm-up):")
    for name, figures in per_kind.items():
        misses = ""
        if args.last_level:
            last_level = sum(figures.get(event, 0.0) for event in ("ILmr", "DLmr", "DLmw"))
            first_level = sum(figures.get(event, 0.0) for event in ("I1mr", "D1mr", "D1mw"))
            misses = f"   L1 misses {first_level:10,.0f}   last-level misses {last_level:8,.0f}"
        elif args.pages:
            data = figures.get("D1mr", 0.0) + figures.get("D1mw", 0.0)
            walks = figures.get("DLmr", 0.0) + figures.get("DLmw", 0.0)
            code, code_walks = figures.get("I1mr", 0.0), figures.get("ILmr", 0.0)
            misses = f"   pages missed: data {data:8,.0f} (walks {walks:6,.0f})"
            misses += f"   code {code:7,.0f} (walks {code_walks:5,.0f})"
        print(f"  {name:10} {figures['Ir']:12,.0f}{misses}")
    if len(kinds) >= 2:
        first, second = kinds[0].name, kinds[1].name
        ratio = per_kind[first]["Ir"] / per_kind[second]["Ir"] - 1
        print(f"{first} over {second}: {ratio:+.2%} ({per_kind[first]['Ir'] - per_kind[second]['Ir']:+,.0f} per call)")
        if args.functions:
            print_differences("instructions", (first, functions[first]), (second, functions[second]), args.functions)
    print(f"(cachegrind files and server logs: {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

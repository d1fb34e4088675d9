"""`make bench`: this server with auth (A), the same server without it (B) and the SDK's defaults (C, C+) under wrk.

Every scenario runs on 127.0.0.1, interleaved over several repeats, every answer checked; the baselines are
measured in the same run. Prints a table, A vs B, and one PASS/FAIL/SKIP line per floor (docs/performance.md),
and writes results.md and results.json. Exit status: 1 on any wrong answer, and on any missed floor unless
--no-fail-on-floor; 2 for bad arguments or a missing wrk.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import floor, report
from bench.dpop import PROOFS_PER_SECOND, BoundClients
from bench.floor import Check, Status
from bench.memory import MemoryResult, memory_run
from bench.proc_stats import machine, split_cpus
from bench.scenarios import NAMES, select
from bench.session import Session
from bench.targets import PROJECT_ROOT, FakeIdP, Target, free_port, make_targets
from bench.tokens import SCOPES, Issuer, opaque_tokens, write_tokens
from bench.wrk import LOOPBACK, Load

DEFAULT_SDK_PYTHON = PROJECT_ROOT / ".venv" / "sdk-reference" / "bin" / "python"
WARM_UP_SECONDS = 2.0
RANGES = (  # option, lowest, highest
    ("repeats", 1, 50),
    ("connections", 1, 1024),
    ("startups", 1, 20),
    ("memory_tokens", 0, 1_000_000),
    ("cache_entries", 1, 10_000_000),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options, each checked before anything starts (exit 2 and a message naming the option if not)."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats of every scenario")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run (at most 120)")
    parser.add_argument("--connections", type=int, default=16, help="wrk's open connections")
    parser.add_argument("--startups", type=int, default=3, help="starts per target for the start-up time")
    parser.add_argument(
        "--memory-tokens",
        type=int,
        default=floor.MEMORY_TOKENS,
        help=f"distinct valid tokens in the memory run, 0 skips it (the floor counts {floor.MEMORY_TOKENS:,})",
    )
    parser.add_argument("--cache-entries", type=int, default=10_000, help="OAUTH_TOKEN_CACHE_ENTRIES of the memory run")
    parser.add_argument(
        "--scenarios",
        default=",".join(NAMES),
        help="comma-separated subset to run (the flood ratios need one_token for C's calls/s)",
    )
    parser.add_argument("--out", type=Path, help="directory for logs, tokens and results (default: a new temp dir)")
    parser.add_argument(
        "--sdk-python",
        type=Path,
        default=DEFAULT_SDK_PYTHON,
        help="interpreter of the venv holding only the SDK, for C (bench/setup.sh makes it)",
    )
    parser.add_argument(
        "--no-fail-on-floor",
        action="store_true",
        help="a missed floor prints its FAIL line but exits 0 (a wrong answer still exits 1)",
    )
    args = parser.parse_args(argv)
    for name, low, high in RANGES:
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name.replace('_', '-')} must be between {low:,} and {high:,}")
    if not 0 < args.duration <= 120:
        parser.error("--duration must be more than 0 and at most 120")
    try:
        args.scenarios = select(args.scenarios)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def exit_status(checks: list[Check], *, fail_on_floor: bool) -> int:
    """1 for a wrong answer; 1 for a missed floor unless told not to; else 0. A skipped line never fails."""
    wrong = any(check.correctness and check.status is Status.FAIL for check in checks)
    missed = any(check.status is Status.FAIL for check in checks)
    return 1 if wrong or (missed and fail_on_floor) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress lines show as they come, through make and pipes too
    if shutil.which("wrk") is None or not args.sdk_python.exists():
        print("wrk or the SDK reference venv is missing: run bench/setup.sh (make bench does)", file=sys.stderr)
        return 2
    workdir = args.out or Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    server_cpu, load_cpu = split_cpus(list(os.sched_getaffinity(0)))
    print(f"machine: {machine()}\nworkdir: {workdir}")

    idp_port = free_port()
    issuer = Issuer(f"http://{LOOPBACK}:{idp_port}/", audience="")
    issuer.write_jwks(workdir / "jwks.json")
    idp = FakeIdP(workdir, idp_port, load_cpu)
    environ = dict(os.environ)
    targets = make_targets(workdir, idp_port, args.sdk_python, environ)
    # I accepts A's URL as its audience (bench/targets.py), as the bench's JWTs name it
    introspected = {"iss": issuer.issuer, "aud": targets["A"].url, "scope": SCOPES, "client_id": "bench-client"}
    (workdir / "introspection.json").write_text(json.dumps(introspected))
    try:
        idp.start()
        token_files = mint_tokens(issuer, targets, workdir)
        session = Session(workdir, args.duration, args.connections, server_cpu, load_cpu, idp, targets, token_files)
        session.fresh_token_files = dpop_token_files(issuer, targets["A"].url, workdir, args.duration)
        return run_all(session, issuer, environ, args)
    except RuntimeError as exc:  # a target that does not start, wrk failing, wrong answers side by side
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        for target in targets.values():
            target.stop()
        idp.stop()


def mint_tokens(issuer: Issuer, targets: dict[str, Target], workdir: Path) -> dict[str, Path]:
    """The scenarios' token files, for A's URL; each target's start-up probe token."""
    print("minting tokens ...")
    issuer.audience = targets["A"].url
    one = issuer.rs256("bench-one")
    for target in targets.values():
        target.token = one  # C and C+ ignore it
    # B runs the real auth layers for its first request (bench/noauth_server.py): that one must pass them.
    targets["B"].token = issuer.rs256("bench-one", audience=targets["B"].url)
    return {
        "one": write_tokens(workdir / "tokens-one.txt", [one]),
        "rotating": write_tokens(workdir / "tokens-1000.txt", [issuer.rs256(f"bench-{i}") for i in range(1000)]),
        "unknown_kid": write_tokens(workdir / "tokens-unknown-kid.txt", [issuer.unknown_kid(i) for i in range(1000)]),
        "opaque_one": write_tokens(workdir / "tokens-opaque-one.txt", opaque_tokens("one", 1)),
        "opaque_1000": write_tokens(workdir / "tokens-opaque-1000.txt", opaque_tokens("rotating", 1000)),
    }


def dpop_token_files(issuer: Issuer, url: str, workdir: Path, duration: float) -> dict[str, Callable[[], Path]]:
    """The DPoP scenarios' `token<TAB>proof` files, made afresh before each run: a proof is good once, and only
    within the server's OAUTH_DPOP_MAX_AGE_SECONDS of its making."""
    print("making DPoP keys and bound tokens ...")
    one, many = BoundClients(issuer, url, 1, "dpop-one"), BoundClients(issuer, url, 1000, "dpop")
    proofs = math.ceil(duration * PROOFS_PER_SECOND)
    return {
        "dpop_one": lambda: one.write_proofs(workdir / "proofs-one.txt", proofs),
        "dpop_1000": lambda: many.write_proofs(workdir / "proofs-1000.txt", proofs),
        "dpop_bad": lambda: one.write_proofs(workdir / "proofs-bad.txt", 1),
    }


def run_all(session: Session, issuer: Issuer, environ: dict[str, str], args: argparse.Namespace) -> int:
    scenarios = args.scenarios
    print(f"start-up, {args.startups} times per target ...")
    startups = session.start_up(args.startups)
    for name, values in startups.items():
        print(f"  {name}: " + ", ".join(f"{value:.2f} s" for value in values))

    for target in session.targets.values():
        target.start(session.workdir, session.server_cpu)
        # warm-up: lazy imports, caches, allocator
        session.wrk(Load(target.port, "call", target.tool, session.token_files["rotating"]), WARM_UP_SECONDS)
    names = tuple(session.targets)
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats}")
        order = names if repeat % 2 == 0 else names[::-1]  # A B C C+, then C+ C B A, ...
        for scenario in scenarios:
            for name in order:
                if name in scenario.targets:
                    session.measure(session.targets[name], scenario, repeat)
            if "B" in scenario.targets:
                session.measure_side_by_side(scenario, repeat)
    for target in session.targets.values():
        target.stop()

    memory: MemoryResult | None = None
    if args.memory_tokens > 0:
        memory = memory_run(session, issuer, environ, distinct=args.memory_tokens, cache_entries=args.cache_entries)
        print(
            f"memory: {memory.tokens} tokens, cache {memory.cache_entries}: RSS {memory.rss_before_mib:.1f}"
            f" -> {memory.rss_after_mib:.1f} MiB ({memory.growth_mib:+.1f}) in {memory.seconds:.0f} s,"
            f" {memory.wrong} wrong"
        )

    checks = floor.checks(session.runs, duration=session.duration, startups=startups, memory=memory)
    header = [
        f"Machine: {machine()}",
        f"wrk -t1 -c{session.connections} -d{session.duration:g}s per run, {args.repeats} interleaved repeats,"
        f" medians; servers pinned to CPU {session.server_cpu}, wrk and the fake IdP to CPU {session.load_cpu}.",
    ]
    text = report.results_text(
        header=header,
        labels={name: target.label for name, target in session.targets.items()},
        runs=session.runs,
        scenarios=scenarios,
        startups=startups,
        a_vs_b=[*floor.a_vs_b(session.runs, session.side_by_side), *floor.introspection_figure(session.runs)],
        checks=checks,
    )
    print("\n" + text)
    raw = report.results_json(session.runs, startups, session.side_by_side, memory, checks)
    print(f"results: {report.write(session.workdir, text, raw)}")
    return exit_status(checks, fail_on_floor=not args.no_fail_on_floor)


if __name__ == "__main__":
    sys.exit(main())

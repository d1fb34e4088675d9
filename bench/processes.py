"""Auth overhead over several processes: N servers with auth (A) and N without (B), all started at once on one
CPU, each loaded in turn in short wrk runs. One A against one B (as `bench.run` compares them) carries the
luck of each process's memory layout, about ±3 points; several of each, compared within the same minute,
do not. Prints each process's median CPU per call and A's median over B's.

    .venv/bin/python -m bench.processes --processes 3 --rounds 6 --warm-up one_token
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.run import LOOPBACK, Bench, cpu_seconds, free_port, make_targets, pin, wait_for_idp
from bench.tokens import Issuer, write_tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=3, help="servers of each kind")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0, help="per wrk run")
    parser.add_argument(
        "--warm-up",
        choices=("one_token", "rotating"),
        default="one_token",
        help="what each server serves before the measured one-token runs (bench.run warms up with rotating)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is missing: run bench/setup.sh", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = (cpus[-1], cpus[0]) if len(cpus) >= 2 else (None, None)
    workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-processes-"))
    idp_port = free_port()
    issuer = Issuer(f"http://{LOOPBACK}:{idp_port}/", audience="")
    issuer.write_jwks(workdir / "jwks.json")
    idp = subprocess.Popen(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-m", "bench.fake_idp", "--port", str(idp_port), "--jwks", str(workdir / "jwks.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        **pin(load_cpu),
    )
    bench = Bench(workdir, args.seconds, 16, server_cpu, load_cpu, idp_port)
    servers = []
    try:
        wait_for_idp(bench, idp)
        for index in range(args.processes):
            targets = make_targets(bench, Path(sys.executable))  # C and C+ are not started
            for name in ("A", "B"):
                target = targets[name]
                target.name = f"{name}{index + 1}"
                target.log_path = workdir / f"server-{target.name}.log"
                servers.append(target)
        tokens = {}  # each A checks tokens for its own MCP_SERVER_URL (its port): one token per server
        for target in servers:
            issuer.audience = target.env["MCP_SERVER_URL"]
            one = issuer.rs256("bench-one")
            tokens[target.name] = write_tokens(workdir / f"one-{target.name}.txt", [one])
            rotating = [issuer.rs256(f"bench-{index}") for index in range(1000 if args.warm_up == "rotating" else 0)]
            target.token = one
            target.start(workdir, server_cpu)
            warm = write_tokens(workdir / f"warm-{target.name}.txt", rotating) if rotating else tokens[target.name]
            bench.wrk(target, "call", warm, 2)
        cost: dict[str, list[float]] = {target.name: [] for target in servers}
        for round_ in range(args.rounds):
            for target in servers if round_ % 2 == 0 else servers[::-1]:
                before = cpu_seconds(target.pid)
                result = bench.wrk(target, "call", tokens[target.name], args.seconds)
                wrong = result["wrong"] + result["socket_errors"] + result["timeouts"]
                if wrong:
                    raise RuntimeError(f"{target.name} gave {wrong} wrong answers: {result['wrong_kinds']}")
                cost[target.name].append((cpu_seconds(target.pid) - before) / max(result["requests"], 1) * 1e6)
        medians = {name: statistics.median(values) for name, values in cost.items()}
        for name, value in medians.items():
            print(f"{name:4} median {value:6.1f} us CPU per call  runs {[round(v) for v in cost[name]]}")
        a = statistics.median(value for name, value in medians.items() if name.startswith("A"))
        b = statistics.median(value for name, value in medians.items() if name.startswith("B"))
        print(f"A {a:.1f} us, B {b:.1f} us per call (medians over processes): auth {a / b - 1:+.1%}")
        return 0
    finally:
        for target in servers:
            target.stop()
        idp.send_signal(signal.SIGTERM)
        idp.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())

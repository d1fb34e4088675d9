"""CPU per request over several processes: N servers of each kind, all started at once on one CPU, each loaded in
turn in short wrk runs. One process against another (as `bench.run` compares A and B) carries the luck of each
process's memory layout, about ±3 points; several of each, compared within the same minute, do not.

By default the kinds are A (this checkout, auth on) and B (the same without the bearer layer and scope gate) and
the runs are tool calls with one token. `--tree` and `--noauth-tree` compare other checkouts of this project
instead (e.g. `git worktree add /tmp/before HEAD~1`), and `--mode` measures a flood of refusals. Prints each
process's median CPU per request, each kind's median over its processes, and the first kind over the second.

    .venv/bin/python -m bench.processes --processes 3 --rounds 6 --warm-up one_token
    .venv/bin/python -m bench.processes --processes 2 --tree before=/tmp/before --tree after=. --mode bad_signature
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.run import (
    LOOPBACK,
    PROJECT_ROOT,
    Bench,
    Target,
    clean_environment,
    cpu_seconds,
    free_port,
    server_env,
    start_idp,
)
from bench.tokens import Issuer, write_tokens

MODES = ("call", "bad_signature", "forged_payload", "reject")
TOKEN_SETS = ("one_token", "rotating")  # the one token, or 1000 tokens round-robin


@dataclass(frozen=True)
class Kind:
    """A server to start several times: a checkout of this project, with auth (server.py) or without."""

    name: str
    root: Path
    auth: bool = True

    def command(self) -> list[str]:
        if self.auth:
            return [sys.executable, str(self.root / "server.py")]
        return [sys.executable, "-m", "bench.noauth_server"]


def kind_of(spec: str, *, auth: bool) -> Kind:
    """NAME=PATH: a checkout of this project (its server.py must exist)."""
    name, sep, path = spec.partition("=")
    root = Path(path).resolve()
    if not sep or not name or not (root / "server.py").is_file():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH to a checkout of this project, got {spec!r}")
    return Kind(name, root, auth)


def add_tree_arguments(parser: argparse.ArgumentParser) -> None:
    """The checkouts to compare, as kinds_of() reads them."""
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH", help="a checkout, auth on")
    parser.add_argument("--noauth-tree", action="append", default=[], metavar="NAME=PATH", help="the same, as B")


def kinds_of(args: argparse.Namespace) -> list[Kind]:
    kinds = [kind_of(spec, auth=True) for spec in args.tree] + [kind_of(spec, auth=False) for spec in args.noauth_tree]
    if not kinds:
        kinds = [Kind("A", PROJECT_ROOT), Kind("B", PROJECT_ROOT, auth=False)]
    names = [kind.name for kind in kinds]
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"names must differ: {', '.join(names)}")
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=3, help="servers of each kind")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0, help="per wrk run")
    parser.add_argument("--connections", type=int, default=16, help="wrk's open connections (bench.run: 16)")
    parser.add_argument(
        "--warm-up",
        choices=TOKEN_SETS,
        default="one_token",
        help="tool calls each server serves first: the one token, or 1000 tokens round-robin (as bench.run does)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="call",
        help="the measured runs: tool calls with one token, or a flood of bad signatures, forged payloads or"
        " unknown kids (as in bench.run)",
    )
    add_tree_arguments(parser)
    args = parser.parse_args(argv)
    for name, low, high in (("processes", 1, 16), ("rounds", 1, 100), ("connections", 1, 256)):
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name} must be between {low} and {high}")
    if not 0 < args.seconds <= 60:
        parser.error("--seconds must be more than 0 and at most 60")
    try:
        kinds = kinds_of(args)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.mode != "call" and not all(kind.auth for kind in kinds):
        parser.error(f"--mode {args.mode} needs servers with auth: give them with --tree")
    if shutil.which("wrk") is None:
        print("wrk is missing: run bench/setup.sh", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = (cpus[-1], cpus[0]) if len(cpus) >= 2 else (None, None)
    workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-processes-"))
    idp_port = free_port()
    issuer = Issuer(f"http://{LOOPBACK}:{idp_port}/", audience="")
    issuer.write_jwks(workdir / "jwks.json")
    idp = start_idp(workdir, idp_port, load_cpu)
    bench = Bench(workdir, args.seconds, args.connections, server_cpu, load_cpu, idp_port)
    servers: list[Target] = []
    try:
        tokens: dict[str, Path] = {}
        for index in range(args.processes):
            for kind in kinds:
                port = free_port()
                env = {**server_env(clean_environment(), port, idp_port), "PYTHONPATH": str(kind.root)}
                name = f"{kind.name}{index + 1}"
                target = Target(name, kind.name, kind.command(), "add_numbers", env, port, workdir / f"{name}.log")
                issuer.audience = env["MCP_SERVER_URL"]  # each server checks tokens for its own URL
                one = issuer.rs256("bench-one")
                target.token = one
                target.start(workdir, server_cpu)
                servers.append(target)
                one_file = write_tokens(workdir / f"one-{name}.txt", [one])
                if args.warm_up == "rotating":
                    warm = [issuer.rs256(f"bench-{number}") for number in range(1000)]
                    bench.wrk(target, "call", write_tokens(workdir / f"warm-{name}.txt", warm), 2)
                else:
                    bench.wrk(target, "call", one_file, 2)
                if args.mode == "reject":
                    unknown = [issuer.unknown_kid(number) for number in range(1000)]
                    tokens[name] = write_tokens(workdir / f"unknown-{name}.txt", unknown)
                else:
                    tokens[name] = one_file
        cost: dict[str, list[float]] = {target.name: [] for target in servers}
        for round_ in range(args.rounds):
            for target in servers if round_ % 2 == 0 else servers[::-1]:
                before = cpu_seconds(target.pid)
                result = bench.wrk(target, args.mode, tokens[target.name], args.seconds)
                wrong = result["wrong"] + result["socket_errors"] + result["timeouts"]
                if wrong:
                    raise RuntimeError(f"{target.name} gave {wrong} wrong answers: {result['wrong_kinds']}")
                cost[target.name].append((cpu_seconds(target.pid) - before) / max(result["requests"], 1) * 1e6)
        medians = {name: statistics.median(values) for name, values in cost.items()}
        for name, value in medians.items():
            print(f"{name:10} median {value:6.1f} us CPU per request  runs {[round(v) for v in cost[name]]}")
        per_kind = {
            kind.name: statistics.median(
                value for target, value in zip(servers, medians.values(), strict=True) if target.label == kind.name
            )
            for kind in kinds
        }
        print(", ".join(f"{name} {value:.1f} us" for name, value in per_kind.items()) + " (medians over processes)")
        if len(kinds) >= 2:
            first, second = kinds[0].name, kinds[1].name
            print(f"{first} over {second}: {per_kind[first] / per_kind[second] - 1:+.1%}")
        return 0
    finally:
        for target in servers:
            target.stop()
        idp.send_signal(signal.SIGTERM)
        idp.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())

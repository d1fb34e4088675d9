"""Python bytecodes per tool call, by function: A (auth on) against B (the same stack without the bearer layer and
scope gate), to see which of A's functions add work and how much.

Each server is started once with bench.opcode_tracer loaded (through a `sitecustomize`), warmed up as
bench.instructions warms up (1000 tokens round-robin, then 200 calls with the one token, or the one token only),
then traced over `--count` checked tool calls: every bytecode the main thread (the event loop's) executes in that
window is counted against its function. Counts are exact and repeatable, but a bytecode is not a unit of time: one
that calls into C (a dict lookup, a JSON parse) can cost a hundred times another. bench.instructions counts machine
instructions, bench.processes CPU time. About 10 seconds for A and B.

    .venv/bin/python -m bench.opcodes
    .venv/bin/python -m bench.opcodes --warm-up one_token --functions 40
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.instructions import launch, print_differences, wait_until_serving
from bench.processes import TOKEN_SETS, Kind, add_tree_arguments, kinds_of
from bench.run import LOOPBACK, free_port, start_idp
from bench.tokens import Issuer

DUMP_TIMEOUT = 30.0  # seconds for a server to write its counts after SIGUSR2
STOP_TIMEOUT = 30.0
MAX_COUNT = 10_000  # traced calls: tracing makes every call many times slower


TRACER = Path(__file__).with_name("opcode_tracer.py")


def site_customize(output: Path) -> str:
    """Loads this project's tracer (copied next to it, so that any checkout can be traced) into the server."""
    return f"from pathlib import Path\n\nfrom opcode_tracer import install\n\ninstall(Path({str(output)!r}))\n"


def per_call(dump: dict[str, Any], calls: int, root: Path, key: str = "opcodes") -> dict[str, float]:
    """A tracer's counts as `file:function:line` -> count per call, files as short_path names them."""
    counts: dict[str, float] = {}
    for filename, function, line, count in dump[key]:
        name = f"{short_path(filename, root)}:{function}:{line}"
        counts[name] = counts.get(name, 0.0) + count / calls
    return counts


def short_path(filename: str, root: Path) -> str:
    """A file as the tables show it: within site-packages, the standard library or the checkout at `root`, so that
    the same file of two checkouts has the same name."""
    if "/site-packages/" in filename:
        return filename.split("/site-packages/", 1)[1]
    if "/lib/python3." in filename:
        return "stdlib/" + filename.split("/lib/python3.", 1)[1].split("/", 1)[-1]
    if filename.startswith(f"{root}/"):
        return filename[len(str(root)) + 1 :]
    return filename


def trace(kind: Kind, args: argparse.Namespace, issuer: Issuer, idp_port: int, workdir: Path) -> dict[str, Any]:
    """One server of `kind`: start, warm up, `count` traced calls, its counts."""
    site = workdir / f"site-{kind.name}"
    site.mkdir()
    output = workdir / f"{kind.name}.json"
    (site / "sitecustomize.py").write_text(site_customize(output))
    shutil.copyfile(TRACER, site / TRACER.name)
    port, env, one, warm_up, measured = launch(kind, site, args, issuer, idp_port)
    log = workdir / f"{kind.name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
            kind.command(), cwd=workdir, env=env, stdout=sink, stderr=sink, stdin=subprocess.DEVNULL
        )
    try:
        caller = wait_until_serving(process, port, one, log)
        for token in warm_up:
            caller.call(token)
        process.send_signal(signal.SIGUSR1)
        time.sleep(0.5)  # the handler runs between two bytecodes of the main thread
        for index in range(args.count):
            caller.call(measured[index % len(measured)])
        process.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + DUMP_TIMEOUT
        while not output.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind.name}: no counts written within {DUMP_TIMEOUT:g} s; see {log}")
            time.sleep(0.1)
        caller.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return json.loads(output.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", choices=TOKEN_SETS, default="one_token", help="the traced calls")
    parser.add_argument("--count", type=int, default=300, help="traced calls per server")
    parser.add_argument("--warm-up", choices=TOKEN_SETS, default="rotating", help="as bench.instructions")
    parser.add_argument("--functions", type=int, default=25, metavar="N", help="print the N largest differences")
    add_tree_arguments(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.count <= MAX_COUNT:
        parser.error(f"--count must be between 1 and {MAX_COUNT}")
    if not 0 <= args.functions <= 1000:
        parser.error("--functions must be between 0 and 1000")
    try:
        kinds = kinds_of(args)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))

    workdir = Path(tempfile.mkdtemp(prefix="mcp-bench-opcodes-"))
    idp_port = free_port()
    issuer = Issuer(f"http://{LOOPBACK}:{idp_port}/", audience="")
    issuer.write_jwks(workdir / "jwks.json")
    idp = start_idp(workdir, idp_port)
    try:
        dumps = {kind.name: trace(kind, args, issuer, idp_port, workdir) for kind in kinds}
    finally:
        idp.send_signal(signal.SIGTERM)
        idp.wait(timeout=10)

    roots = {kind.name: kind.root for kind in kinds}
    opcodes = {name: per_call(dump, args.count, roots[name]) for name, dump in dumps.items()}
    calls = {name: per_call(dump, args.count, roots[name], "calls") for name, dump in dumps.items()}
    print(f"bytecodes per tool call ({args.count} calls, {args.calls}, after a {args.warm_up} warm-up):")
    for name in opcodes:
        print(f"  {name:10} {sum(opcodes[name].values()):10,.0f}   Python calls {sum(calls[name].values()):8,.1f}")
    if len(kinds) >= 2 and args.functions:
        first, second = kinds[0].name, kinds[1].name
        print_differences("bytecodes", (first, opcodes[first]), (second, opcodes[second]), args.functions, decimals=1)
    print(f"(counts and server logs: {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

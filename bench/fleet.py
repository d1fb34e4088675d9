"""`make bench-fleet`: notes traffic from many owners on 3 replicas sharing one PostgreSQL database, side by
side with 1 replica on SQLite. Creates and reads per second, p50/p99 latency, server CPU per call.

Needs a PostgreSQL server: --database-url (an admin URL; a fresh database is created in it and dropped at the
end), else postgresql://postgres@127.0.0.1:5432/postgres. Every answer is checked; a wrong one fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
from psycopg import sql

from bench.tokens import Issuer

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PROTOCOL = "2025-11-25"
START_TIMEOUT = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GOAL_READ_CPU_RATIO = 1.5
GOAL_WRITE_P99_MS = 50.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class Phase:
    setup: str
    name: str
    calls: int
    seconds: float
    latencies_ms: list[float]
    replica_cpu: float
    database_cpu: float | None

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds

    def row(self) -> str:
        p50 = statistics.median(self.latencies_ms)
        p99 = percentile(self.latencies_ms, 0.99)
        database = "" if self.database_cpu is None else f"{self.database_cpu / self.calls * 1e6:9.0f}"
        return (
            f"{self.setup:<14}{self.name:<26}{self.per_second:9.0f}{p50:9.1f}{p99:9.1f}"
            f"{self.replica_cpu / self.calls * 1e6:11.0f}{database:>12}"
        )


@dataclass
class Setup:
    name: str
    ports: list[int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    database_url: str | None = None

    def url(self, index: int) -> str:
        return f"http://{LOOPBACK}:{self.ports[index % len(self.ports)]}/mcp"

    def replica_cpu(self) -> float:
        return sum(cpu_seconds(process.pid) for process in self.processes)

    def database_cpu(self) -> float | None:
        """CPU of the PostgreSQL backends serving this database (a local server only), else None."""
        if self.database_url is None:
            return None
        name = urlsplit(self.database_url).path.lstrip("/")
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
            ).fetchall()
        total = 0.0
        for (pid,) in rows:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total


class Caller:
    """Tools calls as plain JSON-RPC over HTTP, round-robin over a setup's replicas, every answer checked."""

    def __init__(self, setup: Setup, http: httpx.AsyncClient) -> None:
        self.setup = setup
        self.http = http
        self.turn = 0

    async def call(self, token: str, name: str, arguments: dict[str, Any]) -> tuple[dict[str, Any], float]:
        self.turn += 1
        body = {
            "jsonrpc": "2.0",
            "id": self.turn,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments},
        }
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": PROTOCOL,
        }
        started = time.perf_counter()
        response = await self.http.post(self.setup.url(self.turn), json=body, headers=headers)
        elapsed_ms = (time.perf_counter() - started) * 1000
        result = response.json().get("result") if response.status_code == 200 else None
        if not isinstance(result, dict) or result.get("isError") or not result.get("structuredContent"):
            raise RuntimeError(f"{name} failed on {self.setup.name}: {response.status_code} {response.text[:300]}")
        return result["structuredContent"], elapsed_ms


def server_env(port: int, idp_port: int, audience: str, **extra: str) -> dict[str, str]:
    prefixes = ("OAUTH_", "MCP_", "NOTES_", "DEV_", "CORS_", "LOG_", "METRICS_", "HOST", "PORT", "FORWARDED_")
    env = {name: value for name, value in os.environ.items() if not name.upper().startswith(prefixes)}
    env.update(
        {
            "HOST": LOOPBACK,
            "PORT": str(port),
            "OAUTH_ISSUER": f"http://{LOOPBACK}:{idp_port}/",
            "OAUTH_JWKS_URI": f"http://{LOOPBACK}:{idp_port}/jwks",
            "MCP_SERVER_URL": audience,
            "NOTES_MAX_PER_OWNER": "1000000",
            "LOG_LEVEL": "WARNING",
            **extra,
        }
    )
    return env


def wait_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"a server exited during start-up; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{LOOPBACK}:{port}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"a server was not ready within {START_TIMEOUT} s; see {log}")


@contextlib.contextmanager
def started(setup: Setup, envs: list[dict[str, str]], workdir: Path) -> Iterator[Setup]:
    try:
        for index, env in enumerate(envs):
            log = workdir / f"{setup.name}-{index}.log"
            with log.open("wb") as output:
                setup.processes.append(
                    subprocess.Popen(  # noqa: S603 - our own interpreter and script
                        [sys.executable, str(PROJECT_ROOT / "server.py")],
                        cwd=workdir,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=output,
                    )
                )
        for port, process, index in zip(setup.ports, setup.processes, range(len(envs)), strict=True):
            wait_ready(port, process, workdir / f"{setup.name}-{index}.log")
        yield setup
    finally:
        for process in setup.processes:
            process.terminate()
        for process in setup.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    name = f"bench_fleet_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlsplit(admin_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def measure(setup: Setup, name: str, seconds: float, workers: int, step: Any) -> Phase:
    """Run `step(worker_number)` in `workers` loops for `seconds`; each step returns its latency in ms."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def loop(number: int) -> None:
        while time.monotonic() < deadline:
            latencies.append(await step(number))

    cpu_before, db_before = setup.replica_cpu(), setup.database_cpu()
    started_at = time.monotonic()
    await asyncio.gather(*(loop(number) for number in range(workers)))
    elapsed = time.monotonic() - started_at
    cpu, db = setup.replica_cpu() - cpu_before, setup.database_cpu()
    database_cpu = None if db is None or db_before is None else db - db_before
    return Phase(setup.name, name, len(latencies), elapsed, latencies, cpu, database_cpu)


async def traffic(setup: Setup, tokens: list[str], args: argparse.Namespace) -> list[Phase]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        caller = Caller(setup, http)
        notes: dict[str, list[str]] = {token: [] for token in tokens}
        seed = [(token, index) for token in tokens for index in range(args.notes_per_owner)]
        for start in range(0, len(seed), 20):  # seed: every owner gets a few notes, 20 creates at a time
            batch = seed[start : start + 20]
            results = await asyncio.gather(
                *(caller.call(token, "create_note", {"title": f"seed {i}", "content": "x" * 200}) for token, i in batch)
            )
            for (token, _), (note, _) in zip(batch, results, strict=True):
                notes[token].append(note["id"])
        rng = random.Random(1)  # noqa: S311 - traffic shape, not security

        async def read(_: int) -> float:
            token = rng.choice(tokens)
            note_id = rng.choice(notes[token])
            note, elapsed = await caller.call(token, "read_note", {"note_id": note_id})
            if note["id"] != note_id:
                raise RuntimeError("read_note answered another note")
            return elapsed

        async def create(number: int) -> float:
            token = tokens[number % len(tokens)]
            note, elapsed = await caller.call(token, "create_note", {"title": f"w{number}", "content": "y" * 200})
            notes[token].append(note["id"])
            return elapsed

        async def mixed(number: int) -> float:
            return await (create(number) if rng.random() < args.write_share else read(number))

        await measure(setup, "warm-up", 2, args.readers, read)
        return [
            await measure(setup, f"reads ({args.readers} clients)", args.seconds, args.readers, read),
            await measure(setup, f"creates ({args.writers} writers)", args.seconds, args.writers, create),
            await measure(setup, f"mixed ({args.writers} clients)", args.seconds, args.writers, mixed),
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL, help="admin URL of a PostgreSQL server")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--owners", type=int, default=200)
    parser.add_argument("--notes-per-owner", type=int, default=3)
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--writers", type=int, default=50)
    parser.add_argument("--write-share", type=float, default=0.2, help="share of creates in the mixed phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp, fresh_database(args.database_url) as database:
        workdir = Path(tmp)
        idp_port = free_port()
        ports = [free_port() for _ in range(args.replicas)]
        sqlite_port = free_port()
        audience = f"http://{LOOPBACK}:{ports[0]}/mcp"
        issuer = Issuer(f"http://{LOOPBACK}:{idp_port}/", audience)
        issuer.write_jwks(workdir / "jwks.json")
        tokens = issuer.many_es256("owner", args.owners, audience=audience)
        sqlite_tokens = issuer.many_es256("owner", args.owners, audience=f"http://{LOOPBACK}:{sqlite_port}/mcp")
        idp_log = (workdir / "idp.log").open("wb")
        idp = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "bench.fake_idp", "--port", str(idp_port), "--jwks", str(workdir / "jwks.json")],
            cwd=PROJECT_ROOT,
            stdout=idp_log,
            stderr=idp_log,
        )
        phases: list[Phase] = []
        try:
            postgres = Setup(f"postgres x{args.replicas}", ports, database_url=database)
            envs = [server_env(port, idp_port, audience, NOTES_DATABASE_URL=database) for port in ports]
            print(f"PostgreSQL: {args.replicas} replicas ...", flush=True)
            with started(postgres, envs, workdir):
                phases += asyncio.run(traffic(postgres, tokens, args))
            sqlite = Setup("sqlite x1", [sqlite_port])
            env = server_env(
                sqlite_port,
                idp_port,
                f"http://{LOOPBACK}:{sqlite_port}/mcp",
                NOTES_DB_PATH=str(workdir / "notes.db"),
            )
            print("SQLite: 1 replica ...", flush=True)
            with started(sqlite, [env], workdir):
                phases += asyncio.run(traffic(sqlite, sqlite_tokens, args))
        finally:
            idp.terminate()
            idp.wait(timeout=10)
            idp_log.close()

    print()
    print(f"{'setup':<14}{'phase':<26}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'server µs':>11}{'pg µs':>12}")
    for phase in phases:
        print(phase.row())
    by_key = {(phase.setup.split()[0], phase.name.split()[0]): phase for phase in phases}
    pg_read, sqlite_read = by_key[("postgres", "reads")], by_key[("sqlite", "reads")]
    ratio = (pg_read.replica_cpu / pg_read.calls) / (sqlite_read.replica_cpu / sqlite_read.calls)
    write_p99 = percentile(by_key[("postgres", "creates")].latencies_ms, 0.99)
    print()
    print(f"read CPU, PostgreSQL replica vs SQLite replica: {ratio:.2f}x (goal <= {GOAL_READ_CPU_RATIO}x)")
    if pg_read.database_cpu is not None:
        with_db = (pg_read.replica_cpu + pg_read.database_cpu) / pg_read.calls
        print(f"  with the PostgreSQL backends' CPU: {with_db / (sqlite_read.replica_cpu / sqlite_read.calls):.2f}x")
    print(f"create p99 with {args.writers} writers on PostgreSQL: {write_p99:.1f} ms (goal <= {GOAL_WRITE_P99_MS} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

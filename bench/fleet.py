"""`make bench-fleet`: notes traffic from many owners on 3 replicas sharing one PostgreSQL database, side by
side with 1 replica on SQLite. Creates and reads per second, p50/p99 latency, server CPU per call.

Needs a PostgreSQL server: --database-url (an admin URL; a fresh database is created in it and dropped at the
end), else postgresql://postgres@127.0.0.1:5432/postgres. Every answer is checked; a wrong one fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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


class Connection:
    """One keep-alive HTTP/1.1 connection to one replica, speaking just enough HTTP for JSON-RPC: the load
    generator shares the two cores with the servers, so it must cost far less per call than they do."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.request_id = 0

    async def call(self, token: str, name: str, arguments: dict[str, Any]) -> tuple[dict[str, Any], float]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(LOOPBACK, self.port)
        self.request_id += 1
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": self.request_id,
                "method": "tools/call",
                "params": {"name": name, "arguments": arguments},
            }
        ).encode()
        head = (
            f"POST /mcp HTTP/1.1\r\nHost: {LOOPBACK}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: {PROTOCOL}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        started = time.perf_counter()
        self.writer.write(head + body)
        status_and_headers = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in status_and_headers.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        payload = await self.reader.readexactly(length)
        elapsed_ms = (time.perf_counter() - started) * 1000
        answer = json.loads(payload) if status_and_headers.startswith(b"HTTP/1.1 200") else {}
        result = answer.get("result")
        if answer.get("id") != self.request_id or not isinstance(result, dict) or result.get("isError"):
            raise RuntimeError(f"{name} failed on port {self.port}: {status_and_headers[:40]!r} {payload[:300]!r}")
        return result["structuredContent"], elapsed_ms

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


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
    # One connection per client, spread over the replicas as a gateway balancing connections would.
    connections = [Connection(setup.ports[number % len(setup.ports)]) for number in range(max(args.writers, 20))]
    try:
        notes: dict[str, list[str]] = {token: [] for token in tokens}
        seed = [(token, index) for token in tokens for index in range(args.notes_per_owner)]
        for start in range(0, len(seed), 20):  # seed: every owner gets a few notes, 20 creates at a time
            batch = seed[start : start + 20]
            results = await asyncio.gather(
                *(
                    connections[slot].call(token, "create_note", {"title": f"seed {i}", "content": "x" * 200})
                    for slot, (token, i) in enumerate(batch)
                )
            )
            for (token, _), (note, _) in zip(batch, results, strict=True):
                notes[token].append(note["id"])
        rng = random.Random(1)  # noqa: S311 - traffic shape, not security

        async def read(number: int) -> float:
            token = rng.choice(tokens)
            note_id = rng.choice(notes[token])
            note, elapsed = await connections[number].call(token, "read_note", {"note_id": note_id})
            if note["id"] != note_id:
                raise RuntimeError("read_note answered another note")
            return elapsed

        async def create(number: int) -> float:
            token = tokens[number % len(tokens)]
            arguments = {"title": f"w{number}", "content": "y" * 200}
            note, elapsed = await connections[number].call(token, "create_note", arguments)
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
    finally:
        for connection in connections:
            connection.close()


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
        issuer = Issuer(f"http://{LOOPBACK}:{idp_port}/", "")
        issuer.write_jwks(workdir / "jwks.json")
        idp_log = (workdir / "idp.log").open("wb")
        idp = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "bench.fake_idp", "--port", str(idp_port), "--jwks", str(workdir / "jwks.json")],
            cwd=PROJECT_ROOT,
            stdout=idp_log,
            stderr=idp_log,
        )
        # The fleet; one PostgreSQL replica, so that its CPU per call compares with SQLite's like for like; SQLite.
        plans = [
            (f"postgres x{args.replicas}", args.replicas, {"NOTES_DATABASE_URL": database}),
            ("postgres x1", 1, {"NOTES_DATABASE_URL": database}),
            ("sqlite x1", 1, {"NOTES_DB_PATH": str(workdir / "notes.db")}),
        ]
        phases: list[Phase] = []
        try:
            for name, replicas, backend in plans:
                ports = [free_port() for _ in range(replicas)]
                audience = f"http://{LOOPBACK}:{ports[0]}/mcp"  # one public URL, as behind a gateway
                setup = Setup(name, ports, database_url=backend.get("NOTES_DATABASE_URL"))
                envs = [server_env(port, idp_port, audience, **backend) for port in ports]
                tokens = issuer.many_es256(f"owner-{name}", args.owners, audience=audience)
                print(f"{name} ...", flush=True)
                with started(setup, envs, workdir):
                    phases += asyncio.run(traffic(setup, tokens, args))
        finally:
            idp.terminate()
            idp.wait(timeout=10)
            idp_log.close()

    print()
    print(f"{'setup':<14}{'phase':<26}{'calls/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'server µs':>11}{'pg µs':>12}")
    for phase in phases:
        print(phase.row())
    by_key = {(phase.setup, phase.name.split()[0]): phase for phase in phases}
    pg_read, sqlite_read = by_key[("postgres x1", "reads")], by_key[("sqlite x1", "reads")]
    sqlite_cpu = sqlite_read.replica_cpu / sqlite_read.calls
    ratio = (pg_read.replica_cpu / pg_read.calls) / sqlite_cpu
    fleet_creates = by_key[(f"postgres x{args.replicas}", "creates")]
    print()
    print(f"read CPU per call, 1 PostgreSQL replica vs 1 SQLite replica: {ratio:.2f}x (goal <= {GOAL_READ_CPU_RATIO}x)")
    if pg_read.database_cpu is not None:
        with_db = (pg_read.replica_cpu + pg_read.database_cpu) / pg_read.calls
        print(f"  counting the PostgreSQL backends' CPU too: {with_db / sqlite_cpu:.2f}x")
    write_p99 = percentile(fleet_creates.latencies_ms, 0.99)
    print(
        f"create p99 with {args.writers} writers on {fleet_creates.setup}: {write_p99:.1f} ms "
        f"(goal <= {GOAL_WRITE_P99_MS:g} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

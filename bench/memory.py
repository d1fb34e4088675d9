"""The memory run: A's RSS growth while many distinct valid tokens each make one call, with a bounded cache."""

from __future__ import annotations

import contextlib
import http.client
import signal
import time
from dataclasses import dataclass

from bench import wrk
from bench.proc_stats import rss_mib
from bench.session import Session
from bench.targets import Target, clean_environment, free_port, server_env
from bench.tokens import Issuer, write_tokens
from bench.wrk import LOOPBACK, Load

RUN_LIMIT = 600  # seconds: the pass over every token must end within this


@dataclass(frozen=True)
class MemoryResult:
    tokens: int
    cache_entries: int
    answered: int  # POST /mcp answered during the pass, by the server's count
    wrong: int
    rss_before_mib: float
    rss_after_mib: float
    seconds: float

    @property
    def growth_mib(self) -> float:
        return self.rss_after_mib - self.rss_before_mib


def parse_mcp_posts(metrics: str) -> int:
    """POST /mcp answers counted in the server's Prometheus text (every status)."""
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in metrics.splitlines()
        if line.startswith("mcp_http_requests_total{") and 'route="/mcp"' in line and 'method="POST"' in line
    )


def mcp_posts_answered(port: int) -> int:
    """POST /mcp answers so far, from the server's own /metrics (open to loopback without a token)."""
    with contextlib.closing(http.client.HTTPConnection(LOOPBACK, port, timeout=5)) as connection:
        connection.request("GET", "/metrics")
        return parse_mcp_posts(connection.getresponse().read().decode())


def memory_run(
    session: Session, issuer: Issuer, environ: dict[str, str], *, distinct: int, cache_entries: int
) -> MemoryResult:
    """A fresh A with OAUTH_TOKEN_CACHE_ENTRIES=`cache_entries`: its RSS after a warm-up with one token, then
    after `distinct` different valid tokens have made one call each."""
    port = free_port()
    env = server_env(clean_environment(environ), port, session.idp.port, OAUTH_TOKEN_CACHE_ENTRIES=str(cache_entries))
    print(f"minting {distinct} ES256 tokens for the memory run ...")
    tokens = issuer.many_es256("memory", distinct, audience=env["MCP_SERVER_URL"])
    token_file = write_tokens(session.workdir / "tokens-memory.txt", tokens)
    one_file = write_tokens(session.workdir / "tokens-memory-one.txt", tokens[:1])
    source = session.targets["A"]
    log = session.workdir / "server-A-memory.log"
    target = Target("A-memory", source.label, source.command, source.tool, env, port, log, token=tokens[0])
    try:
        target.start(session.workdir, session.server_cpu)
        # Settle the allocator and lazy imports with the one token, then measure the pass over every token.
        session.wrk(Load(port, "call", target.tool, one_file), 3)
        before, answered = rss_mib(target.pid), mcp_posts_answered(port)
        started = time.perf_counter()
        # wrk runs for its whole duration even once the script stops sending: it is stopped when all are answered.
        process = wrk.start(
            Load(port, "call", target.tool, token_file),
            connections=session.connections,
            seconds=RUN_LIMIT,
            cpu=session.load_cpu,
            limit=distinct,
        )
        while process.poll() is None and mcp_posts_answered(port) < answered + distinct:
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        answered = mcp_posts_answered(port) - answered  # the server's count: wrk may miss the last answers
        process.send_signal(signal.SIGINT)
        result = wrk.parse_result(process.communicate(timeout=60)[0])
        after = rss_mib(target.pid)
    finally:
        target.stop()
    return MemoryResult(
        tokens=distinct,
        cache_entries=cache_entries,
        answered=answered,
        wrong=result.failures,
        rss_before_mib=before,
        rss_after_mib=after,
        seconds=seconds,
    )

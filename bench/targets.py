"""The processes under test: targets A, B, C and C+ and the fake IdP; how each is started, probed and stopped."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.proc_stats import pin
from bench.wrk import LOOPBACK

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SDK_REFERENCE = PROJECT_ROOT / "bench" / "sdk_reference.py"
START_TIMEOUT = 30.0
JWKS_COOLDOWN = 10.0  # given to A as OAUTH_JWKS_REFRESH_COOLDOWN_SECONDS; the floor allows one fetch per cooldown
TARGETS = ("A", "I", "B", "C", "C+")
MODERN = "2026-07-28"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
INTROSPECTION_CLIENT_ID = "bench-resource-server"
INTROSPECTION_CLIENT_SECRET = "bench-introspection-secret"  # noqa: S105 - the fake IdP's, on loopback
# Settings variables of this project: a stray one in the caller's environment must not change the targets.
SETTINGS_PREFIXES = ("OAUTH_", "MCP_", "NOTES_", "DEV_", "CORS_", "LOG_", "METRICS_", "HOST", "PORT", "FORWARDED_")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a child still running, then kill it if it has not exited within 10 s."""
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


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


def clean_environment(environ: dict[str, str]) -> dict[str, str]:
    """`environ` without this project's settings variables."""
    return {name: value for name, value in environ.items() if not name.upper().startswith(SETTINGS_PREFIXES)}


def introspection_env(idp_port: int) -> dict[str, str]:
    """Introspection on, at the fake IdP: opaque tokens are asked about there; JWTs are still verified locally."""
    return {
        "OAUTH_INTROSPECTION_ENDPOINT": f"http://{LOOPBACK}:{idp_port}/introspect",
        "OAUTH_INTROSPECTION_CLIENT_ID": INTROSPECTION_CLIENT_ID,
        "OAUTH_INTROSPECTION_CLIENT_SECRET": INTROSPECTION_CLIENT_SECRET,
    }


def server_env(base: dict[str, str], port: int, idp_port: int, **extra: str) -> dict[str, str]:
    """The environment of `python server.py` (and of B) on `port`, trusting the fake IdP on `idp_port`."""
    return {
        **base,
        "HOST": LOOPBACK,
        "PORT": str(port),
        "OAUTH_ISSUER": f"http://{LOOPBACK}:{idp_port}/",
        "OAUTH_JWKS_URI": f"http://{LOOPBACK}:{idp_port}/jwks",
        "OAUTH_JWKS_REFRESH_COOLDOWN_SECONDS": f"{JWKS_COOLDOWN:g}",
        "MCP_SERVER_URL": f"http://{LOOPBACK}:{port}/mcp",
        "NOTES_DB_PATH": ":memory:",
        "PYTHONPATH": str(PROJECT_ROOT),
        **extra,
    }


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

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/mcp"

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
        raise RuntimeError(f"{self.name} gave no correct answer within {START_TIMEOUT:g} s; see {self.log_path}")

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid


def make_targets(workdir: Path, idp_port: int, sdk_python: Path, environ: dict[str, str]) -> dict[str, Target]:
    """A, B, C and C+, each on a port of its own, not started."""
    python = sys.executable
    base = clean_environment(environ)
    ports = {name: free_port() for name in TARGETS}
    logs = {name: workdir / f"server-{name}.log" for name in TARGETS}
    return {
        "A": Target(
            "A",
            "this server, auth on: `python server.py` in production mode, against the fake IdP",
            [python, str(PROJECT_ROOT / "server.py")],
            "add_numbers",
            server_env(base, ports["A"], idp_port),
            ports["A"],
            logs["A"],
        ),
        "I": Target(
            "I",
            "A with introspection on (OAUTH_INTROSPECTION_* at the fake IdP): the opaque-token scenarios",
            [python, str(PROJECT_ROOT / "server.py")],
            "add_numbers",
            # the bench's JWTs name A's URL as their audience: I accepts that one too
            server_env(
                base,
                ports["I"],
                idp_port,
                OAUTH_AUDIENCE=f"http://{LOOPBACK}:{ports['A']}/mcp",
                **introspection_env(idp_port),
            ),
            ports["I"],
            logs["I"],
        ),
        "B": Target(
            "B",
            "the same server with its auth layers run once, then left out (bench/noauth_server.py)",
            [python, "-m", "bench.noauth_server"],
            "add_numbers",
            server_env(base, ports["B"], idp_port),
            ports["B"],
            logs["B"],
        ),
        "C": Target(
            "C",
            "the SDK's MCPServer, mcp.run('streamable-http') defaults, sync add tool, in a venv with only"
            " `pip install mcp` (uvicorn then runs h11 on asyncio)",
            [str(sdk_python), str(SDK_REFERENCE), "--port", str(ports["C"])],
            "add",
            dict(base),
            ports["C"],
            logs["C"],
        ),
        "C+": Target(
            "C+",
            "C in this project's venv, where uvicorn's defaults pick uvloop and httptools",
            [python, str(SDK_REFERENCE), "--port", str(ports["C+"])],
            "add",
            dict(base),
            ports["C+"],
            logs["C+"],
        ),
    }


class FakeIdP:
    """bench/fake_idp.py in its own process: serves workdir/jwks.json on `port`, answers introspection with the
    claims of workdir/introspection.json, and counts both."""

    def __init__(self, workdir: Path, port: int, cpu: int | None) -> None:
        self.workdir = workdir
        self.port = port
        self.cpu = cpu
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Returns once it answers; RuntimeError if it exits or takes longer than START_TIMEOUT."""
        jwks, claims = self.workdir / "jwks.json", self.workdir / "introspection.json"
        command = [sys.executable, "-m", "bench.fake_idp", "--port", str(self.port), "--jwks", str(jwks)]
        command += ["--claims", str(claims)]
        log_path = self.workdir / "idp.log"
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and script
                command, cwd=PROJECT_ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL, **pin(self.cpu)
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(OSError):
                self.counts()
                return
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"the fake IdP did not start; see {log_path}")
            time.sleep(0.05)

    def counts(self) -> tuple[int, int]:
        """How often it has served its JWKS, and answered an introspection request, so far."""
        with contextlib.closing(http.client.HTTPConnection(LOOPBACK, self.port, timeout=5)) as connection:
            connection.request("GET", "/stats")
            stats = json.loads(connection.getresponse().read())
        return int(stats["jwks_fetches"]), int(stats["introspections"])

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

"""Harness for end-to-end tests: `server.py` as a real process on 127.0.0.1, and a third-party IdP served for real."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from secret_files import secret_fields
from settings import Settings
from tests.e2e.oidc_idp import oidc_idps  # noqa: F401 - the fixture: panva's oidc-provider instances
from tests.support import LEGACY_VERSION, MCP_HEADERS, Signer, bearer, rpc_body

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = PROJECT_ROOT / "server.py"
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 20.0  # an upper bound for a loaded machine; a start normally takes about a second
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05
BANNER_TOKEN = re.compile(r"^Authorization: Bearer (\S+)$", re.MULTILINE)


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it; a tiny race with other processes remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def server_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment without any Settings variable (in any case), plus `overrides`."""
    settings_names = {name.lower() for name in Settings.model_fields}
    settings_names |= {f"{name.lower()}_file" for name in secret_fields(Settings)}
    env = {name: value for name, value in os.environ.items() if name.lower() not in settings_names}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


@contextlib.asynccontextmanager
async def mcp_client(url: str, token: str | None, *, mode: str = "auto") -> AsyncIterator[Client]:
    """The official MCP client over streamable HTTP, with the bearer token as a plain header."""
    headers = bearer(token) if token is not None else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(10, read=20)) as http_client,
        Client(streamable_http_client(url, http_client=http_client), mode=mode) as client,
    ):
        yield client


@dataclass
class ServerProcess:
    """One `python server.py` process; its stdout and stderr go to files the tests read."""

    port: int
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def resource_metadata_url(self) -> str:
        return f"{self.base_url}/.well-known/oauth-protected-resource/mcp"

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def banner_token(self) -> str:
        match = BANNER_TOKEN.search(self.stdout())
        assert match, f"no 'Authorization: Bearer' line in stdout:\n{self.stdout()}"
        return match.group(1)

    def client(self, token: str | None, *, mode: str = "auto") -> contextlib.AbstractAsyncContextManager[Client]:
        return mcp_client(self.mcp_url, token, mode=mode)

    def post_mcp(self, token: str | None, body: dict[str, Any] | None = None) -> httpx.Response:
        headers = {
            **MCP_HEADERS,
            "MCP-Protocol-Version": LEGACY_VERSION,
            **(bearer(token) if token is not None else {}),
        }
        return httpx.post(self.mcp_url, json=body or rpc_body("tools/list"), headers=headers, timeout=10)

    def wait_until_answering(self, path: str, *, timeout: float = STARTUP_TIMEOUT) -> None:
        """Poll `path` until it answers 200; fail early, with the server's stderr, if the process dies."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        for _ in range(int(timeout / POLL_INTERVAL) + 1):
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode} during start-up:\n{self.stderr()}")
            try:
                response = httpx.get(self.base_url + path, timeout=1)
            except httpx.TransportError as exc:
                last = type(exc).__name__
            else:
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_INTERVAL)
        pytest.fail(f"GET {path} did not answer 200 within {timeout} s ({last}):\n{self.stderr()}")

    def terminate(self, *, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then the exit code (the test fails if the process does not stop in time)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"server ignored SIGTERM for {timeout} s:\n{self.stderr()}")

    def stop(self) -> None:
        """Teardown: SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)


class ServerLauncher:
    """Starts server processes in `workdir` (never the project directory, so no `.env` is read)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[ServerProcess] = []

    def start(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        ready_path: str = "/healthz",
    ) -> ServerProcess:
        """Start `python server.py *args` and wait until `ready_path` answers 200."""
        server = self.spawn(*args, env=env, port=port)
        server.wait_until_answering(ready_path)
        return server

    def spawn(self, *args: str, env: Mapping[str, str] | None = None, port: int | None = None) -> ServerProcess:
        """Start the process without waiting, so several can boot at once."""
        port = port or free_port()
        overrides = {"HOST": LOOPBACK, "PORT": str(port), **(env or {})}
        stdout_path = self.workdir / f"server-{port}.stdout"
        stderr_path = self.workdir / f"server-{port}.stderr"
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, str(SERVER_SCRIPT), *args],
                cwd=self.workdir,
                env=server_environment(overrides),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        server = ServerProcess(port, process, stdout_path, stderr_path)
        self.servers.append(server)
        return server

    def close(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[ServerLauncher]:
    """Server processes that live for one test."""
    launched = ServerLauncher(tmp_path)
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def module_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerLauncher]:
    """Server processes shared by the tests of one module (start-up costs about a second each)."""
    launched = ServerLauncher(tmp_path_factory.mktemp("servers"))
    yield launched
    launched.close()


class FakeIdP:
    """A third-party IdP on its own loopback port, run by uvicorn in a thread: OIDC discovery under a
    tenant path (issuer with a trailing slash, Auth0 style) and a JWKS the test can rotate at any time."""

    def __init__(self, tenant: str = "tenant") -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind((LOOPBACK, 0))
        self.port = self._socket.getsockname()[1]
        base = f"http://{LOOPBACK}:{self.port}/{tenant}"
        self.issuer = f"{base}/"
        self.discovery_path = f"/{tenant}/.well-known/openid-configuration"
        # Not a conventional location: the server can only find it through discovery.
        self.jwks_path = f"/{tenant}/discovery/v2.0/signing-keys"
        self.jwks_uri = f"http://{LOOPBACK}:{self.port}{self.jwks_path}"
        self.requests: Counter[str] = Counter()
        self._keys: list[dict[str, Any]] = []
        config = uvicorn.Config(self._app(), log_level="warning", log_config=None, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def publish(self, *signers: Signer) -> None:
        """From now on the JWKS holds exactly these public keys."""
        self._keys = [signer.jwk(alg=signer.alg) for signer in signers]

    @property
    def jwks_fetches(self) -> int:
        return self.requests[self.jwks_path]

    def _app(self) -> Starlette:
        async def discovery(request: Request) -> Response:
            self.requests[request.url.path] += 1
            return JSONResponse(
                {
                    "issuer": self.issuer,
                    "jwks_uri": self.jwks_uri,
                    "authorization_endpoint": f"{self.issuer}authorize",
                    "token_endpoint": f"{self.issuer}oauth/token",
                    "id_token_signing_alg_values_supported": ["RS256"],
                }
            )

        async def jwks(request: Request) -> Response:
            self.requests[request.url.path] += 1
            return JSONResponse({"keys": list(self._keys)}, headers={"Cache-Control": "max-age=0"})

        return Starlette(
            routes=[
                Route(self.discovery_path, discovery, methods=["GET"]),
                Route(self.jwks_path, jwks, methods=["GET"]),
            ]
        )

    def start(self) -> None:
        self._thread.start()
        for _ in range(int(STARTUP_TIMEOUT / POLL_INTERVAL)):
            if self._server.started:
                return
            time.sleep(POLL_INTERVAL)
        pytest.fail("the fake IdP did not start")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=STOP_TIMEOUT)
        self._socket.close()


@pytest.fixture(scope="module")
def fake_idp() -> Iterator[FakeIdP]:
    idp = FakeIdP()
    idp.start()
    yield idp
    idp.stop()

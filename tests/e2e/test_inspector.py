"""The MCP Inspector CLI (pinned in tests/e2e/inspector, on its own Node 22) against `python server.py --dev`,
with the bearer token pasted as a plain `Authorization` header, as docs/inspector.md tells users to do."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import PROJECT_ROOT, ServerLauncher, ServerProcess

pytestmark = pytest.mark.e2e

INSPECTOR_DIR = PROJECT_ROOT / "tests" / "e2e" / "inspector"
NODE = INSPECTOR_DIR / "node_modules" / ".bin" / "node"  # from the pinned node-<os>-<cpu> package
INSPECTOR_CLI = (
    INSPECTOR_DIR / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build"
)
CALL_TIMEOUT = 60.0  # one CLI run takes about a second; the bound is for a loaded machine
EXIT_AUTH_REQUIRED = 3  # the Inspector CLI's exit code for a 401/403 or an OAuth challenge
DEV_CLIENT = ("dev-client", "dev-secret")
TOOLS = {
    "get_me",
    "add_numbers",
    "subtract_numbers",
    "multiply_numbers",
    "divide_numbers",
    "calculate_sum",
    "create_note",
    "read_note",
    "list_notes",
    "update_note",
    "delete_note",
}
# Variables that would send loopback traffic through a proxy, or let the Inspector reach a developer's
# own catalog, tokens or keychain; the runs get a scratch home instead.
INHERITED_OUT = {"http_proxy", "https_proxy", "all_proxy", "node_options", "dbus_session_bus_address"}


@dataclass
class InspectorRun:
    returncode: int
    stdout: str
    stderr: str

    def result(self) -> dict[str, Any]:
        assert self.returncode == 0, f"exit {self.returncode}\nstdout: {self.stdout}\nstderr: {self.stderr}"
        return json.loads(self.stdout)["result"]

    def error(self) -> dict[str, Any]:
        """The CLI's error envelope: always the last line of stderr."""
        lines = self.stderr.strip().splitlines()
        assert lines, f"no error envelope (exit {self.returncode}), stdout: {self.stdout}"
        return json.loads(lines[-1])["error"]


@pytest.fixture(scope="module")
def inspector_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fails (never skips) when `make test` has not installed the Node tooling."""
    entry = INSPECTOR_CLI / "index.js"
    missing = [str(path.relative_to(PROJECT_ROOT)) for path in (NODE, entry) if not path.exists()]
    if missing:
        pytest.fail(
            f"MCP Inspector tooling is not installed (missing {', '.join(missing)}): run `make test`, "
            f"which runs `npm ci` in {INSPECTOR_DIR.relative_to(PROJECT_ROOT)}. Node 22 is pinned there for "
            "linux-x64, linux-arm64 and darwin-x64 only.",
            pytrace=False,
        )
    return tmp_path_factory.mktemp("inspector-home")


@pytest.fixture(scope="module")
def dev_server(module_launcher: ServerLauncher, inspector_home: Path) -> ServerProcess:
    return module_launcher.start("--dev")


@pytest.fixture(scope="module")
def token(dev_server: ServerProcess) -> str:
    response = httpx.post(
        f"{dev_server.base_url}/dev-issuer/token",
        data={"grant_type": "client_credentials"},
        auth=DEV_CLIENT,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def inspector_environment(home: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name.lower() not in INHERITED_OUT and not name.upper().startswith("MCP_")
    }
    storage = home / "storage"
    env.update(
        HOME=str(home),
        MCP_STORAGE_DIR=str(storage),
        MCP_INSPECTOR_OAUTH_STATE_PATH=str(storage / "oauth.json"),
        MCP_CATALOG_PATH=str(home / "mcp.json"),
        MCP_CLIENT_CONFIG_PATH=str(storage / "client.json"),
        MCP_AUTO_OPEN_ENABLED="false",
        NO_PROXY="127.0.0.1,localhost",
        NO_COLOR="1",
    )
    return env


def run_inspector(home: Path, server: ServerProcess, *args: str, token: str | None = None) -> InspectorRun:
    """`mcp-inspector --cli <url> --transport http [--header ...] <args> --format json`, with the pinned Node."""
    header = ["--header", f"Authorization: Bearer {token}"] if token is not None else []
    command = [
        str(NODE),
        str(INSPECTOR_CLI / "index.js"),
        "--cli",
        server.mcp_url,
        "--transport",
        "http",
        *header,
        "--connect-timeout",
        "15000",
        "--stored-auth-only",  # a refusal must end the run, never start an OAuth flow in a browser
        "--format",
        "json",
        *args,
    ]
    try:
        done = subprocess.run(
            command,
            cwd=home,
            env=inspector_environment(home),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the Inspector CLI ran for more than {CALL_TIMEOUT} s: {exc.stderr!r}\n{server.stderr()}")
    return InspectorRun(done.returncode, done.stdout, done.stderr)


def test_tools_list_shows_the_tools(inspector_home: Path, dev_server: ServerProcess, token: str) -> None:
    tools = run_inspector(inspector_home, dev_server, "--method", "tools/list", token=token).result()["tools"]
    assert {tool["name"] for tool in tools} >= TOOLS


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_get_me_returns_the_dev_client(inspector_home: Path, dev_server: ServerProcess, token: str, era: str) -> None:
    result = run_inspector(
        inspector_home,
        dev_server,
        *("--protocol-era", era, "--method", "tools/call", "--tool-name", "get_me"),
        token=token,
    ).result()
    assert result["isError"] is False
    identity = result["structuredContent"]
    assert identity["user_id"] == "dev-client"
    assert identity["client_id"] == "dev-client"
    assert identity["issuer"] == f"{dev_server.base_url}/dev-issuer"
    assert dev_server.mcp_url in identity["audience"]
    assert identity["token_type"] == "machine"
    assert token not in json.dumps(result)


def test_add_numbers_takes_its_arguments(inspector_home: Path, dev_server: ServerProcess, token: str) -> None:
    result = run_inspector(
        inspector_home,
        dev_server,
        *("--method", "tools/call", "--tool-name", "add_numbers", "--tool-args-json", '{"a": 2, "b": 3.5}'),
        token=token,
    ).result()
    assert result["isError"] is False
    assert result["structuredContent"] == {"result": 5.5}


def test_without_the_header_the_inspector_is_refused(inspector_home: Path, dev_server: ServerProcess) -> None:
    run = run_inspector(inspector_home, dev_server, "--method", "tools/list")
    assert run.returncode == EXIT_AUTH_REQUIRED, run
    error = run.error()
    assert error["code"] == "auth_required"
    assert "bearer token required" in error["message"]  # the body of this server's 401


def test_a_bad_token_is_refused(inspector_home: Path, dev_server: ServerProcess, token: str) -> None:
    run = run_inspector(inspector_home, dev_server, "--method", "tools/list", token=token + "x")
    assert run.returncode == EXIT_AUTH_REQUIRED, run
    error = run.error()
    assert error["code"] == "auth_required"
    assert "invalid_token" in error["message"]

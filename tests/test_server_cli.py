"""`python server.py` as users run it: exit 2 with one line on bad config, a working --dev server, clean SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from secret_files import secret_fields
from settings import Settings
from tests.support import legacy_headers, parse_mcp_response, rpc_body

SERVER_SCRIPT = Path(__file__).resolve().parent.parent / "server.py"
TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(**values: str) -> dict[str, str]:
    """The current environment without any Settings variable, plus `values`."""
    names = {name.upper() for name in Settings.model_fields} | {
        f"{name.upper()}_FILE" for name in secret_fields(Settings)
    }
    env = {name: value for name, value in os.environ.items() if name.upper() not in names}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


def run_server(*args: str, cwd: Path, **values: str) -> subprocess.CompletedProcess[str]:
    # The script path is absolute so the cwd can be an empty tmp_path: no developer .env is read.
    return subprocess.run(
        [sys.executable, str(SERVER_SCRIPT), *args],
        cwd=cwd,
        env=server_env(**values),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    base_url: str
    stderr_path: Path
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "".join(self.stdout_lines)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def banner_token(self) -> str:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for line in list(self.stdout_lines):
                if line.startswith("Authorization: Bearer "):
                    return line.removeprefix("Authorization: Bearer ").strip()
            time.sleep(0.05)
        raise AssertionError(f"no token line in the banner: {self.stdout!r}")

    def wait_exit(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)


@contextlib.contextmanager
def running_server(*args: str, cwd: Path, **values: str) -> Iterator[RunningServer]:
    """Starts `python server.py ARGS` on a free loopback port and waits for /healthz; always kills it."""
    port = free_port()
    values = {"HOST": "127.0.0.1", "PORT": str(port), **values}
    stderr_path = cwd / f"server-{port}.stderr"
    with stderr_path.open("w", encoding="utf-8") as stderr_file:
        process = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), *args],
            cwd=cwd,
            env=server_env(**values),
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            text=True,
        )
    server = RunningServer(process, f"http://127.0.0.1:{port}", stderr_path)
    reader = threading.Thread(target=lambda: server.stdout_lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}: {server.stderr}")
            try:
                if httpx.get(f"{server.base_url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not come up in {TIMEOUT}s: {server.stderr}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT)
        reader.join(timeout=5)
        process.stdout.close()


def call_get_me(base_url: str, token: str) -> httpx.Response:
    body = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
    return httpx.post(f"{base_url}/mcp", json=body, headers=legacy_headers(token), timeout=10.0)


def assert_one_line_config_error(result: subprocess.CompletedProcess[str], variable: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable}"), lines[0]
    assert result.stdout == ""
    return lines[0]


# --- configuration errors ---------------------------------------------------------------------------


def test_missing_issuer_exits_2_with_one_line(tmp_path):
    line = assert_one_line_config_error(run_server(cwd=tmp_path), "OAUTH_ISSUER")
    assert "--dev" in line


def test_an_unreadable_secret_file_exits_2_naming_its_variable(tmp_path):
    gone = tmp_path / "metrics-token"
    result = run_server(cwd=tmp_path, OAUTH_ISSUER="https://idp.example.com/", METRICS_TOKEN_FILE=str(gone))

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"configuration error: METRICS_TOKEN_FILE: cannot read {str(gone)!r}: No such file or directory"
    ]


def test_symmetric_algorithm_exits_2_naming_the_variable(tmp_path):
    result = run_server(cwd=tmp_path, OAUTH_ISSUER="https://idp.example.com/", OAUTH_ALGORITHMS="HS256")
    line = assert_one_line_config_error(result, "OAUTH_ALGORITHMS")
    assert "HS256" in line


def test_an_introspection_client_without_its_secret_exits_2_naming_the_variable(tmp_path):
    result = run_server(
        cwd=tmp_path, OAUTH_ISSUER="https://idp.example.com/", OAUTH_INTROSPECTION_CLIENT_ID="mcp-introspection"
    )
    assert_one_line_config_error(result, "OAUTH_INTROSPECTION_CLIENT_SECRET")


def test_a_bad_issuers_file_exits_2_naming_the_table_and_the_key(tmp_path):
    (tmp_path / "issuers.toml").write_text(
        '[[issuer]]\nissuer = "https://a.example.com/"\n\n[[issuer]]\nissuer = "https://b.example.com/"\naud = "x"\n',
        encoding="utf-8",
    )
    line = assert_one_line_config_error(
        run_server(cwd=tmp_path, OAUTH_ISSUERS_FILE="issuers.toml"), "OAUTH_ISSUERS_FILE"
    )
    assert line.startswith("configuration error: OAUTH_ISSUERS_FILE: [[issuer]] #2, key 'aud': unknown key")


def test_an_issuers_file_with_oauth_issuer_exits_2(tmp_path):
    (tmp_path / "issuers.toml").write_text('[[issuer]]\nissuer = "https://a.example.com/"\n', encoding="utf-8")
    result = run_server(cwd=tmp_path, OAUTH_ISSUERS_FILE="issuers.toml", OAUTH_ISSUER="https://a.example.com/")
    assert "OAUTH_ISSUER set too" in assert_one_line_config_error(result, "OAUTH_ISSUERS_FILE")


def test_bad_value_in_dotenv_exits_2_naming_the_variable(tmp_path):
    (tmp_path / ".env").write_text("OAUTH_ISSUER=https://idp.example.com/\nPORT=abc\n", encoding="utf-8")
    assert_one_line_config_error(run_server(cwd=tmp_path), "PORT")


def test_a_notes_database_from_a_newer_server_is_refused_in_one_line(tmp_path):
    database = tmp_path / "notes.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("PRAGMA user_version = 99")
    result = run_server(
        cwd=tmp_path,
        OAUTH_ISSUER="https://idp.example.com/",
        NOTES_DB_PATH=str(database),
        PORT=str(free_port()),
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    refusals = [line for line in result.stderr.splitlines() if "start-up refused" in line]
    assert len(refusals) == 1, result.stderr
    assert "schema version 99, newer than this server understands" in refusals[0]


def test_bad_value_is_refused_in_dev_mode_too(tmp_path):
    assert_one_line_config_error(run_server("--dev", cwd=tmp_path, LOG_LEVEL="verbose"), "LOG_LEVEL")


def test_dev_mode_refuses_a_public_host(tmp_path):
    line = assert_one_line_config_error(run_server("--dev", cwd=tmp_path, HOST="0.0.0.0"), "HOST")
    assert "loopback" in line


# --- a real dev server ----------------------------------------------------------------------------------


def test_dev_server_prints_banner_answers_health_and_stops_on_sigterm(tmp_path):
    with running_server("--dev", cwd=tmp_path) as server:
        token = server.banner_token()
        assert "DEVELOPMENT MODE" in server.stdout
        assert f"MCP endpoint   {server.base_url}/mcp" in server.stdout
        assert token.count(".") == 2
        health = httpx.get(f"{server.base_url}/healthz", timeout=5.0)
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        unauthenticated = httpx.post(f"{server.base_url}/mcp", json=rpc_body("tools/list"), timeout=5.0)
        assert unauthenticated.status_code == 401

        server.process.send_signal(signal.SIGTERM)
        assert server.wait_exit(timeout=5) == 0  # a requested stop, not a crash
    assert "Traceback" not in server.stderr


def test_banner_token_is_accepted_by_the_dev_server(tmp_path):
    with running_server("--dev", cwd=tmp_path) as server:
        response = call_get_me(server.base_url, server.banner_token())
        assert response.status_code == 200, response.text
        identity = parse_mcp_response(response)["result"]["structuredContent"]
        assert identity["issuer"] == f"{server.base_url}/dev-issuer"
        assert identity["audience"] == [f"{server.base_url}/mcp"]
        assert identity["token_type"] == "machine"


def test_dev_server_works_with_a_production_dotenv_in_place(tmp_path):
    # `cp .env.example .env && make dev`: the production issuer, server URL and audience must not leak in.
    (tmp_path / ".env").write_text(
        "OAUTH_ISSUER=https://your-tenant.example-idp.com/\n"
        "OAUTH_AUDIENCE=api://production\n"
        "MCP_SERVER_URL=https://mcp.example.com/mcp\n",
        encoding="utf-8",
    )
    with running_server("--dev", cwd=tmp_path) as server:
        token = server.banner_token()
        assert "(OAUTH_ISSUER=https://your-tenant.example-idp.com/ is ignored in dev mode)" in server.stdout
        assert f"MCP endpoint   {server.base_url}/mcp" in server.stdout
        response = call_get_me(server.base_url, token)
        assert response.status_code == 200, response.text
        identity = parse_mcp_response(response)["result"]["structuredContent"]
        assert identity["audience"] == [f"{server.base_url}/mcp"]


# --- tracing ------------------------------------------------------------------------------------------


def printed_spans(stdout: str) -> list[dict]:
    """The JSON objects the console span exporter printed (one per span, indented), among the banner's lines."""
    decoder, spans, position = json.JSONDecoder(), [], 0
    while (start := stdout.find("{\n", position)) >= 0:
        try:
            span, position = decoder.raw_decode(stdout, start)
        except ValueError:
            position = start + 1
            continue
        spans.append(span)
    return spans


def test_console_tracing_exports_buffered_spans_at_sigterm(tmp_path):
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    # The batch processor would wait a minute: only the shutdown after SIGTERM can export these spans.
    values = {"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "60000", "LOG_FORMAT": "json"}
    with running_server("--dev", cwd=tmp_path, **values) as server:
        token = server.banner_token()
        body = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
        headers = {**legacy_headers(token), "traceparent": f"00-{trace_id}-{parent_id}-01"}
        response = httpx.post(f"{server.base_url}/mcp", json=body, headers=headers, timeout=10.0)
        assert response.status_code == 200, response.text
        assert '"name": "POST /mcp"' not in server.stdout  # still buffered
        server.process.send_signal(signal.SIGTERM)
        assert server.wait_exit(timeout=10) == 0
    spans = printed_spans(server.stdout)
    [request] = [span for span in spans if span["name"] == "POST /mcp"]
    assert request["kind"] == "SpanKind.SERVER"
    assert request["context"]["trace_id"] == f"0x{trace_id}"
    assert request["parent_id"] == f"0x{parent_id}"
    assert request["attributes"]["auth.outcome"] == "ok"
    assert request["attributes"]["auth.client_id"] == "dev-client"
    assert request["resource"]["attributes"]["service.name"] == "mcp-oauth-resource-server"
    # The SDK's own span for the message nests under the request's.
    [message] = [span for span in spans if span["name"] == "tools/call get_me"]
    assert message["parent_id"] == request["context"]["span_id"]
    # The server's fetch of its (dev) IdP's keys is a CLIENT span of its own.
    fetches = [span for span in spans if span["kind"] == "SpanKind.CLIENT" and span["name"] == "GET"]
    assert any("/dev-issuer/" in span["attributes"]["url.full"] for span in fetches), fetches
    assert token not in server.stdout.replace(f"Authorization: Bearer {token}", "")  # the banner's line only
    access = [json.loads(line) for line in server.stderr.splitlines() if '"logger": "access"' in line]
    [call] = [line for line in access if line["path"] == "/mcp"]
    assert call["trace_id"] == trace_id
    assert f"0x{call['span_id']}" == request["context"]["span_id"]
    assert "Traceback" not in server.stderr


def test_the_doctor_takes_a_token_pasted_with_its_scheme_or_whole_header():
    from server import read_token

    for pasted in ("eyJh.e30.sig", "Bearer eyJh.e30.sig", "DPoP eyJh.e30.sig", "Authorization: Bearer eyJh.e30.sig"):
        assert read_token(pasted) == "eyJh.e30.sig", pasted
    assert read_token("  authorization:dpop   eyJh.e30.sig \n") == "eyJh.e30.sig"
    assert read_token("Bearer") == "Bearer"  # a bare word is the token itself

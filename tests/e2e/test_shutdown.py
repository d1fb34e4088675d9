"""SIGTERM on a real server: the listening socket closes at once, a request already in flight still completes."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import pytest

from tests.e2e.conftest import LOOPBACK, POLL_INTERVAL, ServerLauncher
from tests.e2e.test_dev_server import MODERN_VERSION, InFlightCall, json_rpc_answer

pytestmark = pytest.mark.e2e

REFUSAL_TIMEOUT = 5.0


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except ConnectionRefusedError:
        return False


def wait_until_refusing(port: int, timeout: float = REFUSAL_TIMEOUT) -> float:
    """Seconds until a new connection is refused; fails the test if that takes longer than `timeout`."""
    started = time.monotonic()
    for _ in range(int(timeout / POLL_INTERVAL) + 1):
        if not accepts_connections(port):
            return time.monotonic() - started
        time.sleep(POLL_INTERVAL)
    pytest.fail(f"port {port} still accepted connections {timeout} s after SIGTERM")


def test_after_sigterm_new_connections_are_refused_while_the_request_in_flight_completes(
    launcher: ServerLauncher,
) -> None:
    server = launcher.start("--dev", env={"SHUTDOWN_GRACE_SECONDS": "20", "LOG_FORMAT": "json"})
    token = server.banner_token()
    call = InFlightCall(server, token, MODERN_VERSION)
    try:
        call.start()  # answered 100 Continue: the app is reading the body, past the bearer check
        server.process.send_signal(signal.SIGTERM)

        assert wait_until_refusing(server.port) < REFUSAL_TIMEOUT
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.base_url}/healthz", timeout=2)
        time.sleep(0.5)  # the held request keeps the process alive, well past the socket closing
        assert server.process.poll() is None, "the server exited with a request in flight"

        status, answer = call.finish()
    finally:
        call.close()
    assert status == 200, answer
    result = json_rpc_answer(answer)["result"]
    assert not result["isError"], result
    assert result["structuredContent"]["user_id"] == "dev-client"

    assert server.process.wait(timeout=10) == 0
    log = server.stderr()
    assert '"status": 200' in log and '"auth": "ok"' in log  # the in-flight call got its access line
    assert "Application shutdown complete" in log

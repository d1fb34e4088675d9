"""`python server.py --dev` as a real process: dev-issuer tokens, get_me in both protocol eras, challenges, SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import h11
import httpx
import pytest
from mcp import MCPError
from mcp.types import INTERNAL_ERROR

from tests.e2e.conftest import LOOPBACK, POLL_INTERVAL, ServerLauncher, ServerProcess
from tests.support import LEGACY_VERSION, bearer, rpc_body

pytestmark = pytest.mark.e2e

MODERN_VERSION = "2026-07-28"
DEV_CLIENT = ("dev-client", "dev-secret")
TOKEN_LIFETIME = 3600  # the default DEV_TOKEN_LIFETIME_SECONDS


@pytest.fixture(scope="module")
def dev_servers(module_launcher: ServerLauncher) -> dict[str, ServerProcess]:
    """Every dev server this module needs, booted together (each start costs about a second of CPU):
    one shared by the request tests, and one for each test that stops its server."""
    names = ("shared", "idle", "stopping")
    servers = {name: module_launcher.spawn("--dev", env={"SHUTDOWN_GRACE_SECONDS": "10"}) for name in names}
    for server in servers.values():
        server.wait_until_answering("/healthz")
    return servers


@pytest.fixture(scope="module")
def dev_server(dev_servers: dict[str, ServerProcess]) -> ServerProcess:
    return dev_servers["shared"]


def issuer_of(server: ServerProcess) -> str:
    return f"{server.base_url}/dev-issuer"


def fetch_token(server: ServerProcess, client: tuple[str, str] = DEV_CLIENT) -> httpx.Response:
    return httpx.post(
        f"{issuer_of(server)}/token",
        data={"grant_type": "client_credentials"},
        auth=client,
        timeout=10,
    )


@pytest.fixture
def dev_token(dev_server: ServerProcess) -> str:
    response = fetch_token(dev_server)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = "A" if signature[10] != "A" else "B"
    return f"{header}.{payload}.{signature[:10]}{flipped}{signature[11:]}"


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, which the client's task groups may raise."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def assert_dev_identity(identity: dict, server: ServerProcess) -> None:
    assert identity["user_id"] == "dev-client"
    assert identity["client_id"] == "dev-client"
    assert identity["issuer"] == issuer_of(server)
    assert server.mcp_url in identity["audience"]
    assert identity["token_type"] == "machine"
    expires_at = datetime.fromisoformat(identity["expires_at"])
    assert expires_at.tzinfo is not None
    now = datetime.now(UTC)
    assert now < expires_at <= now + timedelta(seconds=TOKEN_LIFETIME + 5)


def test_token_endpoint_issues_client_credentials_tokens(dev_server: ServerProcess) -> None:
    response = fetch_token(dev_server)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    answer = response.json()
    assert answer["token_type"] == "Bearer"
    assert answer["expires_in"] == TOKEN_LIFETIME
    assert answer["access_token"].count(".") == 2

    refused = fetch_token(dev_server, ("dev-client", "wrong-secret"))
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"


async def test_get_me_over_the_modern_protocol(dev_server: ServerProcess, dev_token: str) -> None:
    async with dev_server.client(dev_token) as client:
        assert client.protocol_version == MODERN_VERSION
        result = await client.call_tool("get_me", {})
    assert not result.is_error, result.content
    assert_dev_identity(result.structured_content, dev_server)


async def test_get_me_over_the_legacy_protocol(dev_server: ServerProcess, dev_token: str) -> None:
    async with dev_server.client(dev_token, mode="legacy") as client:
        assert client.protocol_version == LEGACY_VERSION
        result = await client.call_tool("get_me", {})
    assert not result.is_error, result.content
    assert_dev_identity(result.structured_content, dev_server)


async def test_get_me_is_listed_with_an_output_schema(dev_server: ServerProcess, dev_token: str) -> None:
    async with dev_server.client(dev_token) as client:
        listed = await client.list_tools()
    tools = {tool.name: tool for tool in listed.tools}
    assert "get_me" in tools
    schema = tools["get_me"].output_schema
    assert schema is not None
    assert {"user_id", "client_id", "issuer", "audience", "expires_at", "token_type"} <= set(schema["properties"])


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_client_without_a_token_is_refused(dev_server: ServerProcess, mode: str) -> None:
    with pytest.raises((MCPError, BaseExceptionGroup)) as caught:
        async with dev_server.client(None, mode=mode) as client:
            await client.call_tool("get_me", {})
    errors = [error for error in leaves(caught.value) if isinstance(error, MCPError)]
    assert errors, caught.value
    # A 401 without a JSON-RPC body reaches the client as an internal error; the status itself is lost.
    assert errors[0].code == INTERNAL_ERROR


def test_request_without_a_token_is_challenged(dev_server: ServerProcess) -> None:
    response = dev_server.post_mcp(None)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{dev_server.resource_metadata_url}"' in challenge

    metadata = httpx.get(dev_server.resource_metadata_url, timeout=10)
    assert metadata.status_code == 200
    assert metadata.json()["resource"] == dev_server.mcp_url
    assert metadata.json()["authorization_servers"] == [issuer_of(dev_server)]


def test_tampered_token_is_refused(dev_server: ServerProcess, dev_token: str) -> None:
    response = dev_server.post_mcp(tampered(dev_token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_banner_token_works(dev_server: ServerProcess) -> None:
    token = dev_server.banner_token()
    async with dev_server.client(token) as client:
        result = await client.call_tool("get_me", {})
    assert not result.is_error, result.content
    assert_dev_identity(result.structured_content, dev_server)


async def test_server_log_never_contains_a_token(dev_server: ServerProcess, dev_token: str) -> None:
    banner_token = dev_server.banner_token()
    for token in (dev_token, banner_token):
        async with dev_server.client(token, mode="legacy") as client:
            assert not (await client.call_tool("get_me", {})).is_error
    bad_token = tampered(dev_token)
    assert dev_server.post_mcp(bad_token).status_code == 401

    wait_for_log(dev_server, "token refused: ")  # the log is really captured, refusals included (lines are batched)
    wait_for_log(dev_server, "POST /mcp 401 ")
    log = dev_server.stderr()
    for token in (dev_token, banner_token, bad_token):
        for part in token.split("."):
            assert part not in log
    assert "Bearer" not in log


# --- shutdown ---------------------------------------------------------------------------------


def wait_for_log(server: ServerProcess, text: str, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / POLL_INTERVAL)):
        if text in server.stderr():
            return
        time.sleep(POLL_INTERVAL)
    pytest.fail(f"{text!r} never appeared in the server log:\n{server.stderr()}")


def test_sigterm_stops_an_idle_server_with_exit_code_0(dev_servers: dict[str, ServerProcess]) -> None:
    server = dev_servers["idle"]
    assert server.terminate() == 0
    assert "Application shutdown complete" in server.stderr()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.base_url}/healthz", timeout=2)


def get_me_request(protocol_version: str) -> tuple[dict[str, str], bytes]:
    """Headers and body of a single-POST get_me call, as each protocol era puts it on the wire."""
    params: dict = {"name": "get_me", "arguments": {}}
    headers = {"MCP-Protocol-Version": protocol_version}
    if protocol_version == MODERN_VERSION:
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        headers |= {"Mcp-Method": "tools/call", "Mcp-Name": "get_me"}
    return headers, json.dumps(rpc_body("tools/call", params)).encode()


def json_rpc_answer(body: bytes) -> dict:
    """The JSON-RPC message of a JSON answer (modern era) or an SSE answer (legacy era)."""
    for line in body.decode().splitlines():
        if line.startswith("data:") and line[5:].strip():
            return json.loads(line[5:])
    return json.loads(body)


class InFlightCall:
    """A get_me POST held open over a plain socket (parsed with h11) until the test sends its body.

    With `Expect: 100-continue` the server answers 100 only once the app asks for the body, so after
    `start()` the request is provably in flight: past the bearer check and inside the MCP transport."""

    def __init__(self, server: ServerProcess, token: str, protocol_version: str) -> None:
        self.era_headers, self.body = get_me_request(protocol_version)
        self.server, self.token = server, token
        self.sock = socket.create_connection((LOOPBACK, server.port), timeout=10)
        self.conn = h11.Connection(h11.CLIENT)

    def start(self) -> None:
        headers = {
            "Host": f"{LOOPBACK}:{self.server.port}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Content-Length": str(len(self.body)),
            "Expect": "100-continue",
            **self.era_headers,
            **bearer(self.token),
        }
        self._send(h11.Request(method="POST", target="/mcp", headers=list(headers.items())))
        interim = self._next_event()
        assert isinstance(interim, h11.InformationalResponse), interim
        assert interim.status_code == 100

    def finish(self) -> tuple[int, bytes]:
        """Send the body; the status and body of the answer."""
        self._send(h11.Data(data=self.body))
        self._send(h11.EndOfMessage())
        response = self._next_event()
        assert isinstance(response, h11.Response), response
        answer = b""
        for _ in range(1000):
            event = self._next_event()
            if isinstance(event, h11.EndOfMessage):
                return response.status_code, answer
            assert isinstance(event, h11.Data), event
            answer += event.data
        raise AssertionError("the answer never ended")

    def _send(self, event: h11.Event) -> None:
        self.sock.sendall(self.conn.send(event) or b"")

    def _next_event(self) -> h11.Event:
        for _ in range(1000):
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(self.sock.recv(65536))
        raise AssertionError("no complete HTTP event after 1000 reads")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def in_flight_calls() -> Iterator[list[InFlightCall]]:
    calls: list[InFlightCall] = []
    yield calls
    for call in calls:
        call.close()


def test_sigterm_lets_requests_in_flight_finish(
    dev_servers: dict[str, ServerProcess], in_flight_calls: list[InFlightCall]
) -> None:
    server = dev_servers["stopping"]
    token = server.banner_token()
    # The modern era answers with JSON, the legacy era with an SSE stream: both must survive the signal.
    in_flight_calls += [InFlightCall(server, token, version) for version in (MODERN_VERSION, LEGACY_VERSION)]
    for call in in_flight_calls:
        call.start()

    server.process.send_signal(signal.SIGTERM)
    wait_for_log(server, "Shutting down")
    time.sleep(0.6)  # longer than sse-starlette's 0.5 s shutdown poll, which used to end SSE answers early
    assert server.process.poll() is None, "the server exited with requests in flight"

    for call in in_flight_calls:
        status, answer = call.finish()
        assert status == 200, answer
        result = json_rpc_answer(answer)["result"]
        assert not result["isError"], result
        assert result["structuredContent"]["user_id"] == "dev-client"

    assert server.process.wait(timeout=10) == 0
    log = server.stderr()
    assert "Application shutdown complete" in log
    assert "ASGI callable returned without completing response" not in log

"""The notes issue's "done when" end to end: per-client notes, scope refusals, restart, dev issuer, calculator."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import MCPError
from mcp.types import INTERNAL_ERROR, CallToolResult

from tests.e2e.conftest import LOOPBACK, FakeIdP, ServerLauncher, ServerProcess, free_port
from tests.support import Signer, rpc_body

pytestmark = pytest.mark.e2e

CLIENT_A = "notes-client-a"
CLIENT_B = "notes-client-b"
READ_WRITE = "read:notes write:notes"
READ_ONLY = "read:notes"
DEV_CLIENT = ("dev-client", "dev-secret")
MODES = ["auto", "legacy"]


@dataclass(frozen=True)
class Tokens:
    """Client-credentials tokens for one resource server: A, A' (A with read:notes only) and B."""

    a: str
    a_read_only: str
    b: str


@dataclass
class ProdServer:
    server: ServerProcess
    db_path: Path
    env: dict[str, str]
    tokens: Tokens


@pytest.fixture(scope="module")
def idp_key() -> Signer:
    return Signer(rsa.generate_private_key(public_exponent=65537, key_size=2048), f"n-{uuid.uuid4().hex[:8]}", "RS256")


def client_token(idp: FakeIdP, key: Signer, server: ServerProcess, client_id: str, scope: str, id_claim: str) -> str:
    """What an IdP issues for grant_type=client_credentials: the subject is the client itself."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": idp.issuer,
        "sub": client_id,
        id_claim: client_id,
        "aud": server.mcp_url,
        "scope": scope,
        "iat": now,
        "exp": now + 900,
        "jti": uuid.uuid4().hex,
    }
    return key.sign(claims)


@pytest.fixture(scope="module")
def servers(
    module_launcher: ServerLauncher, fake_idp: FakeIdP, idp_key: Signer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Every server this module needs, booted together: two production ones (one to restart) and a dev one."""
    fake_idp.publish(idp_key)
    prod: dict[str, ProdServer] = {}
    for name in ("shared", "restart"):
        port = free_port()
        db_path = tmp_path_factory.mktemp(f"notes-{name}") / "notes.db"
        env = {
            "OAUTH_ISSUER": fake_idp.issuer,
            "MCP_SERVER_URL": f"http://{LOOPBACK}:{port}/mcp",
            "NOTES_DB_PATH": str(db_path),
            "SHUTDOWN_GRACE_SECONDS": "5",
        }
        server = module_launcher.spawn(env=env, port=port)
        tokens = Tokens(
            a=client_token(fake_idp, idp_key, server, CLIENT_A, READ_WRITE, "azp"),
            a_read_only=client_token(fake_idp, idp_key, server, CLIENT_A, READ_ONLY, "azp"),
            b=client_token(fake_idp, idp_key, server, CLIENT_B, READ_WRITE, "client_id"),
        )
        prod[name] = ProdServer(server, db_path, env, tokens)
    dev = module_launcher.spawn("--dev", env={"NOTES_DB_PATH": str(tmp_path_factory.mktemp("notes-dev") / "n.db")})
    for entry in prod.values():
        entry.server.wait_until_answering("/readyz")  # discovery and the first JWKS fetch done
    dev.wait_until_answering("/healthz")
    yield {"prod": prod, "dev": dev}


@pytest.fixture(scope="module")
def prod(servers: dict[str, Any]) -> ProdServer:
    return servers["prod"]["shared"]


@pytest.fixture(scope="module")
def dev_server(servers: dict[str, Any]) -> ServerProcess:
    return servers["dev"]


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def text_of(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def call_tool_raw(server: ServerProcess, token: str, name: str, arguments: dict[str, Any]) -> httpx.Response:
    return server.post_mcp(token, rpc_body("tools/call", {"name": name, "arguments": arguments}))


def assert_insufficient_scope(response: httpx.Response, scope: str) -> None:
    assert response.status_code == 403, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="insufficient_scope"' in challenge
    assert f'scope="{scope}"' in challenge
    assert response.json()["error"] == "insufficient_scope"


async def list_all(server: ServerProcess, token: str, mode: str = "auto") -> list[dict[str, Any]]:
    async with server.client(token, mode=mode) as client:
        return ok(await client.call_tool("list_notes", {"limit": 100}))["notes"]


# --- production mode, third-party IdP -------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_writer_creates_and_read_only_token_lists_and_reads(prod: ProdServer, mode: str) -> None:
    server, tokens = prod.server, prod.tokens
    tag = uuid.uuid4().hex[:6]
    async with server.client(tokens.a, mode=mode) as client:
        first = ok(await client.call_tool("create_note", {"title": f"groceries {tag}", "content": "milk, eggs"}))
        second = ok(await client.call_tool("create_note", {"title": f"ideas {tag}", "content": "ünïcode ✓"}))
    assert first["id"] != second["id"]
    assert first["created_at"].endswith("Z")

    async with server.client(tokens.a_read_only, mode=mode) as client:
        listed = ok(await client.call_tool("list_notes", {"limit": 100}))["notes"]
        read = ok(await client.call_tool("read_note", {"note_id": second["id"]}))
    by_id = {note["id"]: note for note in listed}
    assert by_id[first["id"]] == first  # same owner (issuer, client id) whatever the token's scopes
    assert by_id[second["id"]] == second
    assert read == second


@pytest.mark.parametrize("mode", MODES)
async def test_read_only_token_cannot_create(prod: ProdServer, mode: str) -> None:
    server, tokens = prod.server, prod.tokens
    response = call_tool_raw(server, tokens.a_read_only, "create_note", {"title": "nope", "content": "x"})
    assert_insufficient_scope(response, "write:notes")
    assert call_tool_raw(server, tokens.a_read_only, "list_notes", {}).status_code == 200

    before = await list_all(server, tokens.a_read_only)
    # The SDK client gets the same 403, without a JSON-RPC body: it surfaces only as an internal error.
    with pytest.raises((MCPError, BaseExceptionGroup)) as caught:
        async with server.client(tokens.a_read_only, mode=mode) as client:
            await client.call_tool("create_note", {"title": "nope", "content": "x"})
    errors = [error for error in leaves(caught.value) if isinstance(error, MCPError)]
    assert errors, caught.value
    assert errors[0].code == INTERNAL_ERROR
    assert "error response" in str(errors[0])  # the 403 and its WWW-Authenticate are not surfaced
    assert await list_all(server, tokens.a_read_only) == before  # nothing was written


@pytest.mark.parametrize("mode", MODES)
async def test_other_client_sees_none_of_the_notes(prod: ProdServer, mode: str) -> None:
    server, tokens = prod.server, prod.tokens
    async with server.client(tokens.a, mode=mode) as client:
        secret = ok(await client.call_tool("create_note", {"title": "A's secret", "content": "for A only"}))

    attempts = {
        "read_note": {},
        "update_note": {"title": "mine now"},
        "delete_note": {},
    }
    async with server.client(tokens.b, mode=mode) as client:
        identity = ok(await client.call_tool("get_me", {}))
        listed = ok(await client.call_tool("list_notes", {"limit": 100}))
        answers = {
            name: (
                await client.call_tool(name, {"note_id": secret["id"], **extra}),
                await client.call_tool(name, {"note_id": uuid.uuid4().hex, **extra}),
            )
            for name, extra in attempts.items()
        }
    assert identity["client_id"] == CLIENT_B
    assert all(note["id"] != secret["id"] and note["title"] != "A's secret" for note in listed["notes"])
    for name, (foreign, unknown) in answers.items():
        assert foreign.is_error and unknown.is_error, name
        # Someone else's note and a note that never existed are indistinguishable.
        assert text_of(foreign) == text_of(unknown), name
        assert "not found" in text_of(foreign)
        assert "for A only" not in text_of(foreign)

    async with server.client(tokens.a_read_only, mode=mode) as client:
        assert ok(await client.call_tool("read_note", {"note_id": secret["id"]})) == secret


async def test_notes_survive_a_restart(servers: dict[str, Any], module_launcher: ServerLauncher) -> None:
    entry: ProdServer = servers["prod"]["restart"]
    server, tokens = entry.server, entry.tokens
    async with server.client(tokens.a) as client:
        for title, content in (("first", "one"), ("second", "two\nlines")):
            ok(await client.call_tool("create_note", {"title": title, "content": content}))
    before = await list_all(server, tokens.a_read_only)
    assert [(note["title"], note["content"]) for note in before] == [("first", "one"), ("second", "two\nlines")]

    assert server.terminate() == 0
    assert entry.db_path.exists()
    # Same port, so the same public URL: the tokens minted for it stay valid.
    restarted = module_launcher.start(env=entry.env, port=server.port, ready_path="/readyz")
    assert restarted.process.pid != server.process.pid

    for mode in MODES:
        assert await list_all(restarted, tokens.a_read_only, mode) == before
    async with restarted.client(tokens.a_read_only, mode="legacy") as client:
        assert ok(await client.call_tool("read_note", {"note_id": before[1]["id"]})) == before[1]
    assert await list_all(restarted, tokens.b) == []


# --- dev mode: the embedded issuer's scope parameter ----------------------------------------------


def dev_token_response(server: ServerProcess, scope: str | None = None) -> httpx.Response:
    """client_secret_post: the client authenticates with client_id and client_secret in the form."""
    form = {"grant_type": "client_credentials", "client_id": DEV_CLIENT[0], "client_secret": DEV_CLIENT[1]}
    if scope is not None:
        form["scope"] = scope
    return httpx.post(f"{server.base_url}/dev-issuer/token", data=form, timeout=10)


def dev_token(server: ServerProcess, scope: str | None = None) -> str:
    response = dev_token_response(server, scope)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.mark.parametrize("mode", MODES)
async def test_dev_read_only_token_lists_but_cannot_create(dev_server: ServerProcess, mode: str) -> None:
    response = dev_token_response(dev_server, READ_ONLY)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == READ_ONLY
    token = response.json()["access_token"]

    assert_insufficient_scope(
        call_tool_raw(dev_server, token, "create_note", {"title": "t", "content": "c"}), "write:notes"
    )
    async with dev_server.client(token, mode=mode) as client:
        assert ok(await client.call_tool("get_me", {}))["scopes"] == [READ_ONLY]
        assert isinstance(ok(await client.call_tool("list_notes", {}))["notes"], list)


@pytest.mark.parametrize("mode", MODES)
async def test_dev_token_without_scope_has_every_tool_scope(dev_server: ServerProcess, mode: str) -> None:
    response = dev_token_response(dev_server)
    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == {"read:notes", "write:notes", "use:calculator"}
    async with dev_server.client(response.json()["access_token"], mode=mode) as client:
        created = ok(await client.call_tool("create_note", {"title": "dev", "content": "works"}))
        listed = ok(await client.call_tool("list_notes", {"limit": 100}))["notes"]
    assert created in listed


def test_dev_issuer_refuses_an_unknown_scope(dev_server: ServerProcess) -> None:
    response = dev_token_response(dev_server, "read:notes admin:everything")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert "admin:everything" in response.json()["error_description"]
    assert "access_token" not in response.json()


# --- calculator -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_calculator_results_and_division_by_zero(dev_server: ServerProcess, mode: str) -> None:
    async with dev_server.client(dev_token(dev_server), mode=mode) as client:
        added = await client.call_tool("add_numbers", {"a": 2.5, "b": 4})
        divided = await client.call_tool("divide_numbers", {"a": 1, "b": 0})
    assert ok(added) == {"result": 6.5}
    assert divided.is_error
    assert "zero" in text_of(divided)


def test_calculator_needs_its_scope(dev_server: ServerProcess) -> None:
    response = call_tool_raw(dev_server, dev_token(dev_server, READ_ONLY), "add_numbers", {"a": 1, "b": 2})
    assert_insufficient_scope(response, "use:calculator")

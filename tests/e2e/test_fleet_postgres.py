"""Three `python server.py` replicas on one PostgreSQL database and one IdP behave as one notes store:
notes move between replicas, the per-owner limit holds across them, and a SIGKILL loses no acknowledged write."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests import pg
from tests.e2e.conftest import LOOPBACK, FakeIdP, ServerLauncher, ServerProcess, free_port
from tests.support import Signer, legacy_headers, parse_mcp_response, rpc_body
from tools.notes_store import NOT_FOUND_MESSAGE

pytestmark = pytest.mark.e2e

LIMIT = 100
PASSWORD = "fleet-Pw-7e3"  # the test server trusts loopback and ignores it; it must never show in a log
SCOPES = "read:notes write:notes"
CALL_TIMEOUT = httpx.Timeout(20.0)


@dataclass
class Fleet:
    replicas: list[ServerProcess]
    env: dict[str, str]
    key: Signer
    issuer: str
    audience: str
    database_url: str

    def token(self, client_id: str) -> str:
        """What an IdP issues for grant_type=client_credentials: the subject is the client itself."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": client_id,
            "azp": client_id,
            "aud": self.audience,
            "scope": SCOPES,
            "iat": now,
            "exp": now + 900,
            "jti": uuid.uuid4().hex,
        }
        return self.key.sign(claims)


@pytest.fixture(scope="module")
def fleet(module_launcher: ServerLauncher, fake_idp: FakeIdP, postgres_database: str) -> Iterator[Fleet]:
    """Three replicas started together on an empty database (so they race to create the schema)."""
    url = with_password(pg.empty(postgres_database))
    key = Signer(rsa.generate_private_key(public_exponent=65537, key_size=2048), f"f-{uuid.uuid4().hex[:8]}", "RS256")
    fake_idp.publish(key)
    ports = [free_port() for _ in range(3)]
    audience = f"http://{LOOPBACK}:{ports[0]}/mcp"  # one public URL for the fleet, as behind a gateway
    env = {
        "OAUTH_ISSUER": fake_idp.issuer,
        "MCP_SERVER_URL": audience,
        "NOTES_DATABASE_URL": url,
        "NOTES_MAX_PER_OWNER": str(LIMIT),
        "NOTES_DB_TIMEOUT_SECONDS": "5",
        "SHUTDOWN_GRACE_SECONDS": "5",
    }
    replicas = [module_launcher.spawn(env=env, port=port) for port in ports]
    for replica in replicas:
        replica.wait_until_answering("/readyz")
    yield Fleet(replicas, env, key, fake_idp.issuer, audience, url)


def with_password(url: str) -> str:
    """`url` with PASSWORD unless it has a password of its own (either must stay out of every log)."""
    parts = urlsplit(url)
    if parts.password is not None:
        return url
    return parts._replace(
        netloc=f"{parts.username or 'postgres'}:{PASSWORD}@{parts.netloc.rsplit('@', 1)[-1]}"
    ).geturl()


def new_client() -> str:
    return f"fleet-client-{uuid.uuid4().hex[:8]}"


async def call(http: httpx.AsyncClient, replica: ServerProcess, token: str, name: str, **arguments: Any) -> Any:
    """One tools/call as plain JSON-RPC over HTTP; returns the structured result, or the error text."""
    body = rpc_body("tools/call", {"name": name, "arguments": arguments})
    response = await http.post(replica.mcp_url, json=body, headers=legacy_headers(token))
    assert response.status_code == 200, response.text
    result = parse_mcp_response(response)["result"]
    if result["isError"]:
        return result["content"][0]["text"]
    return result["structuredContent"]


async def all_notes(http: httpx.AsyncClient, replica: ServerProcess, token: str) -> list[dict[str, Any]]:
    notes: list[dict[str, Any]] = []
    cursor = None
    for _ in range(20):
        page = await call(http, replica, token, "list_notes", limit=100, **({"cursor": cursor} if cursor else {}))
        notes += page["notes"]
        cursor = page["next_cursor"]
        if cursor is None:
            return notes
    raise AssertionError("paging did not end")


async def test_a_note_moves_between_replicas_through_the_official_client(fleet: Fleet) -> None:
    first, second, third = fleet.replicas
    owner, stranger = fleet.token(new_client()), fleet.token(new_client())
    async with first.client(owner) as client:
        created = (await client.call_tool("create_note", {"title": "fleet", "content": "v1"})).structured_content
    assert created is not None
    async with second.client(owner) as client:
        assert (await client.call_tool("read_note", {"note_id": created["id"]})).structured_content == created
        updated = (
            await client.call_tool("update_note", {"note_id": created["id"], "content": "v2"})
        ).structured_content
    assert updated is not None and updated["content"] == "v2"
    async with third.client(owner) as client:
        listed = (await client.call_tool("list_notes", {})).structured_content
        assert listed is not None and listed["notes"] == [updated]
        assert (await client.call_tool("delete_note", {"note_id": created["id"]})).structured_content == {
            "id": created["id"],
            "deleted": True,
        }
    async with httpx.AsyncClient(timeout=CALL_TIMEOUT) as http:
        gone = await call(http, first, owner, "read_note", note_id=created["id"])
        foreign = await call(http, second, stranger, "read_note", note_id=updated["id"])
        random = await call(http, third, stranger, "read_note", note_id=uuid.uuid4().hex[:22])
    assert gone == foreign == random
    assert NOT_FOUND_MESSAGE in gone


async def test_fifty_concurrent_creates_across_replicas_stop_exactly_at_the_limit(fleet: Fleet) -> None:
    client_id = new_client()
    token = fleet.token(client_id)
    async with httpx.AsyncClient(timeout=CALL_TIMEOUT) as http:
        for batch in range(7):  # 70 notes first, ten at a time
            await asyncio.gather(
                *(
                    call(http, fleet.replicas[i % 3], token, "create_note", title=f"pre {batch}-{i}", content="")
                    for i in range(10)
                )
            )
        results = await asyncio.gather(
            *(call(http, fleet.replicas[i % 3], token, "create_note", title=f"race {i}", content="") for i in range(50))
        )
        kept = [result for result in results if isinstance(result, dict)]
        refusals = [result for result in results if isinstance(result, str)]
        assert len(kept) == LIMIT - 70
        assert len(refusals) == 50 - len(kept)
        assert all(f"at most {LIMIT} notes" in refusal for refusal in refusals)
        assert len(await all_notes(http, fleet.replicas[1], token)) == LIMIT
    count = pg.scalar(fleet.database_url, f"SELECT COUNT(*) FROM notes WHERE subject = '{client_id}'")
    assert count == LIMIT


async def test_a_replica_killed_mid_writes_loses_no_acknowledged_write(
    fleet: Fleet, module_launcher: ServerLauncher
) -> None:
    token = fleet.token(new_client())
    victim = fleet.replicas[1]
    acknowledged: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def writer(replica: ServerProcess, number: int) -> None:
        async with httpx.AsyncClient(timeout=CALL_TIMEOUT) as http:
            for i in range(14):  # 6 writers: at most 84 notes, under the limit
                if stop.is_set():
                    return
                try:
                    result = await call(http, replica, token, "create_note", title=f"w{number}-{i}", content="x")
                except httpx.TransportError:
                    return  # the replica died with this request in flight: not acknowledged
                assert isinstance(result, dict), result
                acknowledged.append(result)

    async def killer() -> None:
        for _ in range(400):  # at most ~20 s
            if len(acknowledged) >= 12:
                break
            await asyncio.sleep(0.05)
        victim.process.kill()  # SIGKILL: no shutdown, no flush
        await asyncio.sleep(0.5)
        stop.set()

    writers = [writer(replica, n * 3 + r) for n in range(2) for r, replica in enumerate(fleet.replicas)]
    await asyncio.wait_for(asyncio.gather(killer(), *writers), 60)
    assert victim.process.wait(timeout=10) != 0
    assert len(acknowledged) >= 12

    restarted = module_launcher.spawn(env=fleet.env, port=victim.port)
    restarted.wait_until_answering("/readyz")
    fleet.replicas[1] = restarted
    async with httpx.AsyncClient(timeout=CALL_TIMEOUT) as http:
        for replica in fleet.replicas:
            stored = {note["id"]: note for note in await all_notes(http, replica, token)}
            for note in acknowledged:
                assert stored.get(note["id"]) == note


def test_no_replica_ever_logged_the_database_password(fleet: Fleet, module_launcher: ServerLauncher) -> None:
    password = urlsplit(fleet.database_url).password
    assert password
    for server in module_launcher.servers:
        assert password not in server.stdout() + server.stderr()


async def test_a_replica_started_with_the_database_down_listens_and_says_not_ready(
    launcher: ServerLauncher, fleet: Fleet
) -> None:
    nowhere = f"postgresql://postgres:{PASSWORD}@{LOOPBACK}:{free_port()}/notes"
    started = time.monotonic()
    replica = launcher.start(env={**fleet.env, "NOTES_DATABASE_URL": nowhere, "NOTES_DB_TIMEOUT_SECONDS": "1"})
    assert time.monotonic() - started < 60
    async with httpx.AsyncClient(timeout=CALL_TIMEOUT) as http:
        ready = await http.get(replica.base_url + "/readyz")
        assert ready.status_code == 503
        assert "notes store unreachable" in ready.json()["reason"]
        answer = await call(http, replica, fleet.token(new_client()), "list_notes")
    assert answer == "Error executing tool list_notes: the notes store is unavailable; try again later"
    assert PASSWORD not in replica.stdout() + replica.stderr()
    assert "notes database not answering yet" in replica.stderr()


def test_a_replica_refuses_a_database_from_a_newer_schema(launcher: ServerLauncher, fleet: Fleet) -> None:
    # A schema of its own, chosen with a libpq parameter in the URL (which must pass through).
    pg.scalar(fleet.database_url, "DROP SCHEMA IF EXISTS from_the_future CASCADE")
    pg.scalar(fleet.database_url, "CREATE SCHEMA from_the_future")
    pg.scalar(
        fleet.database_url,
        "CREATE TABLE from_the_future.notes_schema (singleton BOOLEAN PRIMARY KEY, version INTEGER NOT NULL)",
    )
    pg.scalar(fleet.database_url, "INSERT INTO from_the_future.notes_schema VALUES (TRUE, 99)")
    url = f"{fleet.database_url}?options=-csearch_path%3Dfrom_the_future"
    replica = launcher.spawn(env={**fleet.env, "NOTES_DATABASE_URL": url})
    assert replica.process.wait(timeout=30) != 0
    assert "start-up refused: " in replica.stderr()
    assert "schema version 99, newer than this server understands" in replica.stderr()
    assert "Traceback" not in replica.stderr()
    assert PASSWORD not in replica.stdout() + replica.stderr()
    assert pg.scalar(fleet.database_url, "SELECT to_regclass('from_the_future.notes') IS NULL") is True


def test_sigterm_closes_the_pool_and_exits_0(fleet: Fleet) -> None:
    replica = fleet.replicas[2]
    assert replica.terminate() == 0
    assert "Traceback" not in replica.stderr()

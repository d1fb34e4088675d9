"""What is PostgreSQL's own: migrations across replicas, a newer schema refused, outages, recovery, pool gauges.

The shared contract (ownership, limits, paging...) runs on PostgreSQL in test_notes_store.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import psycopg
import pytest

from tests import pg
from tests.support import opened
from tests.tcp_proxy import TcpProxy, free_port
from tools.notes_store import NoteLimitExceeded, NotesLimits, NotesStorageError, SchemaTooNew
from tools.notes_store_postgres import MIGRATIONS, PostgresNotesStore, owner_lock_key

ALICE = ("https://idp.example.com/", "alice")
BOB = ("https://idp.example.com/", "bob")
PASSWORD = "pw-Zq8!x@y:z/%41"  # characters that need quoting in a URL, and one that looks like an escape
RECOVERY_SECONDS = 20.0


def with_password(url: str, password: str = PASSWORD) -> str:
    """`url` with a password added (the test server trusts loopback, so it is simply ignored)."""
    from urllib.parse import quote

    parts = urlsplit(url)
    user = parts.username or "postgres"
    return parts._replace(netloc=f"{user}:{quote(password, safe='')}@{parts.hostname}:{parts.port or 5432}").geturl()


def through(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    hosts = f"127.0.0.1:{proxy.port}"
    return parts._replace(netloc=f"{netloc[0]}@{hosts}" if len(netloc) == 2 else hosts).geturl()


def target_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


async def eventually_pings(store: PostgresNotesStore, seconds: float = RECOVERY_SECONDS) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if await store.ping():
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(f"the store did not answer again within {seconds} s")


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    relay = TcpProxy(*target_of(postgres_url))
    await relay.start()
    yield relay
    relay.thaw()
    await relay.cut()


# --- schema ----------------------------------------------------------------------------------------


async def test_replicas_starting_together_on_an_empty_database_migrate_once(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tools.notes_store_postgres")
    stores = [PostgresNotesStore(postgres_url) for _ in range(6)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        note = await stores[0].create(ALICE, "shared", "")
        assert await stores[-1].get(ALICE, note.id) == note
    finally:
        for store in stores:
            await store.close()
    migrated = [record for record in caplog.records if "migrated from schema version 0" in record.getMessage()]
    assert len(migrated) == 1
    assert pg.scalar(postgres_url, "SELECT version FROM notes_schema") == len(MIGRATIONS)
    assert pg.scalar(postgres_url, "SELECT COUNT(*) FROM notes_schema") == 1


async def test_a_database_from_a_newer_schema_is_refused(postgres_url: str) -> None:
    pg.scalar(postgres_url, "CREATE TABLE notes_schema (singleton BOOLEAN PRIMARY KEY, version INTEGER NOT NULL)")
    pg.scalar(postgres_url, "INSERT INTO notes_schema VALUES (TRUE, 2)")
    store = PostgresNotesStore(with_password(postgres_url))
    with pytest.raises(SchemaTooNew, match=r"schema version 2, newer than this server understands \(1\)") as caught:
        await store.open()
    assert PASSWORD not in str(caught.value)
    assert await store.ping() is False
    assert pg.scalar(postgres_url, "SELECT to_regclass('notes') IS NULL") is True
    assert pg.scalar(postgres_url, "SELECT version FROM notes_schema") == 2


async def test_a_later_migration_upgrades_an_existing_database(postgres_url: str) -> None:
    class Upgraded(PostgresNotesStore):
        migrations = (*MIGRATIONS, ("ALTER TABLE notes ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT FALSE",))

    old = PostgresNotesStore(postgres_url)
    await old.open()
    note = await old.create(ALICE, "from v1", "")
    await old.close()

    async with opened(Upgraded(postgres_url)) as new:
        assert await new.get(ALICE, note.id) == note
    assert pg.scalar(postgres_url, "SELECT version FROM notes_schema") == 2
    assert pg.scalar(postgres_url, "SELECT pinned FROM notes") is False
    with pytest.raises(SchemaTooNew):
        await PostgresNotesStore(postgres_url).open()  # and the old code now refuses it


async def test_a_failing_migration_changes_nothing(postgres_url: str) -> None:
    class Broken(PostgresNotesStore):
        migrations = (*MIGRATIONS, ("CREATE TABLE half_done (x INTEGER)", "THIS IS NOT SQL"))

    old = PostgresNotesStore(postgres_url)
    await old.open()
    await old.create(ALICE, "kept", "")
    await old.close()

    broken = Broken(postgres_url, timeout=2)
    await broken.open()  # start-up goes on (the error is logged); every call fails clearly
    try:
        with pytest.raises(NotesStorageError, match="syntax error"):
            await broken.list(ALICE)
        assert await broken.ping() is False
    finally:
        await broken.close()
    assert pg.scalar(postgres_url, "SELECT version FROM notes_schema") == 1
    assert pg.scalar(postgres_url, "SELECT to_regclass('half_done') IS NULL") is True
    assert pg.scalar(postgres_url, "SELECT COUNT(*) FROM notes") == 1


# --- the database down, hung, gone and back ------------------------------------------------------------


async def test_a_database_down_at_start_up_is_served_once_it_comes_up(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    relay = TcpProxy(*target_of(postgres_url))  # not listening yet: the database is down
    store = PostgresNotesStore(through(with_password(postgres_url), relay), timeout=1)
    started = time.monotonic()
    await store.open()
    try:
        assert time.monotonic() - started < 5  # start-up goes on: the server listens, /readyz says 503
        assert await store.ping() is False
        started = time.monotonic()
        with pytest.raises(NotesStorageError, match="did not answer within 1 s") as caught:
            await store.create(ALICE, "t", "")
        assert time.monotonic() - started < 2.5
        assert PASSWORD not in str(caught.value)

        await relay.start()
        await eventually_pings(store)
        note = await store.create(ALICE, "after", "")  # the schema was created on the way
        assert await store.get(ALICE, note.id) == note
    finally:
        await store.close()
        await relay.cut()
    assert all(PASSWORD not in record.getMessage() for record in caplog.records)


async def test_a_lost_database_fails_calls_quickly_and_the_store_recovers_by_itself(
    postgres_url: str, proxy: TcpProxy
) -> None:
    async with opened(PostgresNotesStore(through(postgres_url, proxy), timeout=1, pool_min=2, pool_max=4)) as store:
        kept = await store.create(ALICE, "before", "")
        await proxy.cut()
        assert await store.ping() is False
        for _ in range(3):  # pooled connections are all broken now: each call fails, none hangs
            started = time.monotonic()
            with pytest.raises(NotesStorageError):
                await store.create(ALICE, "during", "")
            assert time.monotonic() - started < 2.5

        await proxy.start()
        await eventually_pings(store)
        after = [await store.create(ALICE, f"after {i}", "") for i in range(8)]  # no stale connection left
        assert [n.id for n in (await store.list(ALICE)).notes] == [kept.id, *(note.id for note in after)]


async def test_after_a_database_restart_one_failed_call_clears_every_stale_connection(
    postgres_url: str, proxy: TcpProxy
) -> None:
    async with opened(PostgresNotesStore(through(postgres_url, proxy), timeout=2, pool_min=4, pool_max=4)) as store:
        await asyncio.gather(*(store.list(ALICE) for _ in range(8)))  # four connections open and idle
        await proxy.cut()
        await proxy.start()  # the database restarted: every pooled connection is dead
        with pytest.raises(NotesStorageError):
            await store.list(ALICE)
        await asyncio.sleep(1)  # the pool checks its idle connections meanwhile
        for _ in range(4):
            assert (await store.list(ALICE)).notes == ()


async def test_a_hung_database_gives_an_error_within_the_timeout(postgres_url: str, proxy: TcpProxy) -> None:
    async with opened(PostgresNotesStore(through(postgres_url, proxy), timeout=1, pool_min=1, pool_max=2)) as store:
        await store.create(ALICE, "before", "")
        proxy.freeze()
        started = time.monotonic()
        with pytest.raises(NotesStorageError, match="did not answer within 1 s"):
            await store.create(ALICE, "hung", "")
        assert time.monotonic() - started < 2.5
        started = time.monotonic()
        assert await asyncio.wait_for(store.ping(), 5) is False
        assert time.monotonic() - started < 2.5
        proxy.thaw()
        await eventually_pings(store)


async def test_the_password_never_reaches_a_log_line(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    nobody = with_password(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    async with opened(PostgresNotesStore(nobody, timeout=0.5)) as store:
        with pytest.raises(NotesStorageError) as caught:
            await store.list(ALICE)
        await asyncio.sleep(1.2)  # the pool's own connection attempts log their failures meanwhile
    assert PASSWORD not in str(caught.value)
    assert any("error connecting" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()
        assert "Zq8" not in (record.exc_text or "")


# --- limits across replicas and pool gauges ---------------------------------------------------------


async def test_three_replicas_creating_for_one_owner_stop_exactly_at_the_limit(postgres_url: str) -> None:
    limits = NotesLimits(max_notes_per_owner=20)
    replicas = [PostgresNotesStore(postgres_url, limits, pool_min=2, pool_max=6) for _ in range(3)]
    for replica in replicas:
        await replica.open()
    try:
        results = await asyncio.gather(
            *(replicas[i % 3].create(ALICE, f"n{i}", "") for i in range(50)),
            *(replicas[i % 3].create(BOB, f"b{i}", "") for i in range(5)),
            return_exceptions=True,
        )
        assert sum(not isinstance(result, BaseException) for result in results[:50]) == 20
        assert all(isinstance(result, NoteLimitExceeded) for result in results[:50] if isinstance(result, Exception))
        assert all(not isinstance(result, BaseException) for result in results[50:])  # Bob is not held up by Alice
    finally:
        for replica in replicas:
            await replica.close()
    assert pg.scalar(postgres_url, "SELECT COUNT(*) FROM notes WHERE subject = 'alice'") == 20


async def test_pool_stats_are_gauges(postgres_url: str) -> None:
    store = PostgresNotesStore(postgres_url, pool_min=2, pool_max=5)
    assert store.pool_stats() == {
        "pool_min": 2,
        "pool_max": 5,
        "pool_size": 0,
        "pool_available": 0,
        "requests_waiting": 0,
    }
    await store.open()
    try:
        await asyncio.gather(*(store.list(ALICE) for _ in range(10)))
        stats = store.pool_stats()
        assert 2 <= stats["pool_size"] <= 5
        assert 0 <= stats["pool_available"] <= stats["pool_size"]
        assert stats["requests_waiting"] == 0
        assert all(isinstance(value, int) for value in stats.values())
    finally:
        await store.close()


def test_owner_lock_keys_are_stable_32_bit_and_spread() -> None:
    keys = {owner_lock_key(("https://idp.example.com/", f"user-{i}")) for i in range(1000)}
    assert len(keys) == 1000
    assert all(-(2**31) <= key < 2**31 for key in keys)
    assert owner_lock_key(ALICE) == owner_lock_key(ALICE)
    assert owner_lock_key(("a", "bc")) != owner_lock_key(("ab", "c"))


async def test_every_acknowledged_write_is_committed_before_the_answer(postgres_url: str) -> None:
    async with opened(PostgresNotesStore(postgres_url)) as store:
        with psycopg.connect(postgres_url, autocommit=True) as other:  # another replica's view, at once
            note = await store.create(ALICE, "t", "v1")
            assert other.execute("SELECT content FROM notes WHERE id = %s", (note.id,)).fetchone() == ("v1",)
            await store.update(ALICE, note.id, content="v2")
            assert other.execute("SELECT content FROM notes WHERE id = %s", (note.id,)).fetchone() == ("v2",)
            await store.delete(ALICE, note.id)
            assert other.execute("SELECT COUNT(*) FROM notes").fetchone() == (0,)


def test_bad_pool_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="pool_min"):
        PostgresNotesStore("postgresql://h/db", pool_min=5, pool_max=2)
    with pytest.raises(ValueError, match="timeout"):
        PostgresNotesStore("postgresql://h/db", timeout=0)


@pytest.mark.parametrize(("parameters", "expected"), [("", "mcp-notes"), ("?application_name=replica-7", "replica-7")])
async def test_libpq_parameters_in_the_url_win_over_the_stores_defaults(
    postgres_url: str, parameters: str, expected: str
) -> None:
    async with opened(PostgresNotesStore(postgres_url + parameters)) as store:
        await store.list(ALICE)
        name = urlsplit(postgres_url).path.lstrip("/")
        names = pg.scalar(
            postgres_url, f"SELECT string_agg(application_name, ',') FROM pg_stat_activity WHERE datname = '{name}'"
        )
        assert expected in str(names).split(",")

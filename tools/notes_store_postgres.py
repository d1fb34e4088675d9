"""The PostgreSQL notes backend: one database shared by every replica, through an async connection pool."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import ClassVar, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from tools.notes_store import (
    DEFAULT_LIMITS,
    NOTE_COLUMNS,
    Migration,
    Note,
    NoteNotFound,
    NotePage,
    NoteRow,
    NotesLimits,
    NotesStorageError,
    Owner,
    SchemaTooNew,
    checked_create,
    checked_list,
    checked_note_ref,
    checked_update,
    limit_reached,
    new_note_id,
    newer_schema,
    note_from_row,
    now_us,
    page_arguments,
    page_from_rows,
    page_query,
)
from tools.pg_url import PasswordFilter, redact, safe_url

T = TypeVar("T")
logger = logging.getLogger(__name__)

# pg_advisory_xact_lock(namespace, key): the namespace keeps our keys apart from other users of the database.
_MIGRATION_LOCK = (0x6E6F7465, 0)  # "note"
_OWNER_LOCK_NAMESPACE = 0x6E6F776E  # "nown"
_POOL_NAME = "notes"
# A connection attempt is given up after this long and tried again on demand (a request or a probe), so a
# replica notices a database that came back within seconds, not after the pool's exponential back-off.
_RECONNECT_TIMEOUT_SECONDS = 10.0
_PAGE_QUERY = page_query("%s")
_LIBPQ_LOGGERS = ("psycopg", "psycopg.pool")

# Append only: migration N brings the recorded version N-1 to N, inside one transaction.
MIGRATIONS: tuple[Migration, ...] = (
    (
        # COLLATE "C": ids compare byte by byte, as in SQLite, so cursors order the same on both backends.
        """
        CREATE TABLE notes (
            id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
            issuer TEXT NOT NULL,
            subject TEXT NOT NULL,
            title TEXT NOT NULL,
            content TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        )
        """,
        "CREATE INDEX notes_by_owner ON notes (issuer, subject, created_at, id)",
    ),
)


def _retrieve(task: asyncio.Task[object]) -> None:
    """Mark a background task's failure as seen (it was logged or answered already)."""
    if not task.cancelled():
        task.exception()


async def _one_note(cursor: psycopg.AsyncCursor[TupleRow]) -> Note:
    """The note a statement returned; NoteNotFound when it matched no row of this owner."""
    row = await cursor.fetchone()
    if row is None:
        raise NoteNotFound
    return note_from_row(row)


def owner_lock_key(owner: Owner) -> int:
    """A 32-bit signed key for the owner's advisory lock; a collision only makes two owners take turns."""
    digest = hashlib.sha256(json.dumps(owner).encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


class PostgresNotesStore:
    """NotesStore on PostgreSQL. Every write is committed before it returns; per-owner limits hold across
    replicas because each create takes the owner's advisory lock in the database before counting."""

    migrations: ClassVar[tuple[Migration, ...]] = MIGRATIONS

    def __init__(
        self,
        url: str,
        limits: NotesLimits = DEFAULT_LIMITS,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        timeout: float = 5.0,
    ) -> None:
        if not 0 <= pool_min <= pool_max or pool_max < 1:
            raise ValueError(f"expected 0 <= pool_min <= pool_max and pool_max >= 1, got {pool_min} and {pool_max}")
        if timeout <= 0:
            raise ValueError(f"expected a positive timeout, got {timeout}")
        self._url = url
        self._label = safe_url(url)
        self._limits = limits
        self._pool_min, self._pool_max, self._timeout = pool_min, pool_max, timeout
        self._pool: AsyncConnectionPool | None = None
        self._filter = PasswordFilter(url)
        self._lifecycle = asyncio.Lock()
        self._migrating = asyncio.Lock()
        self._schema_ready = False
        self._abandoned: set[asyncio.Task[object]] = set()  # timed-out calls still cleaning up
        self._checking: asyncio.Task[None] | None = None

    @property
    def limits(self) -> NotesLimits:
        return self._limits

    async def open(self) -> None:
        """Start the pool without waiting for it, then migrate if the database answers. A database that does not
        answer is not an error here (the store serves once it does, /readyz says 503 meanwhile); a schema newer
        than this server's is (NotesStorageError)."""
        async with self._lifecycle:
            if self._pool is not None:
                return
            for name in _LIBPQ_LOGGERS:
                logging.getLogger(name).addFilter(self._filter)
            pool = AsyncConnectionPool(
                self._url,
                min_size=self._pool_min,
                max_size=self._pool_max,
                open=False,
                timeout=self._timeout,
                reconnect_timeout=_RECONNECT_TIMEOUT_SECONDS,
                name=_POOL_NAME,
                kwargs=self._connection_defaults(),
            )
            try:
                await pool.open(wait=False)
            except psycopg.Error as exc:
                raise NotesStorageError(f"cannot open the notes database {self._label}: {self._clean(exc)}") from None
            self._pool = pool
        try:
            await self._run(self._ping)
        except SchemaTooNew:
            await self.close()
            raise
        except NotesStorageError as exc:
            logger.warning("notes database not answering yet; serving, /readyz says 503 until it does: %s", exc)

    async def close(self) -> None:
        async with self._lifecycle:
            pool, self._pool = self._pool, None
            self._schema_ready = False
            if self._checking is not None:
                self._checking.cancel()
            if pool is not None:
                await pool.close(timeout=self._timeout)
            for name in _LIBPQ_LOGGERS:
                logging.getLogger(name).removeFilter(self._filter)

    def _connection_defaults(self) -> dict[str, object]:
        """Connection parameters the URL may override (it wins), and autocommit, which it may not."""
        try:
            given = conninfo_to_dict(self._url)
        except psycopg.Error:
            given = {}  # the pool's first connection attempt reports it
        defaults: dict[str, object] = {
            "connect_timeout": max(2, math.ceil(self._timeout)),  # libpq counts whole seconds, at least 2
            "application_name": "mcp-notes",
        }
        return {**{key: value for key, value in defaults.items() if key not in given}, "autocommit": True}

    def pool_stats(self) -> dict[str, int]:
        """Pool gauges for metrics: configured bounds, connections open, idle, and requests waiting for one."""
        pool = self._pool
        stats = pool.get_stats() if pool is not None else {}
        return {
            "pool_min": self._pool_min,
            "pool_max": self._pool_max,
            "pool_size": stats.get("pool_size", 0),
            "pool_available": stats.get("pool_available", 0),
            "requests_waiting": stats.get("requests_waiting", 0),
        }

    # --- the NotesStore interface ----------------------------------------------------------------------

    async def create(self, owner: Owner, title: str, content: str) -> Note:
        owner, title, content = checked_create(owner, title, content, self._limits)

        async def create(conn: psycopg.AsyncConnection) -> Note:
            now = now_us()
            row: NoteRow = (new_note_id(), title, content, now, now)
            # One round trip: BEGIN, the lock, the insert and COMMIT go out together as a pipeline. Replicas
            # creating for one owner take turns on the lock; the insert's count runs after it is granted (each
            # statement sees what was committed before it started), so the limit is exact.
            async with conn.pipeline():
                async with conn.transaction():
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(%s, %s)", (_OWNER_LOCK_NAMESPACE, owner_lock_key(owner))
                    )
                    cursor = await conn.execute(
                        "INSERT INTO notes (id, issuer, subject, title, content, created_at, updated_at)"
                        " SELECT %s, %s, %s, %s, %s, %s, %s"
                        " WHERE (SELECT COUNT(*) FROM notes WHERE issuer = %s AND subject = %s) < %s",
                        (row[0], *owner, *row[1:], *owner, self._limits.max_notes_per_owner),
                    )
                inserted = cursor.rowcount  # known once the pipeline synced, at COMMIT
            if inserted != 1:
                raise limit_reached(self._limits)
            return note_from_row(row)  # committed: the transaction block ended without error

        return await self._run(create)

    async def get(self, owner: Owner, note_id: str) -> Note:
        owner = checked_note_ref(owner, note_id)

        async def get(conn: psycopg.AsyncConnection) -> Note:
            cursor = await conn.execute(
                f"SELECT {NOTE_COLUMNS} FROM notes WHERE id = %s AND issuer = %s AND subject = %s",  # noqa: S608
                (note_id, *owner),
            )
            return await _one_note(cursor)

        return await self._run(get)

    async def list(self, owner: Owner, *, limit: int = 20, cursor: str | None = None) -> NotePage:
        owner, limit, after = checked_list(owner, limit, cursor, self._limits)

        async def page(conn: psycopg.AsyncConnection) -> NotePage:
            rows = await (await conn.execute(_PAGE_QUERY, page_arguments(owner, limit, after))).fetchall()
            return page_from_rows(owner, rows, limit)

        return await self._run(page)

    async def update(self, owner: Owner, note_id: str, *, title: str | None = None, content: str | None = None) -> Note:
        owner, title, content = checked_update(owner, note_id, title, content, self._limits)

        async def update(conn: psycopg.AsyncConnection) -> Note:
            # One statement: strictly later than the last update, even if this replica's clock is behind.
            cursor = await conn.execute(
                "UPDATE notes SET title = COALESCE(%s::text, title), content = COALESCE(%s::text, content),"  # noqa: S608
                " updated_at = GREATEST(%s, updated_at + 1)"
                f" WHERE id = %s AND issuer = %s AND subject = %s RETURNING {NOTE_COLUMNS}",
                (title, content, now_us(), note_id, *owner),
            )
            return await _one_note(cursor)

        return await self._run(update)

    async def delete(self, owner: Owner, note_id: str) -> None:
        owner = checked_note_ref(owner, note_id)

        async def delete(conn: psycopg.AsyncConnection) -> None:
            cursor = await conn.execute(
                "DELETE FROM notes WHERE id = %s AND issuer = %s AND subject = %s", (note_id, *owner)
            )
            if cursor.rowcount == 0:
                raise NoteNotFound

        await self._run(delete)

    async def ping(self) -> bool:
        """Whether the database answers a query (and the schema is in place)."""
        try:
            return await self._run(self._ping)
        except NotesStorageError:
            return False

    # --- plumbing --------------------------------------------------------------------------------------

    async def _ping(self, conn: psycopg.AsyncConnection) -> bool:
        cursor = await conn.execute("SELECT 1")
        return await cursor.fetchone() == (1,)

    async def _run(self, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` on a pooled connection; past the timeout the caller gets NotesStorageError at once.

        The work runs as its own task: psycopg's clean-up of a cancelled query (a cancel request, then closing the
        connection) can itself wait on a hung network for several seconds, and the caller must not."""
        pool = self._pool
        if pool is None:
            raise NotesStorageError("the notes store is not open")
        task = asyncio.create_task(self._session(pool, work))
        try:
            done, _ = await asyncio.wait((task,), timeout=self._timeout)
        except asyncio.CancelledError:
            self._abandon(task)
            raise
        if not done:
            self._abandon(task)
            raise NotesStorageError(f"the notes database {self._label} did not answer within {self._timeout:g} s")
        return task.result()

    async def _session(self, pool: AsyncConnectionPool, work: Callable[[psycopg.AsyncConnection], Awaitable[T]]) -> T:
        try:
            if not self._schema_ready:
                await self._ensure_schema(pool)
            async with pool.connection() as conn:
                return await work(conn)
        except psycopg.OperationalError as exc:
            self._check_idle_connections(pool)
            raise NotesStorageError(f"the notes database {self._label} failed: {self._clean(exc)}") from None
        except psycopg.Error as exc:
            raise NotesStorageError(f"the notes database {self._label} failed: {self._clean(exc)}") from None

    def _check_idle_connections(self, pool: AsyncConnectionPool) -> None:
        """After a connection failed, test the idle ones in the background: after a database restart every idle
        connection is dead, and each would otherwise fail one call before the pool notices."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.create_task(pool.check())
            self._checking.add_done_callback(_retrieve)

    def _abandon(self, task: asyncio.Task[T]) -> None:
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[T]) -> None:
        self._abandoned.discard(task)
        _retrieve(task)  # its caller already had a timeout error

    async def _ensure_schema(self, pool: AsyncConnectionPool) -> None:
        async with self._migrating:
            if self._schema_ready:
                return
            async with pool.connection() as conn:
                await self._migrate(conn)
            self._schema_ready = True

    async def _migrate(self, conn: psycopg.AsyncConnection) -> None:
        latest = len(self.migrations)
        async with conn.transaction():
            # Replicas starting together on an empty database take turns here; each reads the version only
            # once it holds the lock, so the migrations run once. The lock ends with the transaction.
            await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS notes_schema ("
                " singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton), version INTEGER NOT NULL)"
            )
            row = await (await conn.execute("SELECT version FROM notes_schema")).fetchone()
            version = 0 if row is None else row[0]
            if version > latest:
                raise newer_schema(self._label, version, latest)
            if version == latest:
                return
            for statements in self.migrations[version:]:
                for statement in statements:
                    await conn.execute(statement)
            await conn.execute(
                "INSERT INTO notes_schema (version) VALUES (%s)"
                " ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version",
                (latest,),
            )
        logger.info("notes database %s migrated from schema version %d to %d", self._label, version, latest)

    def _clean(self, exc: BaseException) -> str:
        return redact(str(exc), self._url)

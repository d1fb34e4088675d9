"""The SQLite notes backend: one database file (or memory), one connection on the store's worker thread."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, TypeVar

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

T = TypeVar("T")

_BUSY_TIMEOUT_SECONDS = 5.0
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_FIRST_RETRY_SECONDS = 0.005
_LAST_RETRY_SECONDS = 0.1
_MEMORY = ":memory:"
_PAGE_QUERY = page_query("?")

# Append only: migration N brings user_version N-1 to N, inside one transaction.
MIGRATIONS: tuple[Migration, ...] = (
    (
        """
        CREATE TABLE notes (
            id TEXT PRIMARY KEY NOT NULL,
            issuer TEXT NOT NULL,
            subject TEXT NOT NULL,
            title TEXT NOT NULL,
            content TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )
        """,
        "CREATE INDEX notes_by_owner ON notes (issuer, subject, created_at, id)",
    ),
)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so a read-then-write (count, then insert) cannot interleave.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class _SQLiteNotes:
    """The synchronous half: one connection, used only on the store's worker thread."""

    def __init__(self, conn: sqlite3.Connection, limits: NotesLimits) -> None:
        self.conn = conn
        self.limits = limits

    def _select(self, owner: Owner, note_id: str) -> NoteRow | None:
        # The one lookup for get and update: a foreign id and a missing id take exactly this path.
        return self.conn.execute(
            f"SELECT {NOTE_COLUMNS} FROM notes WHERE id = ? AND issuer = ? AND subject = ?",  # noqa: S608 - constant
            (note_id, *owner),
        ).fetchone()

    def create(self, owner: Owner, title: str, content: str) -> Note:
        with _transaction(self.conn):
            (count,) = self.conn.execute(
                "SELECT COUNT(*) FROM notes WHERE issuer = ? AND subject = ?", owner
            ).fetchone()
            if count >= self.limits.max_notes_per_owner:
                raise limit_reached(self.limits)
            now = now_us()
            row = (new_note_id(), title, content, now, now)
            self.conn.execute(
                "INSERT INTO notes (id, issuer, subject, title, content, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row[0], *owner, *row[1:]),
            )
        return note_from_row(row)

    def get(self, owner: Owner, note_id: str) -> Note:
        row = self._select(owner, note_id)
        if row is None:
            raise NoteNotFound
        return note_from_row(row)

    def page(self, owner: Owner, limit: int, after: tuple[int, str]) -> NotePage:
        rows = self.conn.execute(_PAGE_QUERY, page_arguments(owner, limit, after)).fetchall()
        return page_from_rows(owner, rows, limit)

    def update(self, owner: Owner, note_id: str, title: str | None, content: str | None) -> Note:
        with _transaction(self.conn):
            row = self._select(owner, note_id)
            if row is None:
                raise NoteNotFound
            _, old_title, old_content, created_us, updated_us = row
            # Strictly later than the last update, even if the wall clock stepped back.
            new = (
                note_id,
                old_title if title is None else title,
                old_content if content is None else content,
                created_us,
                max(now_us(), updated_us + 1),
            )
            self.conn.execute(
                "UPDATE notes SET title = ?, content = ?, updated_at = ? WHERE id = ? AND issuer = ? AND subject = ?",
                (new[1], new[2], new[4], note_id, *owner),
            )
        return note_from_row(new)

    def delete(self, owner: Owner, note_id: str) -> None:
        with _transaction(self.conn):
            deleted = self.conn.execute(
                "DELETE FROM notes WHERE id = ? AND issuer = ? AND subject = ?", (note_id, *owner)
            ).rowcount
            if deleted == 0:
                raise NoteNotFound

    def ping(self) -> bool:
        return self.conn.execute("SELECT 1").fetchone() == (1,)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _BUSY_CODES  # the low byte is the primary code


def _close_if_connected(connecting: Future[_SQLiteNotes]) -> None:
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().conn.close()


class SQLiteNotesStore:
    """NotesStore on one SQLite database; every sqlite call runs on the store's own worker thread."""

    migrations: ClassVar[tuple[Migration, ...]] = MIGRATIONS

    def __init__(self, path: str | os.PathLike[str], limits: NotesLimits = DEFAULT_LIMITS) -> None:
        self._path = os.fspath(path)
        if not self._path:
            raise ValueError('the notes database path must not be empty (use ":memory:" for a throwaway one)')
        self._limits = limits
        self._executor: ThreadPoolExecutor | None = None
        self._notes: _SQLiteNotes | None = None
        self._lifecycle = asyncio.Lock()

    @property
    def limits(self) -> NotesLimits:
        return self._limits

    async def open(self) -> None:
        """Connect, set the PRAGMAs and migrate the schema; does nothing if already open."""
        async with self._lifecycle:
            if self._executor is not None:
                return
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notes-sqlite")
            connecting = executor.submit(self._connect)
            try:
                notes = await asyncio.wrap_future(connecting)
            except BaseException:
                # Queued behind _connect on the same thread: even a cancelled open() leaves no connection behind.
                executor.submit(_close_if_connected, connecting)
                executor.shutdown(wait=False)
                raise
            self._executor, self._notes = executor, notes

    async def close(self) -> None:
        """Let the operations already queued finish, then close the connection; safe to call twice."""
        async with self._lifecycle:
            executor, notes = self._executor, self._notes
            self._executor = self._notes = None
            if executor is None or notes is None:
                return
            try:
                await asyncio.shield(asyncio.wrap_future(executor.submit(notes.conn.close)))
            finally:
                executor.shutdown(wait=False)

    async def create(self, owner: Owner, title: str, content: str) -> Note:
        owner, title, content = checked_create(owner, title, content, self._limits)
        return await self._call(_SQLiteNotes.create, owner, title, content)

    async def get(self, owner: Owner, note_id: str) -> Note:
        owner = checked_note_ref(owner, note_id)
        return await self._call(_SQLiteNotes.get, owner, note_id)

    async def list(self, owner: Owner, *, limit: int = 20, cursor: str | None = None) -> NotePage:
        owner, limit, after = checked_list(owner, limit, cursor, self._limits)
        return await self._call(_SQLiteNotes.page, owner, limit, after)

    async def update(self, owner: Owner, note_id: str, *, title: str | None = None, content: str | None = None) -> Note:
        owner, title, content = checked_update(owner, note_id, title, content, self._limits)
        return await self._call(_SQLiteNotes.update, owner, note_id, title, content)

    async def delete(self, owner: Owner, note_id: str) -> None:
        owner = checked_note_ref(owner, note_id)
        await self._call(_SQLiteNotes.delete, owner, note_id)

    async def ping(self) -> bool:
        """Whether the database answers a query; queued behind writes already in flight."""
        try:
            return await self._call(_SQLiteNotes.ping)
        except NotesStorageError:
            return False

    async def _call(self, operation: Callable[..., T], *args: object) -> T:
        executor, notes = self._executor, self._notes
        if executor is None or notes is None:
            raise NotesStorageError("the notes store is not open")
        try:
            # No await between the check and the submit, so close() cannot slip in between.
            return await asyncio.get_running_loop().run_in_executor(executor, operation, notes, *args)
        except sqlite3.Error as exc:
            raise NotesStorageError(f"the notes database failed: {exc}") from exc

    # --- on the worker thread ------------------------------------------------------------------------

    def _connect(self) -> _SQLiteNotes:
        try:
            if self._path != _MEMORY:
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise NotesStorageError(f"cannot open the notes database {self._path}: {exc}") from exc
        try:
            self._set_up(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise NotesStorageError(f"cannot use the notes database {self._path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return _SQLiteNotes(conn, self._limits)

    def _set_up(self, conn: sqlite3.Connection) -> None:
        # Several stores opening one fresh file at once (replicas starting together, or a cancelled open()
        # still connecting) can make SQLite refuse the switch to WAL with SQLITE_BUSY at once, without
        # waiting on the busy timeout, to avoid a deadlock. Both steps are idempotent, so try again. This runs on
        # the store's worker thread (see open()), so the pauses never block the event loop.
        deadline = time.monotonic() + _BUSY_TIMEOUT_SECONDS
        pause = _FIRST_RETRY_SECONDS
        while True:
            try:
                self._configure(conn)
                self._migrate(conn)
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, _LAST_RETRY_SECONDS)

    def _configure(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_SECONDS * 1000)}")
        (journal_mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if self._path != _MEMORY and journal_mode.lower() != "wal":
            raise NotesStorageError(f"cannot put the notes database {self._path} in WAL mode (got {journal_mode})")
        conn.execute("PRAGMA synchronous = FULL")  # an acknowledged write survives power loss
        conn.execute("PRAGMA foreign_keys = ON")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        latest = len(self.migrations)
        if self._schema_version(conn, latest) == latest:
            return
        with _transaction(conn):
            # Read again under the write lock: another process may have migrated meanwhile.
            version = self._schema_version(conn, latest)
            for number, statements in enumerate(self.migrations[version:], start=version + 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number:d}")

    def _schema_version(self, conn: sqlite3.Connection, latest: int) -> int:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > latest:
            raise newer_schema(self._path, version, latest)
        return version

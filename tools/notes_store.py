"""Per-user notes: the NotesStore interface the tools depend on, and its SQLite backend."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar, runtime_checkable

Owner = tuple[str, str]  # (issuer, subject): subjects are unique only per issuer
Migration = tuple[str, ...]  # statements that bring the schema from version N-1 to N

T = TypeVar("T")

NOT_FOUND_MESSAGE = "note not found"
INVALID_CURSOR_MESSAGE = "invalid cursor"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_CURSOR_CHARS = 512
_BUSY_TIMEOUT_SECONDS = 5.0
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_FIRST_RETRY_SECONDS = 0.005
_LAST_RETRY_SECONDS = 0.1
_MEMORY = ":memory:"
_COLUMNS = "id, title, content, created_at, updated_at"


@dataclass(frozen=True, slots=True)
class Note:
    id: str
    title: str
    content: str
    created_at: datetime  # UTC, aware
    updated_at: datetime  # UTC, aware


@dataclass(frozen=True, slots=True)
class NotePage:
    notes: tuple[Note, ...]
    next_cursor: str | None  # None on the last page


@dataclass(frozen=True, slots=True)
class NotesLimits:
    max_title_chars: int = 200
    max_content_chars: int = 100_000
    max_notes_per_owner: int = 1000
    max_page_size: int = 100

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{limit.name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = NotesLimits()


class NotesError(Exception):
    """Something the caller asked for cannot be done; str(exc) is a message a user understands."""


class NoteNotFound(NotesError):
    """No such note for this owner: said identically whether the id is unknown or someone else's."""

    def __init__(self, message: str = NOT_FOUND_MESSAGE) -> None:
        super().__init__(message)


class NoteLimitExceeded(NotesError):
    """Too many notes, or a title or content over its length limit; the message names the limit."""


class InvalidNoteInput(NotesError):
    """An empty title, a bad cursor, a page size out of range, an update that changes nothing..."""


class NotesStorageError(Exception):
    """The storage itself cannot serve (not open, schema too new, disk or lock failure): for operators, not users."""


@runtime_checkable
class NotesStore(Protocol):
    """What the notes tools depend on; every backend (SQLite now, PostgreSQL later) fits it."""

    async def create(self, owner: Owner, title: str, content: str) -> Note: ...

    async def get(self, owner: Owner, note_id: str) -> Note: ...

    async def list(self, owner: Owner, *, limit: int = 20, cursor: str | None = None) -> NotePage: ...

    async def update(
        self, owner: Owner, note_id: str, *, title: str | None = None, content: str | None = None
    ) -> Note: ...

    async def delete(self, owner: Owner, note_id: str) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


# --- validation: pure, shared by every backend -----------------------------------------------------


def _check_storable(value: str, field: str) -> None:
    # NUL cannot be stored in PostgreSQL text, and unpaired surrogates are not encodable as UTF-8.
    if "\x00" in value:
        raise InvalidNoteInput(f"{field} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNoteInput(f"{field} is not valid Unicode text (it contains unpaired surrogates)") from None


def check_owner(owner: object) -> Owner:
    if not (isinstance(owner, tuple) and len(owner) == 2 and all(isinstance(part, str) and part for part in owner)):
        raise InvalidNoteInput("this caller's identity (issuer and subject) cannot own notes")
    issuer, subject = owner
    _check_storable(issuer, "the caller's issuer")
    _check_storable(subject, "the caller's subject")
    return issuer, subject


def check_title(title: object, limits: NotesLimits) -> str:
    """The title as stored: surrounding whitespace removed, never empty."""
    if not isinstance(title, str):
        raise InvalidNoteInput("title must be text")
    title = title.strip()
    if not title:
        raise InvalidNoteInput("title must not be empty")
    if len(title) > limits.max_title_chars:
        raise NoteLimitExceeded(f"title is too long: at most {limits.max_title_chars} characters")
    _check_storable(title, "title")
    return title


def check_content(content: object, limits: NotesLimits) -> str:
    """The content as stored: exactly as given; empty is allowed."""
    if not isinstance(content, str):
        raise InvalidNoteInput("content must be text")
    if len(content) > limits.max_content_chars:
        raise NoteLimitExceeded(f"content is too long: at most {limits.max_content_chars} characters")
    _check_storable(content, "content")
    return content


def check_page_size(limit: object, limits: NotesLimits) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= limits.max_page_size:
        raise InvalidNoteInput(f"limit must be a whole number between 1 and {limits.max_page_size}")
    return limit


def is_well_formed_id(note_id: object) -> bool:
    """Whether note_id could be an id this store issued; anything else is simply not found."""
    return isinstance(note_id, str) and _ID_PATTERN.fullmatch(note_id) is not None


def new_note_id() -> str:
    return secrets.token_urlsafe(16)  # 128 random bits


# --- cursors: opaque to callers, bound to the owner they were issued to --------------------------


def _owner_tag(owner: Owner) -> str:
    return hashlib.sha256(json.dumps(owner).encode()).hexdigest()[:16]


def encode_cursor(owner: Owner, created_us: int, note_id: str) -> str:
    payload = json.dumps({"o": _owner_tag(owner), "t": created_us, "i": note_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(owner: Owner, cursor: object) -> tuple[int, str]:
    """The (created_at in microseconds, id) position after which the next page starts."""
    if not isinstance(cursor, str) or not 0 < len(cursor) <= _MAX_CURSOR_CHARS:
        raise InvalidNoteInput(INVALID_CURSOR_MESSAGE)
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        data = json.loads(raw)
    except (ValueError, RecursionError):  # binascii.Error, UnicodeError and JSONDecodeError are ValueErrors
        raise InvalidNoteInput(INVALID_CURSOR_MESSAGE) from None
    if not isinstance(data, dict) or data.keys() != {"o", "t", "i"}:
        raise InvalidNoteInput(INVALID_CURSOR_MESSAGE)
    created_us, note_id = data["t"], data["i"]
    if (
        data["o"] != _owner_tag(owner)
        or isinstance(created_us, bool)
        or not isinstance(created_us, int)
        or not 0 <= created_us < 2**63
        or not is_well_formed_id(note_id)
    ):
        raise InvalidNoteInput(INVALID_CURSOR_MESSAGE)
    return created_us, note_id


# --- SQLite ------------------------------------------------------------------------------------------

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


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _moment(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _now_us() -> int:
    return _micros(datetime.now(UTC))


def _note(row: tuple[str, str, str, int, int]) -> Note:
    note_id, title, content, created_us, updated_us = row
    return Note(note_id, title, content, _moment(created_us), _moment(updated_us))


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

    def _select(self, owner: Owner, note_id: str) -> tuple[str, str, str, int, int] | None:
        # The one lookup for get and update: a foreign id and a missing id take exactly this path.
        return self.conn.execute(
            f"SELECT {_COLUMNS} FROM notes WHERE id = ? AND issuer = ? AND subject = ?",  # noqa: S608 - constant
            (note_id, *owner),
        ).fetchone()

    def create(self, owner: Owner, title: str, content: str) -> Note:
        with _transaction(self.conn):
            (count,) = self.conn.execute(
                "SELECT COUNT(*) FROM notes WHERE issuer = ? AND subject = ?", owner
            ).fetchone()
            if count >= self.limits.max_notes_per_owner:
                raise NoteLimitExceeded(
                    f"note limit reached: at most {self.limits.max_notes_per_owner} notes per user; delete some first"
                )
            now = _now_us()
            row = (new_note_id(), title, content, now, now)
            self.conn.execute(
                "INSERT INTO notes (id, issuer, subject, title, content, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row[0], *owner, *row[1:]),
            )
        return _note(row)

    def get(self, owner: Owner, note_id: str) -> Note:
        row = self._select(owner, note_id)
        if row is None:
            raise NoteNotFound
        return _note(row)

    def page(self, owner: Owner, limit: int, after: tuple[int, str]) -> NotePage:
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM notes"  # noqa: S608 - constant
            " WHERE issuer = ? AND subject = ? AND (created_at, id) > (?, ?)"
            " ORDER BY created_at, id LIMIT ?",
            (*owner, *after, limit + 1),
        ).fetchall()
        notes = tuple(_note(row) for row in rows[:limit])
        if len(rows) <= limit:
            return NotePage(notes, None)
        last = rows[limit - 1]
        return NotePage(notes, encode_cursor(owner, last[3], last[0]))

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
                max(_now_us(), updated_us + 1),
            )
            self.conn.execute(
                "UPDATE notes SET title = ?, content = ?, updated_at = ? WHERE id = ? AND issuer = ? AND subject = ?",
                (new[1], new[2], new[4], note_id, *owner),
            )
        return _note(new)

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
        owner = check_owner(owner)
        title, content = check_title(title, self._limits), check_content(content, self._limits)
        return await self._call(_SQLiteNotes.create, owner, title, content)

    async def get(self, owner: Owner, note_id: str) -> Note:
        owner = check_owner(owner)
        if not is_well_formed_id(note_id):
            raise NoteNotFound
        return await self._call(_SQLiteNotes.get, owner, note_id)

    async def list(self, owner: Owner, *, limit: int = 20, cursor: str | None = None) -> NotePage:
        owner = check_owner(owner)
        limit = check_page_size(limit, self._limits)
        after = (-1, "") if cursor is None else decode_cursor(owner, cursor)
        return await self._call(_SQLiteNotes.page, owner, limit, after)

    async def update(self, owner: Owner, note_id: str, *, title: str | None = None, content: str | None = None) -> Note:
        owner = check_owner(owner)
        if title is None and content is None:
            raise InvalidNoteInput("nothing to update: give a new title, new content, or both")
        title = None if title is None else check_title(title, self._limits)
        content = None if content is None else check_content(content, self._limits)
        if not is_well_formed_id(note_id):
            raise NoteNotFound
        return await self._call(_SQLiteNotes.update, owner, note_id, title, content)

    async def delete(self, owner: Owner, note_id: str) -> None:
        owner = check_owner(owner)
        if not is_well_formed_id(note_id):
            raise NoteNotFound
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
            raise NotesStorageError(
                f"the notes database {self._path} has schema version {version}, newer than this server "
                f"understands ({latest}); upgrade the server or point it at another database"
            )
        return version

"""Per-user notes: the NotesStore interface the tools depend on, and what every backend shares (pure)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

Owner = tuple[str, str]  # (issuer, subject): subjects are unique only per issuer
Migration = tuple[str, ...]  # statements that bring the schema from version N-1 to N
NoteRow = tuple[str, str, str, int, int]  # id, title, content, created_at and updated_at in microseconds

NOT_FOUND_MESSAGE = "note not found"
INVALID_CURSOR_MESSAGE = "invalid cursor"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_CURSOR_CHARS = 512
NOTE_COLUMNS = "id, title, content, created_at, updated_at"  # the order of NoteRow
# One owner's page after a (created_at, id) position, one row more than asked to learn whether more follow.
# `{p}` is the driver's placeholder; the arguments are page_arguments(...).
_PAGE_QUERY = (
    f"SELECT {NOTE_COLUMNS} FROM notes"  # noqa: S608 - constant
    " WHERE issuer = {p} AND subject = {p} AND (created_at, id) > ({p}, {p})"
    " ORDER BY created_at, id LIMIT {p}"
)


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


class SchemaTooNew(NotesStorageError):
    """The database was migrated by a newer server: refused at start-up rather than misread."""


@runtime_checkable
class NotesStore(Protocol):
    """What the notes tools depend on; every backend (SQLite, PostgreSQL) fits it."""

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


def limit_reached(limits: NotesLimits) -> NoteLimitExceeded:
    return NoteLimitExceeded(
        f"note limit reached: at most {limits.max_notes_per_owner} notes per user; delete some first"
    )


def newer_schema(database: str, version: int, latest: int) -> SchemaTooNew:
    return SchemaTooNew(
        f"the notes database {database} has schema version {version}, newer than this server "
        f"understands ({latest}); upgrade the server or point it at another database"
    )


# --- rows: timestamps are stored as integer microseconds since the epoch, UTC, on every backend -------


def micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def moment(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def now_us() -> int:
    return micros(datetime.now(UTC))


def note_from_row(row: NoteRow) -> Note:
    note_id, title, content, created_us, updated_us = row
    return Note(note_id, title, content, moment(created_us), moment(updated_us))


def page_query(placeholder: str) -> str:
    """The SQL of one page of notes, with the driver's placeholder (`?` or `%s`)."""
    return _PAGE_QUERY.replace("{p}", placeholder)


def page_arguments(owner: Owner, limit: int, after: tuple[int, str]) -> tuple[str, str, int, str, int]:
    """The arguments of page_query: owner, position, and one row more than the page holds."""
    return (*owner, *after, limit + 1)


def page_from_rows(owner: Owner, rows: list[NoteRow], limit: int) -> NotePage:
    """Rows fetched with LIMIT limit + 1: the extra row only says whether another page follows."""
    notes = tuple(note_from_row(row) for row in rows[:limit])
    if len(rows) <= limit:
        return NotePage(notes, None)
    last = rows[limit - 1]
    return NotePage(notes, encode_cursor(owner, last[3], last[0]))


def checked_create(owner: object, title: object, content: object, limits: NotesLimits) -> tuple[Owner, str, str]:
    """The owner, title and content of a new note as stored."""
    return check_owner(owner), check_title(title, limits), check_content(content, limits)


def checked_note_ref(owner: object, note_id: object) -> Owner:
    """The owner of a get or delete; raises NoteNotFound for an id no store issued."""
    checked_owner = check_owner(owner)
    if not is_well_formed_id(note_id):
        raise NoteNotFound
    return checked_owner


def checked_list(
    owner: object, limit: object, cursor: object, limits: NotesLimits
) -> tuple[Owner, int, tuple[int, str]]:
    """The owner, page size and position (created_at, id) after which a page starts."""
    checked_owner = check_owner(owner)
    page_size = check_page_size(limit, limits)
    after = (-1, "") if cursor is None else decode_cursor(checked_owner, cursor)
    return checked_owner, page_size, after


def checked_update(
    owner: object, note_id: object, title: object, content: object, limits: NotesLimits
) -> tuple[Owner, str | None, str | None]:
    """The owner, title and content of an update as stored; raises NoteNotFound for an id no store issued."""
    checked_owner = check_owner(owner)
    if title is None and content is None:
        raise InvalidNoteInput("nothing to update: give a new title, new content, or both")
    new_title = None if title is None else check_title(title, limits)
    new_content = None if content is None else check_content(content, limits)
    if not is_well_formed_id(note_id):
        raise NoteNotFound
    return checked_owner, new_title, new_content

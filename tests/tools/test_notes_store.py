"""The notes store contract, on every backend (SQLite files and a real PostgreSQL database) with the same
assertions: ownership, limits, paging, durability, concurrency; then what is SQLite's own (files, PRAGMAs, busy)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests import pg
from tests.support import opened
from tools.notes_store import (
    DEFAULT_LIMITS,
    INVALID_CURSOR_MESSAGE,
    NOT_FOUND_MESSAGE,
    InvalidNoteInput,
    Note,
    NoteLimitExceeded,
    NoteNotFound,
    NotesError,
    NotesLimits,
    NotesStorageError,
    NotesStore,
    Owner,
    new_note_id,
)
from tools.notes_store_postgres import PostgresNotesStore
from tools.notes_store_sqlite import MIGRATIONS, SQLiteNotesStore

ISSUER = "https://idp.example.com/"
OTHER_ISSUER = "https://login.other.example/"
ALICE: Owner = (ISSUER, "alice")
BOB: Owner = (ISSUER, "bob")
ALICE_ELSEWHERE: Owner = (OTHER_ISSUER, "alice")  # same subject, another issuer: another person

SMALL = NotesLimits(max_title_chars=10, max_content_chars=50, max_notes_per_owner=5, max_page_size=7)


@dataclass(frozen=True)
class Backend:
    """One database on one backend: stores made on it share it, as replicas would."""

    name: str
    make: Callable[[NotesLimits], NotesStore]  # a new, unopened store on the database
    make_scratch: Callable[[NotesLimits], NotesStore]  # for input checks: SQLite in memory, no fsync
    scalar: Callable[[str], Any]  # one value of a query run on an independent connection

    async def open(self, limits: NotesLimits = DEFAULT_LIMITS, *, scratch: bool = False) -> Any:
        store: Any = (self.make_scratch if scratch else self.make)(limits)
        await store.open()
        return store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "notes.db"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, db_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend(
            "sqlite",
            lambda limits: SQLiteNotesStore(str(db_path), limits),
            lambda limits: SQLiteNotesStore(":memory:", limits),
            lambda query: scalar(db_path, query),
        )
    url = request.getfixturevalue("postgres_url")
    return Backend(
        "postgres",
        lambda limits: PostgresNotesStore(url, limits),
        lambda limits: PostgresNotesStore(url, limits),
        lambda query: pg.scalar(url, query),
    )


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Any]:
    notes = await backend.open()
    yield notes
    await notes.close()


@pytest.fixture
async def memory(backend: Backend) -> AsyncIterator[Any]:
    """For the many input checks, which never reach the file layer: no fsync, so the suite stays fast."""
    notes = await backend.open(scratch=True)
    yield notes
    await notes.close()


@pytest.fixture
async def small(backend: Backend) -> AsyncIterator[Any]:
    notes = await backend.open(SMALL, scratch=True)
    yield notes
    await notes.close()


@pytest.fixture
async def sqlite_store(db_path: Path) -> AsyncIterator[SQLiteNotesStore]:
    notes = SQLiteNotesStore(str(db_path))
    await notes.open()
    yield notes
    await notes.close()


def raw(path: Path) -> sqlite3.Connection:
    """A second, independent connection to the same file, as another process would have."""
    return sqlite3.connect(path, timeout=5, isolation_level=None)


def scalar(path: Path, sql: str) -> Any:
    conn = raw(path)
    try:
        row = conn.execute(sql).fetchone()
        return None if row is None else row[0]
    finally:
        conn.close()


async def on_store_connection(store: NotesStore, sql: str) -> Any:
    """Run one query on the store's own connection (per-connection PRAGMAs are invisible elsewhere)."""
    return await store._call(lambda notes: notes.conn.execute(sql).fetchone()[0])


async def walk(store: NotesStore, owner: Owner, limit: int, max_pages: int = 50) -> list[list[Note]]:
    pages: list[list[Note]] = []
    cursor: str | None = None
    for _ in range(max_pages):
        page = await store.list(owner, limit=limit, cursor=cursor)
        pages.append(list(page.notes))
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor
    raise AssertionError("pagination did not end")


def reencode(cursor: str, change: Callable[[Any], Any]) -> str:
    data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    return base64.urlsafe_b64encode(json.dumps(change(data)).encode()).decode().rstrip("=")


# --- basics --------------------------------------------------------------------------------------


async def test_store_fits_the_interface_tools_depend_on(store: NotesStore) -> None:
    assert isinstance(store, NotesStore)
    assert await store.ping() is True
    assert store.limits == NotesLimits()


async def test_create_then_get(store: NotesStore) -> None:
    note = await store.create(ALICE, "Groceries", "milk\neggs")
    assert note.title == "Groceries" and note.content == "milk\neggs"
    assert note.created_at == note.updated_at
    assert note.created_at.tzinfo is UTC
    assert await store.get(ALICE, note.id) == note


async def test_ids_are_opaque_and_unguessable(store: NotesStore) -> None:
    notes = await asyncio.gather(*(store.create(ALICE, f"n{i}", "") for i in range(40)))
    ids = [note.id for note in notes]
    assert len(set(ids)) == len(ids)
    for note_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", note_id)  # 22 base64 characters: 128 random bits
    assert len({note_id[:4] for note_id in ids}) > 30  # no shared prefix or counter


async def test_title_is_trimmed_and_content_kept_verbatim(store: NotesStore) -> None:
    note = await store.create(ALICE, "  Plan \n", "  indented\n\n")
    assert note.title == "Plan"
    assert (await store.get(ALICE, note.id)).content == "  indented\n\n"


async def test_empty_content_is_allowed(store: NotesStore) -> None:
    note = await store.create(ALICE, "empty", "")
    assert (await store.get(ALICE, note.id)).content == ""


@pytest.mark.parametrize(
    "text",
    ["😀 emoji", "עברית RTL", "e\u0301 combining", "tab\tnew\nline\r", "'; DROP TABLE notes; --", '"quoted" %s ?'],
)
async def test_unicode_and_sql_like_text_is_stored_faithfully(memory: NotesStore, text: str) -> None:
    note = await memory.create(ALICE, text, text * 3)
    stored = await memory.get(ALICE, note.id)
    assert stored.title == text.strip() and stored.content == text * 3


async def test_update_title_only_keeps_content_and_bumps_updated_at(store: NotesStore) -> None:
    note = await store.create(ALICE, "old", "body")
    updated = await store.update(ALICE, note.id, title="new")
    assert (updated.id, updated.title, updated.content) == (note.id, "new", "body")
    assert updated.created_at == note.created_at
    assert updated.updated_at > note.updated_at
    assert await store.get(ALICE, note.id) == updated


async def test_updated_at_moves_forward_even_if_the_clock_steps_back(store: NotesStore, backend: Backend) -> None:
    note = await store.create(ALICE, "t", "")
    # as if the last update happened an hour ahead of the clock we have now (another replica's clock)
    backend.scalar("UPDATE notes SET updated_at = updated_at + 3600000000")
    ahead = await store.get(ALICE, note.id)
    assert ahead.updated_at - note.updated_at == timedelta(hours=1)
    updated = await store.update(ALICE, note.id, content="later")
    assert updated.updated_at == ahead.updated_at + timedelta(microseconds=1)
    assert updated.created_at == note.created_at


async def test_update_content_only_keeps_title(store: NotesStore) -> None:
    note = await store.create(ALICE, "title", "v1")
    updated = await store.update(ALICE, note.id, content="")
    assert (updated.title, updated.content) == ("title", "")
    assert await store.get(ALICE, note.id) == updated


async def test_update_both(store: NotesStore) -> None:
    note = await store.create(ALICE, "a", "b")
    updated = await store.update(ALICE, note.id, title="c", content="d")
    assert (await store.get(ALICE, note.id)) == updated
    assert (updated.title, updated.content, updated.created_at) == ("c", "d", note.created_at)


async def test_update_with_nothing_to_change_is_rejected(store: NotesStore) -> None:
    note = await store.create(ALICE, "a", "b")
    with pytest.raises(InvalidNoteInput, match=r"^nothing to update"):
        await store.update(ALICE, note.id)
    assert await store.get(ALICE, note.id) == note


async def test_delete(store: NotesStore) -> None:
    keep = await store.create(ALICE, "keep", "")
    gone = await store.create(ALICE, "gone", "")
    assert await store.delete(ALICE, gone.id) is None
    with pytest.raises(NoteNotFound):
        await store.get(ALICE, gone.id)
    with pytest.raises(NoteNotFound):
        await store.delete(ALICE, gone.id)
    assert [note.id for note in (await store.list(ALICE)).notes] == [keep.id]


# --- ownership -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stranger", [BOB, ALICE_ELSEWHERE], ids=["same-issuer", "same-subject"])
async def test_another_owner_cannot_see_or_touch_a_note(store: NotesStore, stranger: Owner) -> None:
    note = await store.create(ALICE, "secret", "diary")
    with pytest.raises(NoteNotFound):
        await store.get(stranger, note.id)
    with pytest.raises(NoteNotFound):
        await store.update(stranger, note.id, title="pwned", content="pwned")
    with pytest.raises(NoteNotFound):
        await store.delete(stranger, note.id)
    assert (await store.list(stranger)).notes == ()
    assert await store.get(ALICE, note.id) == note


async def test_each_owner_lists_only_their_own_notes(store: NotesStore) -> None:
    owners = [ALICE, BOB, ALICE_ELSEWHERE]
    created = {owner: {(await store.create(owner, f"{owner[1]}-{i}", "")).id for i in range(3)} for owner in owners}
    for owner in owners:
        assert {note.id for note in (await store.list(owner)).notes} == created[owner]


async def test_not_found_reads_the_same_for_missing_and_foreign_ids(store: NotesStore) -> None:
    foreign = await store.create(BOB, "bob's", "")
    missing = new_note_id()
    actions: list[Callable[[str], Awaitable[object]]] = [
        lambda note_id: store.get(ALICE, note_id),
        lambda note_id: store.update(ALICE, note_id, content="x"),
        lambda note_id: store.delete(ALICE, note_id),
    ]
    for action in actions:
        errors = []
        for note_id in (missing, foreign.id):
            with pytest.raises(NoteNotFound) as caught:
                await action(note_id)
            errors.append(caught.value)
        assert [str(error) for error in errors] == [NOT_FOUND_MESSAGE, NOT_FOUND_MESSAGE]
        assert [error.args for error in errors] == [(NOT_FOUND_MESSAGE,)] * 2
        assert [error.__cause__ for error in errors] == [None, None]


async def test_missing_and_foreign_ids_run_the_same_sql(sqlite_store: SQLiteNotesStore) -> None:
    store = sqlite_store
    foreign = await store.create(BOB, "bob's", "")
    missing = new_note_id()

    async def statements_for(action: Callable[[str], Awaitable[object]], note_id: str) -> list[str]:
        seen: list[str] = []
        await store._call(lambda notes: notes.conn.set_trace_callback(seen.append))
        try:
            with pytest.raises(NoteNotFound):
                await action(note_id)
        finally:
            await store._call(lambda notes: notes.conn.set_trace_callback(None))
        return [statement.replace(note_id, "<id>") for statement in seen]

    for action in (
        lambda note_id: store.get(ALICE, note_id),
        lambda note_id: store.update(ALICE, note_id, title="t"),
        lambda note_id: store.delete(ALICE, note_id),
    ):
        for_missing = await statements_for(action, missing)
        assert for_missing, "no SQL was traced"
        assert await statements_for(action, foreign.id) == for_missing
        assert any("WHERE id = '<id>' AND issuer = " in statement for statement in for_missing)


@pytest.mark.parametrize("note_id", ["", "x" * 65, "../etc/passwd", "a b", "nul\x00", "\ud800", "é", 42, None])
async def test_malformed_ids_are_simply_not_found(memory: NotesStore, note_id: Any) -> None:
    with pytest.raises(NoteNotFound, match=f"^{NOT_FOUND_MESSAGE}$"):
        await memory.get(ALICE, note_id)
    with pytest.raises(NoteNotFound, match=f"^{NOT_FOUND_MESSAGE}$"):
        await memory.update(ALICE, note_id, title="t")
    with pytest.raises(NoteNotFound, match=f"^{NOT_FOUND_MESSAGE}$"):
        await memory.delete(ALICE, note_id)


@pytest.mark.parametrize(
    "owner",
    [("", "alice"), (ISSUER, ""), (ISSUER, "\ud800"), ("iss\x00", "alice"), [ISSUER, "alice"], (ISSUER,), None],
)
async def test_an_identity_that_cannot_own_notes_is_refused(store: NotesStore, backend: Backend, owner: Any) -> None:
    with pytest.raises(InvalidNoteInput):
        await store.create(owner, "t", "c")
    with pytest.raises(InvalidNoteInput):
        await store.list(owner)
    assert backend.scalar("SELECT COUNT(*) FROM notes") == 0


# --- limits and input checks ---------------------------------------------------------------------


@pytest.mark.parametrize("title", ["", "   ", "\n\t"])
async def test_empty_title_is_rejected(small: NotesStore, title: str) -> None:
    with pytest.raises(InvalidNoteInput, match=r"^title must not be empty$"):
        await small.create(ALICE, title, "c")
    note = await small.create(ALICE, "ok", "c")
    with pytest.raises(InvalidNoteInput, match=r"^title must not be empty$"):
        await small.update(ALICE, note.id, title=title)


async def test_title_length_limit(small: NotesStore) -> None:
    note = await small.create(ALICE, "x" * 10, "")
    assert note.title == "x" * 10
    assert (await small.create(ALICE, "  " + "y" * 10 + "  ", "")).title == "y" * 10  # measured after trimming
    with pytest.raises(NoteLimitExceeded, match=r"^title is too long: at most 10 characters$"):
        await small.create(ALICE, "x" * 11, "")
    with pytest.raises(NoteLimitExceeded, match="at most 10 characters"):
        await small.update(ALICE, note.id, title="x" * 11)


async def test_content_length_limit(small: NotesStore) -> None:
    note = await small.create(ALICE, "t", "c" * 50)
    with pytest.raises(NoteLimitExceeded, match=r"^content is too long: at most 50 characters$"):
        await small.create(ALICE, "t", "c" * 51)
    with pytest.raises(NoteLimitExceeded, match="at most 50 characters"):
        await small.update(ALICE, note.id, content="c" * 51)
    assert (await small.get(ALICE, note.id)).content == "c" * 50


async def test_default_limits_are_enforced(store: NotesStore) -> None:
    await store.create(ALICE, "t" * 200, "c" * 100_000)
    with pytest.raises(NoteLimitExceeded, match="at most 200 characters"):
        await store.create(ALICE, "t" * 201, "")
    with pytest.raises(NoteLimitExceeded, match="at most 100000 characters"):
        await store.create(ALICE, "t", "c" * 100_001)
    with pytest.raises(InvalidNoteInput, match="between 1 and 100"):
        await store.list(ALICE, limit=101)


async def test_notes_per_owner_limit(small: NotesStore) -> None:
    notes = [await small.create(ALICE, f"n{i}", "") for i in range(5)]
    with pytest.raises(NoteLimitExceeded, match=r"^note limit reached: at most 5 notes per user"):
        await small.create(ALICE, "one more", "")
    await small.create(BOB, "bob's", "")
    await small.create(ALICE_ELSEWHERE, "elsewhere", "")
    await small.delete(ALICE, notes[0].id)
    await small.create(ALICE, "room again", "")
    assert len((await small.list(ALICE, limit=7)).notes) == 5


@pytest.mark.parametrize("limit", [0, -1, 8, True, 2.0, "5", None])
async def test_page_size_out_of_range(small: NotesStore, limit: Any) -> None:
    with pytest.raises(InvalidNoteInput, match=r"^limit must be a whole number between 1 and 7$"):
        await small.list(ALICE, limit=limit)


async def test_page_size_bounds_are_inclusive(small: NotesStore) -> None:
    for i in range(5):
        await small.create(ALICE, f"n{i}", "")
    assert len((await small.list(ALICE, limit=1)).notes) == 1
    assert len((await small.list(ALICE, limit=7)).notes) == 5


@pytest.mark.parametrize("field", ["title", "content"])
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("a\x00b", "must not contain NUL characters"),
        ("a\ud800b", "is not valid Unicode text"),
        ("\udfff", "is not valid Unicode text"),
        (b"bytes", "must be text"),
        (None, "must be text"),
    ],
)
async def test_unstorable_text_is_rejected(memory: NotesStore, field: str, bad: Any, message: str) -> None:
    fields = {"title": "ok", "content": "ok", field: bad}
    with pytest.raises(InvalidNoteInput, match=f"^{field} {message}"):
        await memory.create(ALICE, fields["title"], fields["content"])
    if bad is not None:  # None means "leave unchanged" in update
        note = await memory.create(ALICE, "ok", "ok")
        with pytest.raises(InvalidNoteInput, match=f"^{field} {message}"):
            await memory.update(ALICE, note.id, **{field: bad})
        assert await memory.get(ALICE, note.id) == note


@pytest.mark.parametrize(
    "limits", [{"max_title_chars": 0}, {"max_page_size": -1}, {"max_notes_per_owner": True}, {"max_content_chars": 1.5}]
)
def test_limits_must_be_positive_integers(limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be a positive integer"):
        NotesLimits(**limits)


def test_errors_share_one_base() -> None:
    for error in (NoteNotFound, NoteLimitExceeded, InvalidNoteInput):
        assert issubclass(error, NotesError)
    assert not issubclass(NotesStorageError, NotesError)  # operator trouble, not a message for the user


# --- pagination ----------------------------------------------------------------------------------


async def test_pagination_walks_every_note_once_in_creation_order(store: NotesStore) -> None:
    created = [await store.create(ALICE, f"n{i}", str(i)) for i in range(25)]
    await store.create(BOB, "not alice's", "")
    pages = await walk(store, ALICE, limit=10)
    assert [len(page) for page in pages] == [10, 10, 5]
    listed = [note for page in pages for note in page]
    assert [note.id for note in listed] == [note.id for note in sorted(created, key=lambda n: (n.created_at, n.id))]
    assert {note.id for note in listed} == {note.id for note in created}
    assert listed == [await store.get(ALICE, note.id) for note in listed]


async def test_pagination_with_identical_timestamps_relies_on_id_order(store: NotesStore, backend: Backend) -> None:
    created = [await store.create(ALICE, f"n{i}", "") for i in range(12)]
    backend.scalar("UPDATE notes SET created_at = 1700000000000000")
    pages = await walk(store, ALICE, limit=5)
    assert [len(page) for page in pages] == [5, 5, 2]
    assert [note.id for page in pages for note in page] == sorted(note.id for note in created)


async def test_a_full_last_page_has_no_next_cursor(store: NotesStore) -> None:
    assert await store.list(ALICE) == (await store.list(ALICE, limit=3))
    assert (await store.list(ALICE)).next_cursor is None
    for i in range(6):
        await store.create(ALICE, f"n{i}", "")
    assert [len(page) for page in await walk(store, ALICE, limit=3)] == [3, 3]
    assert (await store.list(ALICE, limit=6)).next_cursor is None


async def test_a_cursor_survives_deleting_the_note_it_points_at(store: NotesStore) -> None:
    created = [await store.create(ALICE, f"n{i}", "") for i in range(6)]
    first = await store.list(ALICE, limit=3)
    await store.delete(ALICE, first.notes[-1].id)
    second = await store.list(ALICE, limit=3, cursor=first.next_cursor)
    assert [note.id for note in first.notes + second.notes] == [note.id for note in created]


async def test_a_cursor_is_opaque_text(store: NotesStore) -> None:
    for i in range(3):
        await store.create(ALICE, f"n{i}", "")
    cursor = (await store.list(ALICE, limit=1)).next_cursor
    assert cursor is not None
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)


def _garbage_cursors() -> list[Any]:
    def b64(text: str | bytes) -> str:
        data = text.encode() if isinstance(text, str) else text
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    return [
        "",
        "garbage",
        "!!!!",
        "é",
        "a" * 2000,
        b64("null"),
        b64("[]"),
        b64('{"a": 1}'),
        b64(b"\xff\xfe\x00"),
        b64("[" * 300),
        b64('{"o": "x", "t": 1, "i": "abc"}'),  # right shape, wrong owner tag
        123,
    ]


@pytest.mark.parametrize("cursor", _garbage_cursors())
async def test_garbage_cursors_are_invalid(memory: NotesStore, cursor: Any) -> None:
    await memory.create(ALICE, "n", "")
    with pytest.raises(InvalidNoteInput, match=f"^{INVALID_CURSOR_MESSAGE}$"):
        await memory.list(ALICE, cursor=cursor)


@pytest.mark.parametrize(
    "change",
    [
        lambda data: {**data, "t": "1"},
        lambda data: {**data, "t": True},
        lambda data: {**data, "t": -5},
        lambda data: {**data, "t": 2**70},
        lambda data: {**data, "t": 1.5},
        lambda data: {**data, "i": "../../x"},
        lambda data: {**data, "i": 7},
        lambda data: {**data, "extra": 1},
        lambda data: {key: value for key, value in data.items() if key != "o"},
        lambda data: [data["o"], data["t"], data["i"]],
    ],
)
async def test_tampered_cursors_are_invalid(memory: NotesStore, change: Callable[[Any], Any]) -> None:
    for i in range(3):
        await memory.create(ALICE, f"n{i}", "")
    cursor = (await memory.list(ALICE, limit=1)).next_cursor
    assert cursor is not None
    assert len((await memory.list(ALICE, cursor=reencode(cursor, lambda data: data))).notes) == 2  # untampered works
    with pytest.raises(InvalidNoteInput, match=f"^{INVALID_CURSOR_MESSAGE}$"):
        await memory.list(ALICE, cursor=reencode(cursor, change))


async def test_another_owners_cursor_is_invalid_and_reveals_nothing(store: NotesStore) -> None:
    for i in range(3):
        await store.create(ALICE, f"alice-{i}", "")
        await store.create(BOB, f"bob-{i}", "")
    alices_cursor = (await store.list(ALICE, limit=1)).next_cursor
    assert alices_cursor is not None
    for stranger in (BOB, ALICE_ELSEWHERE):
        with pytest.raises(InvalidNoteInput) as caught:
            await store.list(stranger, cursor=alices_cursor)
        assert str(caught.value) == INVALID_CURSOR_MESSAGE


# --- durability and schema -----------------------------------------------------------------------


async def test_notes_persist_across_close_and_reopen(db_path: Path) -> None:
    first = SQLiteNotesStore(str(db_path))
    await first.open()
    note = await first.create(ALICE, "durable", "still here")
    updated = await first.update(ALICE, note.id, content="changed")
    await first.close()

    async with opened(SQLiteNotesStore(db_path)) as second:
        assert await second.get(ALICE, note.id) == updated

    await first.open()  # the same object can be opened again
    try:
        assert await first.get(ALICE, note.id) == updated
    finally:
        await first.close()


async def test_open_and_close_are_idempotent(db_path: Path) -> None:
    store = SQLiteNotesStore(str(db_path))
    assert await store.ping() is False
    await asyncio.gather(store.open(), store.open())
    await store.open()
    assert await store.ping() is True
    await store.create(ALICE, "t", "")
    await store.close()
    await store.close()
    assert await store.ping() is False


async def test_a_cancelled_open_leaves_the_store_closed_and_reopenable(db_path: Path) -> None:
    store = SQLiteNotesStore(str(db_path))
    opening = asyncio.create_task(store.open())
    await asyncio.sleep(0)  # open() is now waiting for its worker thread to connect
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    assert await store.ping() is False
    await store.open()
    try:
        note = await store.create(ALICE, "after", "")
        assert await store.get(ALICE, note.id) == note
    finally:
        await store.close()


async def test_using_a_store_that_is_not_open_fails_clearly(db_path: Path) -> None:
    store = SQLiteNotesStore(str(db_path))
    with pytest.raises(NotesStorageError, match="not open"):
        await store.create(ALICE, "t", "")
    await store.open()
    await store.close()
    with pytest.raises(NotesStorageError, match="not open"):
        await store.list(ALICE)


async def test_close_finishes_the_writes_already_queued(db_path: Path) -> None:
    store = SQLiteNotesStore(str(db_path))
    await store.open()
    writes = [asyncio.create_task(store.create(ALICE, f"n{i}", "x" * 1000)) for i in range(20)]
    await asyncio.sleep(0)  # let every write reach the worker queue before close() is queued behind them
    await store.close()
    notes = await asyncio.gather(*writes)
    assert scalar(db_path, "SELECT COUNT(*) FROM notes") == len(notes) == 20


async def test_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "notes.db"
    store = SQLiteNotesStore(str(path))
    await store.open()
    await store.create(ALICE, "t", "")
    await store.close()
    assert path.is_file()


async def test_wal_full_sync_and_foreign_keys_are_on(sqlite_store: SQLiteNotesStore, db_path: Path) -> None:
    store = sqlite_store
    assert scalar(db_path, "PRAGMA journal_mode") == "wal"  # stored in the file
    assert await on_store_connection(store, "PRAGMA journal_mode") == "wal"
    assert await on_store_connection(store, "PRAGMA synchronous") == 2  # FULL
    assert await on_store_connection(store, "PRAGMA foreign_keys") == 1
    assert await on_store_connection(store, "PRAGMA busy_timeout") >= 1000


async def test_schema_version_is_recorded(sqlite_store: SQLiteNotesStore, db_path: Path) -> None:
    assert len(MIGRATIONS) == 1
    assert scalar(db_path, "PRAGMA user_version") == 1


async def test_a_database_from_a_newer_schema_is_refused(db_path: Path) -> None:
    conn = raw(db_path)
    conn.execute("CREATE TABLE notes_v2 (anything)")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    store = SQLiteNotesStore(str(db_path))
    with pytest.raises(NotesStorageError, match=r"schema version 2, newer than this server understands \(1\)"):
        await store.open()
    assert await store.ping() is False
    assert scalar(db_path, "PRAGMA user_version") == 2
    assert scalar(db_path, "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'notes'") == 0


async def test_a_later_migration_upgrades_an_existing_database(db_path: Path) -> None:
    class Upgraded(SQLiteNotesStore):
        migrations = (*MIGRATIONS, ("ALTER TABLE notes ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0",))

    old = SQLiteNotesStore(str(db_path))
    await old.open()
    note = await old.create(ALICE, "from v1", "")
    await old.close()

    async with opened(Upgraded(str(db_path))) as new:
        assert await new.get(ALICE, note.id) == note
    assert scalar(db_path, "PRAGMA user_version") == 2
    assert scalar(db_path, "SELECT pinned FROM notes") == 0

    with pytest.raises(NotesStorageError, match="schema version 2"):
        await SQLiteNotesStore(str(db_path)).open()  # and the old code now refuses it


async def test_a_failing_migration_changes_nothing(db_path: Path) -> None:
    class Broken(SQLiteNotesStore):
        migrations = (*MIGRATIONS, ("CREATE TABLE half_done (x)", "THIS IS NOT SQL"))

    old = SQLiteNotesStore(str(db_path))
    await old.open()
    await old.create(ALICE, "kept", "")
    await old.close()

    with pytest.raises(NotesStorageError, match="cannot use the notes database"):
        await Broken(str(db_path)).open()
    assert scalar(db_path, "PRAGMA user_version") == 1
    assert scalar(db_path, "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'half_done'") == 0

    fresh = Broken(str(db_path.with_name("fresh.db")))
    with pytest.raises(NotesStorageError):
        await fresh.open()
    assert scalar(db_path.with_name("fresh.db"), "PRAGMA user_version") == 0  # not even migration 1 was kept


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(NotesStorageError, match="notes database"):
        await SQLiteNotesStore(str(path)).open()


async def test_an_unusable_path_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NotesStorageError, match="cannot open the notes database"):
        await SQLiteNotesStore(str(blocker / "notes.db")).open()
    with pytest.raises(ValueError, match="must not be empty"):
        SQLiteNotesStore("")


async def test_a_failed_write_is_rolled_back_and_releases_the_lock(
    sqlite_store: SQLiteNotesStore, db_path: Path
) -> None:
    store = sqlite_store
    conn = raw(db_path)
    conn.execute(
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON notes WHEN NEW.title = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    with pytest.raises(NotesStorageError, match="boom"):
        await store.create(ALICE, "boom", "")
    ok = await store.create(ALICE, "fine", "")  # the store's connection is not stuck inside a transaction
    conn.execute("BEGIN IMMEDIATE")  # and it holds no write lock
    conn.execute("ROLLBACK")
    conn.close()
    assert [note.id for note in (await store.list(ALICE)).notes] == [ok.id]


async def test_memory_database_works(tmp_path: Path) -> None:
    one, two = SQLiteNotesStore(":memory:"), SQLiteNotesStore(":memory:")
    await one.open()
    await two.open()
    try:
        note = await one.create(ALICE, "in memory", "")
        assert await one.get(ALICE, note.id) == note
        assert await on_store_connection(one, "PRAGMA journal_mode") == "memory"
        assert await on_store_connection(one, "PRAGMA synchronous") == 2
        assert (await two.list(ALICE)).notes == ()  # each in-memory store is its own database
        assert await one.ping() is True
    finally:
        await one.close()
        await two.close()
    assert not (tmp_path / ":memory:").exists()


# --- concurrency ---------------------------------------------------------------------------------


async def test_fifty_concurrent_creates_are_all_kept(store: NotesStore) -> None:
    notes = await asyncio.gather(*(store.create(ALICE, f"n{i}", f"body {i}") for i in range(50)))
    listed = (await store.list(ALICE, limit=100)).notes
    assert {note.id for note in listed} == {note.id for note in notes}
    assert sorted(note.content for note in listed) == sorted(f"body {i}" for i in range(50))


async def test_fifty_concurrent_updates_of_different_notes_are_all_kept(store: NotesStore) -> None:
    notes = await asyncio.gather(*(store.create(ALICE, f"n{i}", "before") for i in range(50)))
    await asyncio.gather(*(store.update(ALICE, note.id, content=f"after {note.title}") for note in notes))
    for note in notes:
        assert (await store.get(ALICE, note.id)).content == f"after {note.title}"


async def test_fifty_concurrent_updates_of_one_note_leave_the_last_write(store: NotesStore) -> None:
    note = await store.create(ALICE, "counter", "0")
    results = await asyncio.gather(*(store.update(ALICE, note.id, content=str(i)) for i in range(1, 51)))
    assert len({result.updated_at for result in results}) == 50  # every update got its own, later timestamp
    last = max(results, key=lambda result: result.updated_at)
    assert await store.get(ALICE, note.id) == last
    assert all(result.created_at == note.created_at for result in results)


async def test_concurrent_creates_never_exceed_the_per_owner_limit(backend: Backend) -> None:
    store = await backend.open(NotesLimits(max_notes_per_owner=50))
    try:
        await asyncio.gather(*(store.create(ALICE, f"n{i}", "") for i in range(49)))
        results = await asyncio.gather(
            *(store.create(ALICE, f"race {i}", "") for i in range(50)), return_exceptions=True
        )
        assert sum(isinstance(result, Note) for result in results) == 1
        assert sum(isinstance(result, NoteLimitExceeded) for result in results) == 49
        assert backend.scalar("SELECT COUNT(*) FROM notes") == 50
    finally:
        await store.close()


async def test_two_stores_racing_the_limit_never_exceed_it(backend: Backend) -> None:
    # Two stores on one database: two processes on one file, or two replicas on one PostgreSQL database.
    limits = NotesLimits(max_notes_per_owner=10)
    first, second = await backend.open(limits), await backend.open(limits)
    try:
        for i in range(9):
            await first.create(ALICE, f"n{i}", "")
        results = await asyncio.gather(
            *(store.create(ALICE, f"race {i}", "") for i in range(25) for store in (first, second)),
            return_exceptions=True,
        )
        assert sum(isinstance(result, Note) for result in results) == 1
        assert all(isinstance(result, Note | NoteLimitExceeded) for result in results)
        assert backend.scalar("SELECT COUNT(*) FROM notes") == 10
    finally:
        await first.close()
        await second.close()


class InStepStore(SQLiteNotesStore):
    """Its worker thread waits for the others' at the barrier, then switches to WAL: replicas starting together."""

    def __init__(self, path: Path, barrier: threading.Barrier) -> None:
        super().__init__(str(path))
        self.barrier: threading.Barrier | None = barrier

    def _configure(self, conn: sqlite3.Connection) -> None:
        if self.barrier is not None:  # only the first attempt
            self.barrier.wait(timeout=5)
            self.barrier = None
        super()._configure(conn)


async def test_stores_opening_one_fresh_file_at_once_all_open(tmp_path: Path) -> None:
    # SQLite may refuse one of them the switch to WAL at once, without waiting on the busy timeout.
    for round_number in range(25):
        path = tmp_path / f"fresh-{round_number}.db"
        barrier = threading.Barrier(6)
        stores = [InStepStore(path, barrier) for _ in range(6)]
        results = await asyncio.gather(*(store.open() for store in stores), return_exceptions=True)
        try:
            assert [result for result in results if result is not None] == []
            note = await stores[0].create(ALICE, "shared", "")
            assert await stores[-1].get(ALICE, note.id) == note
        finally:
            for store in stores:
                await store.close()
        assert scalar(path, "PRAGMA user_version") == len(MIGRATIONS)


def busy_error() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
    return error


class RefusingStore(SQLiteNotesStore):
    """Its set-up fails with the given errors, one per attempt, before going through."""

    def __init__(self, path: Path, errors: list[sqlite3.Error]) -> None:
        super().__init__(str(path))
        self.errors = errors
        self.attempts = 0

    def _configure(self, conn: sqlite3.Connection) -> None:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        super()._configure(conn)


async def test_a_busy_refusal_during_set_up_is_tried_again(db_path: Path) -> None:
    async with opened(RefusingStore(db_path, [busy_error(), busy_error(), busy_error()])) as store:
        assert store.attempts == 4
        assert await store.ping() is True


async def test_a_lasting_busy_refusal_fails_clearly_after_the_busy_timeout(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tools.notes_store_sqlite._BUSY_TIMEOUT_SECONDS", 0.3)
    store = RefusingStore(db_path, [busy_error() for _ in range(1000)])
    started = time.monotonic()
    with pytest.raises(NotesStorageError, match=r"cannot use the notes database .*: database is locked"):
        await store.open()
    assert 0.1 < time.monotonic() - started < 3
    assert 3 <= store.attempts < 100
    assert await store.ping() is False


async def test_other_set_up_errors_are_not_tried_again(db_path: Path) -> None:
    store = RefusingStore(db_path, [sqlite3.OperationalError("disk I/O error")])
    with pytest.raises(NotesStorageError, match="disk I/O error"):
        await store.open()
    assert store.attempts == 1


async def test_the_event_loop_keeps_running_while_writes_wait(sqlite_store: SQLiteNotesStore, db_path: Path) -> None:
    store = sqlite_store
    hold_seconds = 0.4
    locked = threading.Event()

    def hold_the_write_lock() -> None:  # another process in the middle of a long write
        conn = raw(db_path)
        try:
            conn.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(hold_seconds)
            conn.execute("COMMIT")
        finally:
            conn.close()

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    assert locked.wait(5)

    ticks: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        for _ in range(1000):  # at most ~5 s
            ticks.append(time.monotonic())
            if done.is_set():
                return
            await asyncio.sleep(0.005)

    ticking = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        notes = await asyncio.gather(*(store.create(ALICE, f"n{i}", "x" * 20_000) for i in range(30)))
        waited = time.monotonic() - started
    finally:
        done.set()
        await ticking
        holder.join(5)

    assert len(notes) == 30
    assert waited >= hold_seconds * 0.75  # the writes really were held up
    assert len(ticks) >= 10
    assert max(later - earlier for earlier, later in itertools.pairwise(ticks)) < 0.15

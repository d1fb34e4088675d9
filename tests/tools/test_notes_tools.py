"""The notes tools through the real HTTP app: results, user-facing errors, isolation, concurrency, restart."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from starlette.testclient import TestClient

from auth.principal import Principal
from tests.support import (
    BASE_URL,
    CLIENT_ID,
    ISSUER,
    NOTES_SCOPES,
    SERVER_URL,
    Signer,
    bearer,
    legacy_headers,
    make_settings,
    parse_mcp_response,
    rpc_body,
    user_token,
)
from tools.notes_store import NOT_FOUND_MESSAGE
from web.app import build_app

UNAVAILABLE = "the notes store is unavailable; try again later"
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{22,}")
CALL_TIMEOUT_SECONDS = 60


# --- helpers ------------------------------------------------------------------------------------


def call(client: TestClient, token: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """One tools/call over HTTP; always a 200 with a JSON-RPC result, never a 500 or a protocol error."""
    body = rpc_body("tools/call", {"name": name, "arguments": arguments})
    response = client.post("/mcp", json=body, headers=legacy_headers(token))
    assert response.status_code == 200, response.text
    message = parse_mcp_response(response)
    assert "error" not in message, message
    return message["result"]


def ok(client: TestClient, token: str, name: str, **arguments: Any) -> dict[str, Any]:
    result = call(client, token, name, arguments)
    assert not result["isError"], result
    structured = result["structuredContent"]
    assert structured is not None
    return structured


def refused(client: TestClient, token: str, name: str, **arguments: Any) -> str:
    """The text of an is_error result: prefixed with the tool name, no structured content, no traceback."""
    result = call(client, token, name, arguments)
    assert result["isError"], result
    assert result.get("structuredContent") is None
    [content] = result["content"]
    text = content["text"]
    prefix = f"Error executing tool {name}: "
    assert text.startswith(prefix), text
    assert "Traceback" not in text
    assert 'File "' not in text
    return text.removeprefix(prefix)


def parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == timedelta(0)
    return moment


def machine_token(signer: Signer, client_id: str, subject: str | None = None, **claims: Any) -> str:
    return signer.token(sub=subject or client_id, azp=client_id, scope=NOTES_SCOPES, **claims)


@contextmanager
def running_app(**overrides: Any) -> Iterator[TestClient]:
    with TestClient(build_app(make_settings(**overrides)), base_url=BASE_URL) as test_client:
        yield test_client


def all_notes(client: TestClient, token: str, page_size: int = 100, max_pages: int = 50) -> list[dict[str, Any]]:
    notes: list[dict[str, Any]] = []
    cursor = None
    for _ in range(max_pages):
        arguments: dict[str, Any] = {"limit": page_size} | ({"cursor": cursor} if cursor else {})
        page = ok(client, token, "list_notes", **arguments)
        notes += page["notes"]
        cursor = page["next_cursor"]
        if cursor is None:
            return notes
    raise AssertionError("paging did not end")


# --- each tool ----------------------------------------------------------------------------------


def test_create_note_returns_the_stored_note(client, alice):
    before = datetime.now(UTC)
    note = ok(client, alice, "create_note", title="  Groceries  ", content="milk\neggs\n")
    assert set(note) == {"id", "title", "content", "created_at", "updated_at"}
    assert ID_PATTERN.fullmatch(note["id"])
    assert note["title"] == "Groceries"  # trimmed
    assert note["content"] == "milk\neggs\n"  # verbatim
    created = parse_time(note["created_at"])
    assert note["updated_at"] == note["created_at"]
    assert before - timedelta(seconds=1) <= created <= datetime.now(UTC) + timedelta(seconds=1)


def test_create_note_with_empty_content_and_unicode(client, alice):
    note = ok(client, alice, "create_note", title="Zürich 🗒️ '; DROP TABLE notes; --", content="")
    assert note["content"] == ""
    assert ok(client, alice, "read_note", note_id=note["id"]) == note


def test_read_note_returns_the_same_fields(client, alice):
    created = ok(client, alice, "create_note", title="t", content="c")
    assert ok(client, alice, "read_note", note_id=created["id"]) == created


def test_text_content_mirrors_the_structured_result(client, alice):
    result = call(client, alice, "create_note", {"title": "t", "content": "c"})
    [content] = result["content"]
    assert content["type"] == "text"
    assert '"title": "t"' in content["text"]
    assert result["structuredContent"]["id"] in content["text"]


def test_list_notes_is_empty_at_first(client, alice):
    assert ok(client, alice, "list_notes") == {"notes": [], "next_cursor": None}


def test_list_notes_pages_with_limit_and_cursor(client, alice):
    created = [ok(client, alice, "create_note", title=f"note {i}", content=str(i))["id"] for i in range(5)]
    first = ok(client, alice, "list_notes", limit=2)
    assert [note["id"] for note in first["notes"]] == created[:2]
    assert isinstance(first["next_cursor"], str) and first["next_cursor"]
    second = ok(client, alice, "list_notes", limit=2, cursor=first["next_cursor"])
    assert [note["id"] for note in second["notes"]] == created[2:4]
    third = ok(client, alice, "list_notes", limit=2, cursor=second["next_cursor"])
    assert [note["id"] for note in third["notes"]] == created[4:]
    assert third["next_cursor"] is None
    listed = first["notes"][0]
    assert set(listed) == {"id", "title", "content", "created_at", "updated_at"}
    assert listed["title"] == "note 0" and listed["content"] == "0"
    parse_time(listed["created_at"])
    parse_time(listed["updated_at"])


def test_list_notes_default_page_and_bounds(client, alice):
    for i in range(21):
        ok(client, alice, "create_note", title=f"n{i}", content="")
    page = ok(client, alice, "list_notes")
    assert len(page["notes"]) == 20 and page["next_cursor"]
    assert len(ok(client, alice, "list_notes", limit=1)["notes"]) == 1
    whole = ok(client, alice, "list_notes", limit=100)
    assert len(whole["notes"]) == 21 and whole["next_cursor"] is None


@pytest.mark.parametrize(
    ("change", "expected_title", "expected_content"),
    [
        ({"title": "  new title "}, "new title", "old content"),
        ({"content": "new content"}, "old title", "new content"),
        ({"title": "new title", "content": ""}, "new title", ""),
    ],
    ids=["title-only", "content-only", "both"],
)
def test_update_note(client, alice, change, expected_title, expected_content):
    note = ok(client, alice, "create_note", title="old title", content="old content")
    updated = ok(client, alice, "update_note", note_id=note["id"], **change)
    assert updated["id"] == note["id"]
    assert (updated["title"], updated["content"]) == (expected_title, expected_content)
    assert updated["created_at"] == note["created_at"]
    assert parse_time(updated["updated_at"]) > parse_time(note["updated_at"])
    assert ok(client, alice, "read_note", note_id=note["id"]) == updated


def test_update_with_explicit_nulls_changes_only_what_is_given(client, alice):
    note = ok(client, alice, "create_note", title="keep", content="old")
    updated = ok(client, alice, "update_note", note_id=note["id"], title=None, content="new")
    assert (updated["title"], updated["content"]) == ("keep", "new")


def test_delete_note(client, alice):
    keep = ok(client, alice, "create_note", title="keep", content="")
    gone = ok(client, alice, "create_note", title="gone", content="")
    assert ok(client, alice, "delete_note", note_id=gone["id"]) == {"id": gone["id"], "deleted": True}
    assert refused(client, alice, "read_note", note_id=gone["id"]) == NOT_FOUND_MESSAGE
    assert refused(client, alice, "delete_note", note_id=gone["id"]) == NOT_FOUND_MESSAGE
    assert [note["id"] for note in all_notes(client, alice)] == [keep["id"]]


def test_get_me_still_works_alongside_the_notes(client, alice):
    ok(client, alice, "create_note", title="t", content="c")
    identity = ok(client, alice, "get_me")
    assert identity["user_id"] == "alice"
    assert identity["client_id"] == CLIENT_ID
    assert identity["token_type"] == "user"
    assert {"read:notes", "write:notes", "use:calculator"} <= set(identity["scopes"])


# --- errors a user understands ------------------------------------------------------------------


MISSING_ID = "AAAAAAAAAAAAAAAAAAAAAA"


@pytest.mark.parametrize(
    ("tool", "extra"),
    [("read_note", {}), ("update_note", {"title": "x"}), ("delete_note", {})],
)
@pytest.mark.parametrize("note_id", [MISSING_ID, "no such id", "", "x" * 500, "../../etc/passwd"])
def test_a_missing_note_is_not_found(client, alice, tool, extra, note_id):
    assert refused(client, alice, tool, note_id=note_id, **extra) == NOT_FOUND_MESSAGE


@pytest.mark.parametrize(
    ("tool", "extra"),
    [("read_note", {}), ("update_note", {"title": "x"}), ("delete_note", {})],
)
def test_another_owners_note_reads_exactly_like_a_missing_one(client, alice, bob, tool, extra):
    note = ok(client, alice, "create_note", title="secret", content="alice only")
    foreign = call(client, bob, tool, {"note_id": note["id"], **extra})
    missing = call(client, bob, tool, {"note_id": MISSING_ID, **extra})
    assert foreign == missing
    assert foreign["content"][0]["text"] == f"Error executing tool {tool}: {NOT_FOUND_MESSAGE}"
    assert "secret" not in str(foreign)
    assert ok(client, alice, "read_note", note_id=note["id"]) == note  # untouched


@pytest.mark.parametrize("title", ["", "   ", "\n\t"])
def test_an_empty_title_is_refused(client, alice, title):
    assert refused(client, alice, "create_note", title=title, content="x") == "title must not be empty"
    note = ok(client, alice, "create_note", title="ok", content="x")
    assert refused(client, alice, "update_note", note_id=note["id"], title=title) == "title must not be empty"
    assert all_notes(client, alice) == [note]


def test_title_and_content_limits(idp, alice):
    with running_app(notes_max_title_chars=10, notes_max_content_chars=20) as client:
        at_limit = ok(client, alice, "create_note", title="t" * 10, content="c" * 20)
        assert refused(client, alice, "create_note", title="t" * 11, content="") == (
            "title is too long: at most 10 characters"
        )
        assert refused(client, alice, "create_note", title="t", content="c" * 21) == (
            "content is too long: at most 20 characters"
        )
        note_id = at_limit["id"]
        assert refused(client, alice, "update_note", note_id=note_id, title="t" * 11).startswith("title is too long")
        assert refused(client, alice, "update_note", note_id=note_id, content="c" * 21).startswith("content is too")
        assert all_notes(client, alice) == [at_limit]


def test_title_over_the_default_limit_is_refused(client, alice):
    assert refused(client, alice, "create_note", title="t" * 201, content="") == (
        "title is too long: at most 200 characters"
    )


def test_per_owner_limit(idp, alice, bob):
    with running_app(notes_max_per_owner=3) as client:
        notes = [ok(client, alice, "create_note", title=f"n{i}", content="") for i in range(3)]
        message = refused(client, alice, "create_note", title="one too many", content="")
        assert message == "note limit reached: at most 3 notes per user; delete some first"
        assert len(all_notes(client, alice)) == 3
        ok(client, bob, "create_note", title="bob has his own quota", content="")
        ok(client, alice, "delete_note", note_id=notes[0]["id"])
        ok(client, alice, "create_note", title="room again", content="")


@pytest.mark.parametrize("cursor", ["garbage", "!!!", "e30", "x" * 600, ""])
def test_a_bad_cursor_is_refused(client, alice, cursor):
    ok(client, alice, "create_note", title="t", content="")
    assert refused(client, alice, "list_notes", cursor=cursor) == "invalid cursor"


def test_another_owners_cursor_is_refused(client, alice, bob):
    for i in range(3):
        ok(client, alice, "create_note", title=f"a{i}", content="")
    cursor = ok(client, alice, "list_notes", limit=1)["next_cursor"]
    assert cursor
    assert refused(client, bob, "list_notes", cursor=cursor) == "invalid cursor"


@pytest.mark.parametrize("limit", [0, -1, 101, 1000])
def test_a_page_size_out_of_range_is_refused(client, alice, limit):
    assert refused(client, alice, "list_notes", limit=limit) == "limit must be a whole number between 1 and 100"


def test_update_with_nothing_to_change_is_refused(client, alice):
    note = ok(client, alice, "create_note", title="t", content="c")
    expected = "nothing to update: give a new title, new content, or both"
    assert refused(client, alice, "update_note", note_id=note["id"]) == expected
    assert refused(client, alice, "update_note", note_id=note["id"], title=None, content=None) == expected
    assert ok(client, alice, "read_note", note_id=note["id"]) == note


@pytest.mark.parametrize(
    ("tool", "arguments", "field"),
    [
        ("create_note", {"title": 5, "content": "c"}, "title"),
        ("create_note", {"title": ["x"], "content": "c"}, "title"),
        ("create_note", {"title": {"a": 1}, "content": "c"}, "title"),
        ("create_note", {"title": None, "content": "c"}, "title"),
        ("create_note", {"title": "t", "content": 3.5}, "content"),
        ("create_note", {"content": "c"}, "title"),
        ("read_note", {}, "note_id"),
        ("read_note", {"note_id": 5}, "note_id"),
        ("read_note", {"note_id": None}, "note_id"),
        ("delete_note", {}, "note_id"),
        ("update_note", {"title": "t"}, "note_id"),
        ("update_note", {"note_id": MISSING_ID, "title": 7}, "title"),
        ("update_note", {"note_id": MISSING_ID, "content": ["x"]}, "content"),
        ("list_notes", {"limit": "many"}, "limit"),
        ("list_notes", {"limit": 2.5}, "limit"),
        ("list_notes", {"cursor": 12}, "cursor"),
    ],
)
def test_wrong_argument_types_are_tool_errors_without_a_traceback(client, alice, caplog, tool, arguments, field):
    caplog.set_level(logging.DEBUG)
    message = refused(client, alice, tool, **arguments)
    assert field in message
    assert all(record.levelno < logging.ERROR and record.exc_info is None for record in caplog.records)
    assert all_notes(client, alice) == []


def test_arguments_are_checked_before_the_owner_is_looked_up(client, alice, bob):
    # A wrong type on someone else's note is the same type error as on a missing one: nothing leaks.
    note = ok(client, alice, "create_note", title="t", content="c")
    foreign = call(client, bob, "update_note", {"note_id": note["id"], "title": 1})
    missing = call(client, bob, "update_note", {"note_id": MISSING_ID, "title": 1})
    assert foreign["isError"] and missing["isError"]
    assert foreign["content"][0]["text"].replace(note["id"], MISSING_ID) == missing["content"][0]["text"]


@pytest.mark.parametrize("text", ['{"k": 1}', "[1, 2]", "null"])
def test_update_stores_json_looking_text_verbatim(client, alice, text):
    created = ok(client, alice, "create_note", title=text, content=text)  # create's `str` parameters are fine
    assert (created["title"], created["content"]) == (text, text)
    note = ok(client, alice, "create_note", title="old", content="old")
    updated = ok(client, alice, "update_note", note_id=note["id"], title=text, content=text)
    assert (updated["title"], updated["content"]) == (text, text)


# --- the store is unavailable -------------------------------------------------------------------


ALL_CALLS = [
    ("create_note", {"title": "t", "content": "c"}),
    ("read_note", {"note_id": MISSING_ID}),
    ("list_notes", {}),
    ("update_note", {"note_id": MISSING_ID, "title": "t"}),
    ("delete_note", {"note_id": MISSING_ID}),
]


def test_a_closed_store_is_unavailable_to_users_and_detailed_to_operators(idp, alice, caplog):
    caplog.set_level(logging.INFO)
    app = build_app(make_settings())
    with TestClient(app, base_url=BASE_URL) as client:
        ok(client, alice, "create_note", title="before", content="")
        client.portal.call(app.state.components.store.close)
        for tool, arguments in ALL_CALLS:
            response = client.post(
                "/mcp",
                json=rpc_body("tools/call", {"name": tool, "arguments": arguments}),
                headers=legacy_headers(alice),
            )
            assert response.status_code == 200
            assert "not open" not in response.text
            assert refused(client, alice, tool, **arguments) == UNAVAILABLE
        assert ok(client, alice, "get_me")["user_id"] == "alice"
    failures = [r for r in caplog.records if r.name == "tools.notes_tools" and r.levelno == logging.ERROR]
    assert len(failures) == 2 * len(ALL_CALLS)
    assert all("the notes store is not open" in r.getMessage() for r in failures)


def test_a_broken_database_hides_sqlite_details_from_the_client(idp, alice, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    db_path = tmp_path / "broken" / "notes.db"
    with running_app(notes_db_path=str(db_path)) as client:
        ok(client, alice, "create_note", title="before", content="")
        with sqlite3.connect(db_path, timeout=5, isolation_level=None) as other:
            other.execute("DROP TABLE notes")
        other.close()
        for tool, arguments in ALL_CALLS:
            body = rpc_body("tools/call", {"name": tool, "arguments": arguments})
            response = client.post("/mcp", json=body, headers=legacy_headers(alice))
            assert response.status_code == 200
            for detail in ("no such table", "sqlite", str(db_path), "broken"):
                assert detail not in response.text.lower()
            assert refused(client, alice, tool, **arguments) == UNAVAILABLE
    logged = [r.getMessage() for r in caplog.records if r.name == "tools.notes_tools" and r.levelno == logging.ERROR]
    assert logged and all("no such table: notes" in message for message in logged)


# --- isolation ----------------------------------------------------------------------------------


def test_two_users_of_one_client_never_see_each_others_notes(client, signer):
    alice = user_token(signer, "alice", azp=CLIENT_ID)
    bob = user_token(signer, "bob", azp=CLIENT_ID)
    assert_isolated(client, alice, bob)


def test_two_machine_clients_never_see_each_others_notes(client, signer):
    auth0_style = machine_token(signer, "svc-a", subject="svc-a@clients", gty="client-credentials")
    plain = machine_token(signer, "svc-b")
    assert ok(client, auth0_style, "get_me")["token_type"] == "machine"
    assert ok(client, plain, "get_me")["token_type"] == "machine"
    assert_isolated(client, auth0_style, plain)


def test_a_user_and_a_machine_token_of_the_same_client_are_different_owners(client, signer):
    person = user_token(signer, "alice", azp="svc-a")
    service = machine_token(signer, "svc-a")
    assert_isolated(client, person, service)


def test_a_machine_client_owns_its_notes_whatever_its_subject_spelling(client, signer):
    # A machine token's owner is its client id: the Auth0 "<id>@clients" subject and a plain one are the same client.
    auth0_style = machine_token(signer, "svc-a", subject="svc-a@clients")
    plain = machine_token(signer, "svc-a")
    note = ok(client, auth0_style, "create_note", title="shared by svc-a", content="")
    assert all_notes(client, plain) == [note]


def test_each_token_of_the_same_user_sees_the_same_notes(client, signer):
    first, second = user_token(signer, "alice"), user_token(signer, "alice", azp="another-client")
    note = ok(client, first, "create_note", title="mine", content="")
    assert ok(client, second, "read_note", note_id=note["id"]) == note


def assert_isolated(client: TestClient, one: str, other: str) -> None:
    mine = ok(client, one, "create_note", title="one's note", content="one's secret")
    theirs = ok(client, other, "create_note", title="other's note", content="other's secret")
    assert all_notes(client, one) == [mine]
    assert all_notes(client, other) == [theirs]
    for token, note in ((other, mine), (one, theirs)):
        assert refused(client, token, "read_note", note_id=note["id"]) == NOT_FOUND_MESSAGE
        assert refused(client, token, "update_note", note_id=note["id"], content="hijacked") == NOT_FOUND_MESSAGE
        assert refused(client, token, "delete_note", note_id=note["id"]) == NOT_FOUND_MESSAGE
    assert ok(client, one, "read_note", note_id=mine["id"]) == mine
    assert ok(client, other, "read_note", note_id=theirs["id"]) == theirs


def _principal(issuer: str, subject: str, client_id: str | None = CLIENT_ID, *, machine: bool = False) -> Principal:
    return Principal(
        subject=subject,
        client_id=client_id,
        issuer=issuer,
        audience=(SERVER_URL,),
        scopes=frozenset(NOTES_SCOPES.split()),
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
        is_machine=machine,
    )


def test_the_same_subject_at_two_issuers_is_two_owners():
    here = _principal(ISSUER, "alice")
    elsewhere = _principal("https://login.other.example/", "alice")
    assert here.owner_key == (ISSUER, "alice")
    assert here.owner_key != elsewhere.owner_key
    assert _principal(ISSUER, "svc@clients", "svc", machine=True).owner_key == (ISSUER, "svc")
    assert _principal("https://login.other.example/", "svc", "svc", machine=True).owner_key != (ISSUER, "svc")
    assert _principal(ISSUER, "alice", None, machine=True).owner_key == (ISSUER, "alice")


def test_a_token_from_another_issuer_never_reaches_the_notes(client, signer, alice):
    ok(client, alice, "create_note", title="t", content="")
    foreign = signer.token(sub="alice", scope=NOTES_SCOPES, iss="https://login.other.example/")
    body = rpc_body("tools/call", {"name": "list_notes", "arguments": {}})
    assert client.post("/mcp", json=body, headers=legacy_headers(foreign)).status_code == 401


# --- ids ----------------------------------------------------------------------------------------


def test_ids_are_opaque_unguessable_and_distinct(client, alice):
    ids = [ok(client, alice, "create_note", title=f"n{i}", content="")["id"] for i in range(50)]
    assert len(set(ids)) == 50
    assert all(ID_PATTERN.fullmatch(note_id) for note_id in ids)
    assert len({note_id[:8] for note_id in ids}) == 50  # random from the first character, not a counter
    assert not any(note_id.isdigit() for note_id in ids)


# --- concurrency --------------------------------------------------------------------------------


async def test_fifty_concurrent_creates_and_updates_through_the_sdk_client(idp, alice):
    app = build_app(make_settings())
    async with (
        asyncio.timeout(CALL_TIMEOUT_SECONDS),
        app.router.lifespan_context(app),
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), headers=bearer(alice)) as http_client,
        Client(streamable_http_client(SERVER_URL, http_client=http_client)) as mcp_client,
    ):
        created = await asyncio.gather(
            *(mcp_client.call_tool("create_note", {"title": f"note {i}", "content": f"body {i}"}) for i in range(50))
        )
        assert not any(result.is_error for result in created)
        ids = [result.structured_content["id"] for result in created]
        assert len(set(ids)) == 50
        updated = await asyncio.gather(
            *(
                mcp_client.call_tool("update_note", {"note_id": note_id, "content": f"updated {i}"})
                for i, note_id in enumerate(ids)
            )
        )
        assert not any(result.is_error for result in updated)
        listed = await mcp_client.call_tool("list_notes", {"limit": 100})
    notes = {note["id"]: note for note in listed.structured_content["notes"]}
    assert listed.structured_content["next_cursor"] is None
    assert set(notes) == set(ids)
    for i, note_id in enumerate(ids):
        assert (notes[note_id]["title"], notes[note_id]["content"]) == (f"note {i}", f"updated {i}")


def test_fifty_threads_of_two_users_lose_nothing(client, alice, bob):
    tokens = {"alice": alice, "bob": bob}
    results: dict[tuple[str, int], dict[str, Any]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def create(user: str, i: int) -> None:
        try:
            note = ok(client, tokens[user], "create_note", title=f"{user} {i}", content=f"{user} body {i}")
            with lock:
                results[(user, i)] = note
        except BaseException as exc:  # collected and re-raised below, in the test's thread
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=create, args=(user, i)) for user in tokens for i in range(25)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=CALL_TIMEOUT_SECONDS)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors[0]
    assert len(results) == 50
    for user, token in tokens.items():
        listed = {(note["title"], note["content"]) for note in all_notes(client, token, page_size=7)}
        assert listed == {(f"{user} {i}", f"{user} body {i}") for i in range(25)}


async def test_concurrent_creates_never_pass_the_per_owner_limit(idp, alice):
    app = build_app(make_settings(notes_max_per_owner=3))
    async with (
        asyncio.timeout(CALL_TIMEOUT_SECONDS),
        app.router.lifespan_context(app),
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), headers=bearer(alice)) as http_client,
        Client(streamable_http_client(SERVER_URL, http_client=http_client)) as mcp_client,
    ):
        results = await asyncio.gather(
            *(mcp_client.call_tool("create_note", {"title": f"n{i}", "content": ""}) for i in range(20))
        )
        listed = await mcp_client.call_tool("list_notes", {"limit": 100})
    assert sum(not result.is_error for result in results) == 3
    refusals = {result.content[0].text for result in results if result.is_error}
    assert refusals == {
        "Error executing tool create_note: note limit reached: at most 3 notes per user; delete some first"
    }
    assert len(listed.structured_content["notes"]) == 3


# --- persistence --------------------------------------------------------------------------------


def test_notes_survive_a_restart(idp, alice, bob, tmp_path: Path):
    db_path = str(tmp_path / "notes.db")
    with running_app(notes_db_path=db_path) as client:
        kept = [ok(client, alice, "create_note", title=f"n{i}", content=f"c{i}") for i in range(3)]
        deleted = ok(client, alice, "create_note", title="gone", content="")
        ok(client, alice, "delete_note", note_id=deleted["id"])
        kept[1] = ok(client, alice, "update_note", note_id=kept[1]["id"], content="edited")
    with running_app(notes_db_path=db_path) as client:
        assert all_notes(client, alice) == kept
        assert ok(client, alice, "read_note", note_id=kept[1]["id"])["content"] == "edited"
        assert refused(client, alice, "read_note", note_id=deleted["id"]) == NOT_FOUND_MESSAGE
        assert all_notes(client, bob) == []
        ok(client, alice, "create_note", title="after restart", content="")
        assert len(all_notes(client, alice)) == 4


def test_the_default_database_lands_in_the_working_directory(client, alice, tmp_path: Path):
    ok(client, alice, "create_note", title="t", content="")
    assert (tmp_path / "data" / "notes.db").is_file()

"""The whole app with NOTES_DATABASE_URL: tools on PostgreSQL, and what probes and callers see in an outage."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from starlette.testclient import TestClient

from tests import pg
from tests.support import BASE_URL, make_settings
from tests.tcp_proxy import TcpProxy
from tests.tools.test_notes_tools import UNAVAILABLE, ok, refused
from tools.notes_store import NOT_FOUND_MESSAGE
from tools.notes_store_postgres import PostgresNotesStore
from web.app import build_app

PASSWORD = "app-Secret-9x"
TIMEOUT_SECONDS = 1.0
RECOVERY_SECONDS = 20.0


def proxied(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    return parts._replace(netloc=f"{user}:{quote(PASSWORD)}@127.0.0.1:{proxy.port}").geturl()


@contextmanager
def app_on(url: str, **overrides: Any) -> Iterator[TestClient]:
    settings = make_settings(notes_database_url=url, notes_db_timeout_seconds=TIMEOUT_SECONDS, **overrides)
    with TestClient(build_app(settings), base_url=BASE_URL) as client:
        yield client


def ready_within(client: TestClient, status: int, seconds: float = RECOVERY_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"/readyz did not say {status} within {seconds} s: {client.get('/readyz').text}")


def test_the_store_is_postgres_and_the_tools_use_it(idp, alice, bob, postgres_url: str) -> None:
    with app_on(postgres_url, notes_max_per_owner=2) as client:
        assert isinstance(client.app.state.components.store, PostgresNotesStore)  # type: ignore[attr-defined]
        ready_within(client, 200)
        note = ok(client, alice, "create_note", title="on postgres", content="shared by replicas")
        assert pg.scalar(postgres_url, "SELECT title FROM notes") == "on postgres"
        assert ok(client, alice, "read_note", note_id=note["id"]) == note
        assert refused(client, bob, "read_note", note_id=note["id"]) == NOT_FOUND_MESSAGE
        assert refused(client, alice, "read_note", note_id="A" * 22) == NOT_FOUND_MESSAGE
        ok(client, alice, "create_note", title="second", content="")
        assert "at most 2 notes" in refused(client, alice, "create_note", title="third", content="")


def test_an_outage_is_503_on_readyz_and_a_tool_error_then_heals_by_itself(
    idp, alice, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    proxy = TcpProxy(urlsplit(postgres_url).hostname or "127.0.0.1", urlsplit(postgres_url).port or 5432)
    with app_on(proxied(postgres_url, proxy)) as client:
        client.portal.call(proxy.start)
        try:
            ready_within(client, 200)
            kept = ok(client, alice, "create_note", title="before", content="")

            client.portal.call(proxy.cut)
            started = time.monotonic()
            response = client.get("/readyz")
            assert response.status_code == 503
            assert time.monotonic() - started < 1.0
            assert response.json()["reason"] == "notes store unreachable"
            assert client.get("/healthz").status_code == 200
            started = time.monotonic()
            assert refused(client, alice, "create_note", title="during", content="") == UNAVAILABLE
            assert time.monotonic() - started < TIMEOUT_SECONDS + 1.5

            client.portal.call(proxy.start)
            ready_within(client, 200)
            ok(client, alice, "create_note", title="after", content="")
            titles = [note["title"] for note in ok(client, alice, "list_notes")["notes"]]
            assert titles == [kept["title"], "after"]
        finally:
            client.portal.call(proxy.cut)
    text = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    assert "notes store failure" in text  # operators are told
    assert PASSWORD not in text


def test_started_with_the_database_down_it_listens_and_serves_once_it_is_up(idp, alice, postgres_url: str) -> None:
    proxy = TcpProxy(urlsplit(postgres_url).hostname or "127.0.0.1", urlsplit(postgres_url).port or 5432)
    started = time.monotonic()
    with app_on(proxied(postgres_url, proxy)) as client:
        try:
            assert time.monotonic() - started < 10
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 503
            assert refused(client, alice, "list_notes") == UNAVAILABLE

            client.portal.call(proxy.start)
            ready_within(client, 200)
            note = ok(client, alice, "create_note", title="first", content="")
            assert ok(client, alice, "read_note", note_id=note["id"]) == note
        finally:
            client.portal.call(proxy.cut)


def test_a_sqlite_server_never_loads_psycopg() -> None:
    # psycopg's import is a good part of a start-up's time; a server without NOTES_DATABASE_URL does not pay it.
    code = (
        "import sys; from settings import load_settings; from web.app import build_app; "
        "build_app(load_settings(oauth_issuer='https://idp.example.com/', _env_file=None)); "
        "print('psycopg' in sys.modules)"
    )
    project = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == "False", result.stderr

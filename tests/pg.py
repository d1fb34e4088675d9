"""PostgreSQL for tests: a real server, found once per run, and a fresh database of the run's own.

Where the server comes from, in order: NOTES_TEST_DATABASE_URL when set; else the server on 127.0.0.1:5432 when
one answers (user postgres, trust auth); else a throwaway cluster started with this machine's PostgreSQL binaries
(pytest-postgresql's executor). With none of these the PostgreSQL tests are skipped with one reason, except
under CI=true, where they fail instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

URL_VARIABLE = "NOTES_TEST_DATABASE_URL"
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_FALLBACK_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_SECONDS = 3
TABLES = ("notes", "notes_schema")


def answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS):
            return True
    except psycopg.Error:
        return False


def with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def _pg_ctl() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda path: int(path.split("/")[4]))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _throwaway_cluster(workdir: Path) -> Iterator[str | None]:
    pg_ctl = _pg_ctl()
    if pg_ctl is None or os.geteuid() == 0:  # initdb refuses to run as root
        yield None
        return
    from pytest_postgresql.executors.proc import PostgreSQLExecutor

    port = _free_port()
    executor = PostgreSQLExecutor(
        executable=pg_ctl,
        host="127.0.0.1",
        port=port,
        datadir=str(workdir / "data"),
        unixsocketdir=str(workdir),
        logfile=str(workdir / "postgresql.log"),
        startparams="-w",
        dbname="postgres",
    )
    executor.start()
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        executor.stop()


@contextlib.contextmanager
def server_url(workdir: Path) -> Iterator[str]:
    """An admin URL of a PostgreSQL server for this run; skips (or, under CI, fails) when there is none."""
    explicit = os.environ.get(URL_VARIABLE, "").strip()
    if explicit:
        if not answers(explicit):
            pytest.fail(f"{URL_VARIABLE} is set but no PostgreSQL server answers there")
        yield explicit
        return
    for url in (LOCAL_URL, LOCAL_FALLBACK_URL):
        if answers(url):
            yield url
            return
    with _throwaway_cluster(workdir) as cluster:
        if cluster is not None:
            yield cluster
            return
    reason = (
        f"no PostgreSQL: set {URL_VARIABLE}, run a server on 127.0.0.1:5432 (user postgres), "
        "or install the PostgreSQL server binaries (pg_ctl)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the PostgreSQL tests must run)")
    pytest.skip(reason)


@contextlib.contextmanager
def fresh_database(workdir: Path) -> Iterator[str]:
    """A database created for this run with a unique name, dropped at the end: its URL."""
    with server_url(workdir) as admin_url:
        name = f"notes_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield with_database(admin_url, name)
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def empty(url: str) -> str:
    """Drop the notes tables, so the next store starts from an empty database; returns `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {', '.join(TABLES)}")
    return url


def scalar(url: str, query: str) -> object:
    """One value from `query`, run on an independent connection, as another replica would."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query)
        row = cursor.fetchone() if cursor.description is not None else None
        return None if row is None else row[0]

"""tests/pg.py: where the PostgreSQL tests find a server, and what happens when there is none."""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.outcomes import Failed, Skipped

from tests import pg
from tests.tcp_proxy import free_port


@pytest.fixture
def no_server_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    monkeypatch.setattr(pg, "LOCAL_URL", nowhere)
    monkeypatch.setattr(pg, "LOCAL_FALLBACK_URL", nowhere)
    monkeypatch.setattr(pg, "_pg_ctl", lambda: None)
    monkeypatch.delenv(pg.URL_VARIABLE, raising=False)


@pytest.mark.usefixtures("no_server_anywhere")
def test_without_any_server_the_tests_skip_with_one_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(Skipped, match=r"^no PostgreSQL: set NOTES_TEST_DATABASE_URL"), pg.server_url(tmp_path):
        pass


@pytest.mark.usefixtures("no_server_anywhere")
def test_without_any_server_ci_fails_instead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(Failed, match="CI=true: the PostgreSQL tests must run"), pg.server_url(tmp_path):
        pass


def test_an_explicit_url_that_does_not_answer_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pg.URL_VARIABLE, f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    expected = "NOTES_TEST_DATABASE_URL is set but no PostgreSQL server answers"
    with pytest.raises(Failed, match=expected), pg.server_url(tmp_path):
        pass


def test_each_run_gets_a_fresh_database_that_is_dropped_after(tmp_path: Path) -> None:
    with pg.fresh_database(tmp_path) as url:
        name = url.rsplit("/", 1)[1]
        assert name.startswith("notes_test_")
        assert pg.scalar(url, "SELECT current_database()") == name
        assert pg.scalar(url, "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    with pg.server_url(tmp_path) as admin_url:
        assert pg.scalar(admin_url, f"SELECT COUNT(*) FROM pg_database WHERE datname = '{name}'") == 0

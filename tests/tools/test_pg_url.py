"""NOTES_DATABASE_URL: which URLs start the server, and that its password never shows anywhere."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from settings import SettingsError, load_settings
from tests.test_server_cli import assert_one_line_config_error, run_server
from tools.pg_url import MASK, PasswordFilter, check_database_url, redact, safe_url

PASSWORD = "s3cr3t-Pa55"
passwords = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=4, max_size=40
).filter(lambda text: text.strip() == text and text not in MASK)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:pass@db.example.com:5432/notes",
        "postgres://user:pass@db.example.com/notes",
        "postgresql://user:pass@db.example.com/notes?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        "postgresql://user:p%40ss%2Fw@[::1]:5432/notes?connect_timeout=5&application_name=mcp",
        "postgresql://user@host-a:5432,host-b:5433/notes?target_session_attrs=read-write",
        "postgresql:///notes?host=/var/run/postgresql",
    ],
)
def test_postgresql_urls_are_accepted(url: str) -> None:
    check_database_url(url)
    settings = load_settings(oauth_issuer="https://idp.example.com/", notes_database_url=url)
    assert settings.notes_database_url is not None
    assert settings.notes_database_url.get_secret_value() == url


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://user:{PASSWORD}@db.example.com/notes",
        f"POSTGRESQL://user:{PASSWORD}@db.example.com/notes",  # libpq knows the scheme in lower case only
        f"https://user:{PASSWORD}@db.example.com/notes",
        f"sqlite:///{PASSWORD}.db",
        f"user:{PASSWORD}@db.example.com/notes",
        f"host=db.example.com password={PASSWORD}",  # a libpq key=value string is not a URL
        f"postgresql://user:{PASSWORD}@db.example.com/notes?no_such_option=1",
        f"postgresql://user:{PASSWORD}@db.example.com/notes ",
        f"postgresql://user:{PASSWORD}@[::1/notes",
        f"postgresql://user:{PASSWORD}@db.example.com:99999999999/notes?sslmode=require\n",
    ],
)
def test_other_urls_are_refused_without_repeating_them(url: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(oauth_issuer="https://idp.example.com/", notes_database_url=url)
    message = str(caught.value)
    assert message.startswith("NOTES_DATABASE_URL: ")
    assert "\n" not in message
    assert PASSWORD not in message and "db.example.com" not in message


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_url_means_sqlite(empty: str) -> None:
    settings = load_settings(oauth_issuer="https://idp.example.com/", notes_database_url=empty)
    assert settings.notes_database_url is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=120))
def test_any_text_is_accepted_or_refused_with_a_message_that_does_not_repeat_it(text: str) -> None:
    try:
        check_database_url(text)
    except ValueError as exc:
        if len(text) >= 8:
            assert text not in str(exc)


@settings(max_examples=200, deadline=None)
@given(passwords, st.sampled_from(["", "?sslmode=require", "?password=again"]))
def test_redact_masks_the_password_in_every_form(password: str, query: str) -> None:
    encoded = quote(password, safe="")
    url = f"postgresql://notes:{encoded}@db.internal:5432/notes{query}"
    messages = [
        f'invalid connection option in "{url}"',
        f"connection to server failed: password={password} user=notes",
        f"password='{password}' dbname=notes",
        f"password authentication failed ({encoded})",
        f"something quoted the password alone: {password}",
    ]
    for message in messages:
        clean = redact(message, url)
        assert password not in clean
        assert encoded not in clean


def test_redact_leaves_other_text_alone() -> None:
    url = f"postgresql://notes:{PASSWORD}@db.internal:5432/notes"
    assert redact("connection refused on port 5432", url) == "connection refused on port 5432"
    assert redact(f"failed for {url}", url) == f"failed for {MASK}"


def test_safe_url_keeps_what_an_operator_needs() -> None:
    url = f"postgresql://notes:{PASSWORD}@db.internal:5432/notes?sslmode=require&password={PASSWORD}"
    assert safe_url(url) == "postgresql://notes@db.internal:5432/notes"
    assert safe_url("postgres://db.internal/notes") == "postgres://db.internal/notes"


def test_the_log_filter_masks_messages_arguments_and_tracebacks() -> None:
    url = f"postgresql://notes:{PASSWORD}@db.internal/notes"
    record_filter = PasswordFilter(url)
    try:
        raise RuntimeError(f"cannot parse {url}")
    except RuntimeError:
        record = logging.LogRecord("psycopg", logging.WARNING, __file__, 1, "error with %s", (url,), sys.exc_info())
    assert record_filter.filter(record) is True
    formatted = logging.Formatter().format(record)
    assert PASSWORD not in formatted
    assert "cannot parse" in formatted and "error with" in formatted


# --- start-up ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [f"mysql://user:{PASSWORD}@db.example.com/notes", f"postgresql://user:{PASSWORD}@db.example.com/notes?bad=1"],
)
def test_a_bad_url_stops_start_up_with_one_line(tmp_path: Path, url: str) -> None:
    result = run_server(cwd=tmp_path, OAUTH_ISSUER="https://idp.example.com/", NOTES_DATABASE_URL=url)
    line = assert_one_line_config_error(result, "NOTES_DATABASE_URL")
    assert PASSWORD not in result.stderr + result.stdout
    assert "postgresql://" in line


def test_pool_bounds_are_checked_at_start_up(tmp_path: Path) -> None:
    result = run_server(
        cwd=tmp_path,
        OAUTH_ISSUER="https://idp.example.com/",
        NOTES_DB_POOL_MIN="8",
        NOTES_DB_POOL_MAX="4",
    )
    assert_one_line_config_error(result, "NOTES_DB_POOL_MIN")


@pytest.mark.parametrize(("variable", "value"), [("NOTES_DB_TIMEOUT_SECONDS", "0"), ("NOTES_DB_POOL_MAX", "0")])
def test_pool_settings_are_validated(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}: "):
        load_settings(oauth_issuer="https://idp.example.com/", **{variable.lower(): value})

"""`<NAME>_FILE` for every secret setting: the file's content, one trailing newline removed, is the value; every
problem is one line naming the variable, never the content."""

from __future__ import annotations

from typing import Annotated

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field, SecretStr

import settings as settings_module
from secret_files import MAX_SECRET_FILE_BYTES, SecretFileError, read_secret_file, secret_fields
from settings import Settings, SettingsError, load_settings
from tests.support import secret_file

TOKEN = "0123456789abcdef0123456789abcdef"  # valid for every secret setting (METRICS_TOKEN wants 16+ characters)
MARKER = "Zq7-secret-"  # never in a message, path or variable name: if a message holds it, it leaked the content


def one_line(error: pytest.ExceptionInfo[Exception]) -> str:
    message = str(error.value)
    assert "\n" not in message and "\r" not in message
    return message


# --- which settings are secrets --------------------------------------------------------------------------------


def test_every_secret_setting_is_found_by_its_type():
    assert {"metrics_token", "dev_client_secret"} <= set(secret_fields(Settings))
    assert "oauth_issuer" not in secret_fields(Settings)


def test_a_secret_setting_added_later_reads_its_file_without_being_listed(tmp_path, monkeypatch):
    class LaterSettings(Settings):
        notes_database_url: SecretStr | None = None
        notes_replica_password: Annotated[SecretStr, Field(min_length=4)] = SecretStr("unset")

    assert {"notes_database_url", "notes_replica_password"} <= set(secret_fields(LaterSettings))
    url = "postgresql://mcp:p%40ss@db.internal:5432/notes?sslmode=require"
    monkeypatch.setenv("NOTES_DATABASE_URL_FILE", str(secret_file(tmp_path, url + "\n")))
    monkeypatch.setenv("NOTES_REPLICA_PASSWORD_FILE", str(secret_file(tmp_path, "hunter2", name="replica")))

    loaded = LaterSettings()

    assert loaded.notes_database_url is not None
    assert loaded.notes_database_url.get_secret_value() == url
    assert loaded.notes_replica_password.get_secret_value() == "hunter2"


# --- reading one file ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "value"),
    [
        (b"s3cret", "s3cret"),
        (b"s3cret\n", "s3cret"),
        (b"s3cret\r\n", "s3cret"),
        (b"s3cret\n\n", "s3cret\n"),  # one newline only: the rest is the secret's
        (b"s3cret\r\n\r\n", "s3cret\r\n"),
        (b"s3cret\r", "s3cret\r"),
        (b"  s3cret  \n", "  s3cret  "),  # spaces are kept; the setting's own validator judges them
        ("pässwörd\n".encode(), "pässwörd"),
        (b"line one\nline two\n", "line one\nline two"),
    ],
)
def test_one_trailing_newline_is_removed(tmp_path, content, value):
    assert read_secret_file("X_FILE", str(secret_file(tmp_path, content))) == value


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n", b"   \n", b"\t"])
def test_an_empty_file_is_refused(tmp_path, content):
    with pytest.raises(SecretFileError) as error:
        read_secret_file("METRICS_TOKEN_FILE", str(secret_file(tmp_path, content)))
    assert one_line(error).startswith("METRICS_TOKEN_FILE: ")
    assert "is empty" in str(error.value)


def test_a_missing_file_names_the_variable_and_the_reason(tmp_path):
    with pytest.raises(SecretFileError) as error:
        read_secret_file("METRICS_TOKEN_FILE", str(tmp_path / "nowhere"))
    assert (
        one_line(error) == f"METRICS_TOKEN_FILE: cannot read {str(tmp_path / 'nowhere')!r}: No such file or directory"
    )


def test_a_directory_is_not_a_secret_file(tmp_path):
    with pytest.raises(SecretFileError) as error:
        read_secret_file("METRICS_TOKEN_FILE", str(tmp_path))
    assert one_line(error).endswith("Is a directory")


def test_a_path_through_a_file_names_the_reason(tmp_path):
    # Unreadable even for root (CI runs as root, so file permissions would not stop the read).
    path = secret_file(tmp_path, MARKER) / "token"
    with pytest.raises(SecretFileError) as error:
        read_secret_file("METRICS_TOKEN_FILE", str(path))
    assert one_line(error) == f"METRICS_TOKEN_FILE: cannot read {str(path)!r}: Not a directory"


def test_a_huge_file_is_refused_without_reading_it_all(tmp_path):
    path = secret_file(tmp_path, (MARKER * (MAX_SECRET_FILE_BYTES // len(MARKER) + 2)).encode())
    with pytest.raises(SecretFileError) as error:
        read_secret_file("METRICS_TOKEN_FILE", str(path))
    assert "larger than" in one_line(error)
    assert MARKER not in str(error.value)


def test_invalid_utf8_is_a_clear_error_without_the_content(tmp_path):
    path = secret_file(tmp_path, MARKER.encode() + b"\xff\xfe-more")
    with pytest.raises(SecretFileError) as error:
        read_secret_file("METRICS_TOKEN_FILE", str(path))
    assert one_line(error) == f"METRICS_TOKEN_FILE: {str(path)!r} is not UTF-8 text (bad byte at offset {len(MARKER)})"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=256))
def test_any_bytes_give_the_value_or_one_clear_line(tmp_path, content):
    path = secret_file(tmp_path, content)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    expected = None
    if text is not None:
        expected = text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
        if not expected.strip():
            expected = None
    if expected is not None:
        assert read_secret_file("X_FILE", str(path)) == expected
    else:
        with pytest.raises(SecretFileError) as error:
            read_secret_file("X_FILE", str(path))
        assert one_line(error).startswith(f"X_FILE: {str(path)!r} is ")


# --- through the settings --------------------------------------------------------------------------------------


# A valid value for each secret whose validator asks for a shape (the others take TOKEN).
VALID_SECRET = {"notes_database_url": f"postgresql://mcp:{TOKEN}@db.example.com:5432/notes"}


@pytest.mark.parametrize("field", secret_fields(Settings))
def test_every_secret_setting_reads_its_file(tmp_path, monkeypatch, field):
    value = VALID_SECRET.get(field, TOKEN)
    monkeypatch.setenv(f"{field.upper()}_FILE", str(secret_file(tmp_path, value + "\n")))

    secret = getattr(load_settings(), field)

    assert isinstance(secret, SecretStr)
    assert secret.get_secret_value() == value
    assert type(secret.get_secret_value()) is str
    assert TOKEN not in repr(load_settings())


@pytest.mark.parametrize("field", secret_fields(Settings))
def test_a_variable_and_its_file_together_are_refused(tmp_path, monkeypatch, field):
    name = field.upper()
    monkeypatch.setenv(name, TOKEN)
    monkeypatch.setenv(f"{name}_FILE", str(secret_file(tmp_path, TOKEN)))

    with pytest.raises(SettingsError) as error:
        load_settings()

    assert one_line(error) == f"{name} and {name}_FILE: both are set; set only one of them"


def test_a_variable_in_dotenv_and_its_file_in_the_environment_are_refused_too(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(f"METRICS_TOKEN={TOKEN}\n", encoding="utf-8")
    monkeypatch.setenv("METRICS_TOKEN_FILE", str(secret_file(tmp_path, TOKEN)))

    with pytest.raises(SettingsError, match=r"^METRICS_TOKEN and METRICS_TOKEN_FILE: both are set"):
        load_settings()


def test_an_empty_variable_beside_a_file_counts_as_unset(tmp_path, monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN", "")
    monkeypatch.setenv("METRICS_TOKEN_FILE", str(secret_file(tmp_path, TOKEN)))
    assert load_settings().metrics_token == SecretStr(TOKEN)


def test_an_empty_file_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN_FILE", "")
    assert load_settings().metrics_token is None


def test_the_file_variable_can_come_from_dotenv(tmp_path):
    path = secret_file(tmp_path, TOKEN + "\r\n")
    (tmp_path / ".env").write_text(f"METRICS_TOKEN_FILE={path}\n", encoding="utf-8")
    assert load_settings().metrics_token == SecretStr(TOKEN)


def test_the_environment_wins_over_dotenv_for_the_file_variable_too(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(f"METRICS_TOKEN_FILE={tmp_path / 'nowhere'}\n", encoding="utf-8")
    monkeypatch.setenv("METRICS_TOKEN_FILE", str(secret_file(tmp_path, TOKEN)))
    assert load_settings().metrics_token == SecretStr(TOKEN)


def test_the_file_variable_is_case_insensitive_like_the_others(tmp_path, monkeypatch):
    monkeypatch.setenv("metrics_token_file", str(secret_file(tmp_path, TOKEN)))
    assert load_settings().metrics_token == SecretStr(TOKEN)


def test_a_value_from_a_file_passes_the_same_validators(tmp_path, monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN_FILE", str(secret_file(tmp_path, "short\n")))

    with pytest.raises(SettingsError) as error:
        load_settings()

    assert one_line(error) == (
        "METRICS_TOKEN (from METRICS_TOKEN_FILE): expected at least "
        f"{settings_module.MIN_METRICS_TOKEN_CHARS} characters (e.g. openssl rand -hex 32)"
    )


def test_a_token_with_inner_whitespace_from_a_file_is_refused_without_the_content(tmp_path, monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN_FILE", str(secret_file(tmp_path, f"{MARKER}0123456789 abcdef\n")))

    with pytest.raises(SettingsError) as error:
        load_settings()

    assert one_line(error).startswith("METRICS_TOKEN (from METRICS_TOKEN_FILE): expected a token without spaces")
    assert MARKER not in str(error.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "METRICS_TOKEN_FILE: cannot read {path!r}: No such file or directory"),
        (b"", "METRICS_TOKEN_FILE: {path!r} is empty; expected the secret (or unset METRICS_TOKEN_FILE)"),
        (b"\xc3\x28", "METRICS_TOKEN_FILE: {path!r} is not UTF-8 text (bad byte at offset 0)"),
    ],
)
def test_file_problems_are_one_settings_error_line(tmp_path, monkeypatch, content, expected):
    path = secret_file(tmp_path, content, name="metrics-token")
    monkeypatch.setenv("METRICS_TOKEN_FILE", str(path))

    with pytest.raises(SettingsError) as error:
        load_settings()

    assert one_line(error) == expected.format(path=str(path))


def test_arguments_win_and_their_file_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setenv("DEV_CLIENT_SECRET_FILE", str(tmp_path / "nowhere"))
    assert load_settings(dev_client_secret=SecretStr(TOKEN)).dev_client_secret == SecretStr(TOKEN)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=128))
def test_any_file_content_loads_or_gives_one_line_without_the_content(tmp_path, monkeypatch, content):
    path = secret_file(tmp_path, MARKER.encode() + content, name="metrics-token")
    monkeypatch.setenv("METRICS_TOKEN_FILE", str(path))
    try:
        loaded = load_settings()
    except SettingsError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message
        assert message.startswith(("METRICS_TOKEN_FILE: ", "METRICS_TOKEN (from METRICS_TOKEN_FILE): "))
        assert MARKER not in message
    else:
        text = (MARKER.encode() + content).decode("utf-8")
        expected = text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
        assert loaded.metrics_token == SecretStr(expected)

"""NOTES_DATABASE_URL: checked without echoing it, shown without its password, and its password kept out of logs."""

from __future__ import annotations

import logging
import re
import traceback
from urllib.parse import parse_qsl, unquote, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

SCHEMES = ("postgresql", "postgres")
MASK = "***"
# libpq and psycopg quote the connection string in some errors, as a URL or as key=value pairs.
_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^\s:/@]*:)[^\s@]*@", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def check_database_url(url: str) -> None:
    """Raise ValueError (whose text never contains the URL) unless libpq can use `url` as a PostgreSQL URL."""
    if any(char.isspace() or not char.isprintable() for char in url):
        raise ValueError("expected a postgresql:// URL without spaces or control characters")
    scheme = url.split("://", 1)[0] if "://" in url else ""  # libpq wants it in lower case
    if scheme not in SCHEMES:
        raise ValueError("expected a postgresql://user:password@host:port/database URL (or postgres://)")
    try:
        conninfo_to_dict(url)
    except psycopg.Error:
        raise ValueError(
            "libpq cannot parse it; expected postgresql://user:password@host:port/database with the password "
            "percent-encoded and only libpq parameters (e.g. ?sslmode=require) in the query"
        ) from None


def safe_url(url: str) -> str:
    """The URL for logs and errors: scheme, user, hosts and database; no password, no query."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://(unparsable)"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}@{hosts}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def _secrets_in(url: str) -> list[str]:
    found = [url]
    try:
        parts = urlsplit(url)
        userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
        if ":" in userinfo:
            raw = userinfo.split(":", 1)[1]
            found += [raw, unquote(raw)]
        found += [value for key, value in parse_qsl(parts.query, keep_blank_values=True) if key == "password"]
    except ValueError:
        pass
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    if isinstance(password, str):
        found.append(password)
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def redact(text: str, url: str) -> str:
    """`text` with the URL's password (raw, percent-encoded or decoded) and any quoted password masked."""
    for secret in _secrets_in(url):
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)
    return _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", text)


class PasswordFilter(logging.Filter):
    """On psycopg's loggers: each record's message and traceback with the database password masked."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self._url)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"), self._url)
            record.exc_info = None
        return True

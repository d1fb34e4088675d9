"""Step one of the pipeline: the bearer credential in the request's single `Authorization` header."""

from __future__ import annotations

from collections.abc import Iterable

from auth.errors import InvalidRequest, InvalidToken, MissingToken, Reason


def authorization_value(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The raw value of the single `Authorization` header; the query string is never looked at."""
    value = None
    for name, raw in headers:
        if name.lower() == b"authorization":
            if value is not None:
                raise InvalidRequest(Reason.DUPLICATE_HEADER)
            value = raw
    if value is None:
        raise MissingToken()
    return value


def token_of(value: bytes) -> str:
    """The token in an Authorization header value, which must use the Bearer scheme."""
    scheme, _, token = value.decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer":
        raise MissingToken(Reason.OTHER_SCHEME)
    token = token.strip()
    if not token:
        raise InvalidToken(Reason.EMPTY)
    return token


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The token of the single `Authorization: Bearer` header."""
    return token_of(authorization_value(headers))

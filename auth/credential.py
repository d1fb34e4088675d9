"""Step one of the pipeline: the credential in the request's single `Authorization` header (Bearer or DPoP)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from auth.errors import AuthError, InvalidRequest, InvalidToken, MissingToken, Reason

Scheme = Literal["bearer", "dpop"]
_SCHEMES: dict[str, Scheme] = {"bearer": "bearer", "dpop": "dpop"}


@dataclass(frozen=True, slots=True)
class Credential:
    """The access token and the scheme it came with; the token never appears in repr."""

    scheme: Scheme
    token: str = field(repr=False)


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


def credential_of(value: bytes) -> Credential:
    """The credential in an Authorization header value: the Bearer or the DPoP scheme, in any case."""
    name, _, token = value.decode("latin-1").strip().partition(" ")
    scheme = _SCHEMES.get(name.lower())
    if scheme is None:
        raise MissingToken(Reason.OTHER_SCHEME)
    token = token.strip()
    if not token:
        raise InvalidToken(Reason.EMPTY)
    return Credential(scheme, token)


def presented_scheme(headers: Iterable[tuple[bytes, bytes]]) -> Scheme | None:
    """The scheme of the single `Authorization` header, even when its token is empty: the refusal then
    answers in the scheme the client spoke. None when there is no such header or the scheme is another."""
    try:
        value = authorization_value(headers)
    except AuthError:
        return None
    return _SCHEMES.get(value.decode("latin-1").strip().partition(" ")[0].lower())


def request_credential(headers: Iterable[tuple[bytes, bytes]]) -> Credential:
    """The credential of the single `Authorization` header."""
    return credential_of(authorization_value(headers))


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The token of the single `Authorization: Bearer` header (where only Bearer is spoken, e.g. /metrics)."""
    credential = request_credential(headers)
    if credential.scheme != "bearer":
        raise MissingToken(Reason.OTHER_SCHEME)
    return credential.token

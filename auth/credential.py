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


def single_header(headers: Iterable[tuple[bytes, bytes]], name: bytes, duplicate: Reason) -> bytes | None:
    """The raw value of the header `name` (lower case), None when absent; a second one is refused with
    `duplicate` (a 400) rather than one of them picked."""
    value = None
    for key, raw in headers:
        if key.lower() == name:
            if value is not None:
                raise InvalidRequest(duplicate)
            value = raw
    return value


def authorization_value(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The raw value of the single `Authorization` header; the query string is never looked at."""
    value = single_header(headers, b"authorization", Reason.DUPLICATE_HEADER)
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

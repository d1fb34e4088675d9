"""A token's claims, checked by type once: nothing else reads a raw claim.

Every claim this server looks at is typed here; a value of another JSON type (or a string that is not valid
Unicode, e.g. a lone surrogate escaped in the JSON) refuses the token with CLAIMS_MALFORMED. IdP dialects are
normalised here too: scopes from `scope`/`scp`/`permissions`/`roles`, the client from `azp`/`client_id`/`cid`/
`appid`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from auth.errors import InvalidToken, Reason

# Latest NumericDate a datetime can hold (9999-12-31T23:59:59Z).
MAX_NUMERIC_DATE = 253402300799
CLIENT_ID_CLAIMS = ("azp", "client_id", "cid", "appid")
_OPTIONAL_TEXT = (
    "sub",
    "jti",
    "token_use",
    "token_type",
    "tid",
    "oid",
    "gty",
    "idtyp",
    "azp",
    "client_id",
    "cid",
    "appid",
)


def shown(value: object, limit: int = 120) -> str:
    """A claim value for the server log: ASCII repr (no line breaks or odd code points get in), truncated."""
    try:
        text = ascii(value)
    except RecursionError:
        text = f"<deeply nested {type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "...'"


def _malformed(name: str, value: object, expected: str) -> InvalidToken:
    return InvalidToken(Reason.CLAIMS_MALFORMED, detail=f"{name} {shown(value, 60)} is not {expected}")


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _malformed(name, value, "a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _malformed(name, value, "valid Unicode text") from None
    return value


def _optional_text(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return None if value is None else _text(name, value)


def _texts(name: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _malformed(name, value, "a list of strings")
    return tuple(_text(name, item) for item in value)


def _numeric_date(raw: Mapping[str, Any], name: str) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _malformed(name, value, "a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise _malformed(name, value, "a finite number")
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise _malformed(name, value, "a date between 1970 and 9999")
    return float(value)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    issuer: str | None
    subject: str | None
    audience: tuple[str, ...] | None  # None: no aud claim; a string aud is a one-item tuple
    expires: float | None
    not_before: float | None
    issued_at: float | None
    token_id: str | None
    client_id: str | None  # the first of azp, client_id, cid, appid
    raw_scopes: tuple[str, ...]  # every dialect, in order, before any prefix is applied
    token_use: str | None
    token_type: str | None  # an introspection answer's (RFC 7662 section 2.2): a refresh token is refused
    tenant: str | None
    object_id: str | None
    grant_type: str | None
    id_type: str | None
    confirmation: object | None  # `cnf`: the token is bound to a key (RFC 7800)
    has_scp: bool
    has_scope: bool
    id_token_markers: bool  # `nonce` or `at_hash`: what ID tokens carry
    raw: Mapping[str, Any]

    @classmethod
    def parse(cls, raw: object) -> TokenClaims:
        """The typed claims of a decoded payload; InvalidToken(CLAIMS_MALFORMED) for any claim of the wrong type."""
        if not isinstance(raw, dict):
            raise InvalidToken(Reason.MALFORMED, detail="the payload is not a JSON object")
        text = {name: _optional_text(raw, name) for name in _OPTIONAL_TEXT}
        issuer = _optional_text(raw, "iss")
        aud = raw.get("aud")
        if aud in (None, "", []):
            audience = None  # an empty aud names no audience: as if it were absent
        else:
            audience = (_text("aud", aud),) if isinstance(aud, str) else _texts("aud", aud)
        scopes: list[str] = []
        scope = raw.get("scope")
        if scope is not None:
            scopes += _text("scope", scope).split()
        scp = raw.get("scp")
        if scp is not None:
            scopes += _text("scp", scp).split() if isinstance(scp, str) else _texts("scp", scp)
        for name in ("permissions", "roles"):
            value = raw.get(name)
            if value is not None:
                scopes += [_text(name, value)] if isinstance(value, str) else _texts(name, value)
        client_id = next((text[name] for name in CLIENT_ID_CLAIMS if text[name]), None)
        return cls(
            issuer=issuer,
            subject=text["sub"] or None,
            audience=audience,
            expires=_numeric_date(raw, "exp"),
            not_before=_numeric_date(raw, "nbf"),
            issued_at=_numeric_date(raw, "iat"),
            token_id=text["jti"] or None,
            client_id=client_id,
            raw_scopes=tuple(scopes),
            token_use=text["token_use"],
            token_type=text["token_type"],
            tenant=text["tid"],
            object_id=text["oid"],
            grant_type=text["gty"],
            id_type=text["idtyp"],
            confirmation=raw.get("cnf"),
            has_scp="scp" in raw,
            has_scope="scope" in raw,
            id_token_markers="nonce" in raw or "at_hash" in raw,
            raw=MappingProxyType(raw),
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> TokenClaims:
        try:
            raw = json.loads(payload)
        except (ValueError, RecursionError):
            raise InvalidToken(Reason.MALFORMED, detail="the payload is not JSON") from None
        return cls.parse(raw)

    @classmethod
    def from_introspection(cls, answer: Mapping[str, Any], issuer: str) -> TokenClaims:
        """The claims of an active introspection answer (RFC 7662 section 2.2), typed as a JWT's are. The answer
        names its issuer in `iss` when it has one; without it, the IdP asked is `issuer`."""
        raw = dict(answer)
        if raw.get("iss") is None:
            raw["iss"] = issuer
        return cls.parse(raw)

    def scopes(self, prefix: str = "") -> frozenset[str]:
        """With a prefix (Cognito's `{resource-server-id}/`), `{prefix}{scope}` also counts as `{scope}`."""
        scopes = list(self.raw_scopes)
        if prefix:
            scopes += [scope.removeprefix(prefix) for scope in scopes if scope.startswith(prefix) and scope != prefix]
        return frozenset(scopes)

    @property
    def principal_subject(self) -> str | None:
        return self.subject or self.client_id

    @property
    def is_machine(self) -> bool:
        """Client-credentials tokens, in each IdP's dialect."""
        subject = self.principal_subject
        if self.grant_type == "client-credentials" or self.id_type == "app":
            return True
        if self.tenant is not None and not self.has_scp and self.object_id is not None and self.object_id == subject:
            return True  # Entra app-only (idtyp is an optional claim): no scp, the subject is the service principal
        return self.client_id is not None and subject in (self.client_id, f"{self.client_id}@clients")

    @property
    def looks_like_id_token(self) -> bool:
        return (
            self.token_use == "id"  # noqa: S105 - a claim value, not a secret
            or self.id_token_markers
            or (
                self.client_id is not None
                and self.raw.get("azp") == self.client_id
                and self.audience == (self.client_id,)
                and not self.has_scope
                and not self.has_scp
            )
        )

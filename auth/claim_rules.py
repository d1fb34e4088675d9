"""Which issuers, audiences, clients and token kinds this server accepts: the IdP-specific rules, as data."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auth.errors import InvalidToken
from settings import Settings

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ENTRA_ISSUER_TEMPLATES = ("https://login.microsoftonline.com/{tid}/v2.0", "https://sts.windows.net/{tid}/")


def shown(value: object, limit: int = 120) -> str:
    """A claim value for the server log: repr (no line breaks can be injected), truncated."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


@dataclass(frozen=True, slots=True)
class ClaimRules:
    issuers: tuple[str, ...]
    audiences: tuple[str, ...]
    # Cognito access tokens carry no aud unless resource-bound: then it must match, else client_ids decide.
    audience_optional: bool = False
    client_ids: frozenset[str] = frozenset()
    allowed_tenants: frozenset[str] = frozenset()  # Entra multi-tenant: iss from a template, tid listed
    token_use: str | None = None  # Cognito: "access" (an ID token says "id")
    required_typ: str | None = None  # e.g. "at+jwt" (RFC 9068)
    scope_prefix: str = ""  # Cognito custom scopes: "{resource-server-id}/"

    @classmethod
    def from_settings(cls, settings: Settings) -> ClaimRules:
        return cls(
            issuers=() if settings.entra_multi_tenant else settings.accepted_issuers,
            audiences=tuple(settings.oauth_audience),
            audience_optional=not settings.checks_audience,
            client_ids=frozenset(settings.oauth_client_ids),
            allowed_tenants=frozenset(settings.oauth_allowed_tenants) if settings.entra_multi_tenant else frozenset(),
            token_use="access" if settings.oauth_provider == "cognito" else None,
            required_typ=settings.oauth_required_typ or None,
            scope_prefix=settings.oauth_scope_prefix,
        )

    def check_header(self, header: Mapping[str, Any]) -> None:
        if self.required_typ is None:
            return
        typ = header.get("typ")
        wanted = self.required_typ.lower()
        if not isinstance(typ, str) or typ.lower() not in (wanted, f"application/{wanted}"):
            raise InvalidToken(
                "token type is not accepted", detail=f"header typ {shown(typ)}, expected {self.required_typ!r}"
            )

    def check_issuer(self, claims: Mapping[str, Any]) -> None:
        issuer = claims.get("iss")
        if self.allowed_tenants:
            self._check_tenant_issuer(issuer, claims.get("tid"))
        elif issuer not in self.issuers:
            raise InvalidToken("token issuer is not accepted", detail=issuer_hint(issuer, self.issuers))

    def _check_tenant_issuer(self, issuer: object, tenant: object) -> None:
        if not isinstance(tenant, str) or not _GUID.match(tenant):
            raise InvalidToken("token issuer is not accepted", detail=f"tid {shown(tenant)} is not a tenant GUID")
        if issuer not in {template.format(tid=tenant) for template in ENTRA_ISSUER_TEMPLATES}:
            raise InvalidToken(
                "token issuer is not accepted", detail=f"issuer {shown(issuer)} does not belong to tid {tenant}"
            )
        if tenant not in self.allowed_tenants:
            raise InvalidToken(
                "token issuer is not accepted", detail=f"tenant {tenant} is not in OAUTH_ALLOWED_TENANTS"
            )

    def check_claims(self, claims: Mapping[str, Any], client_id: str | None) -> None:
        """Rules beyond iss/aud/lifetime, run on verified claims."""
        check_not_key_bound(claims)
        if self.token_use is not None and claims.get("token_use") != self.token_use:
            hint = " (this looks like an ID token)" if claims.get("token_use") == "id" else ""
            raise InvalidToken(
                "token is not an access token",
                detail=f"token_use {shown(claims.get('token_use'))}, expected {self.token_use!r}{hint}",
            )
        if self.audience_optional and "aud" in claims:
            aud = claims["aud"]
            audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else [None]
            if not any(isinstance(a, str) and a in self.audiences for a in audiences):
                detail = f"audience {shown(aud)}, expected one of {list(self.audiences)}"
                raise InvalidToken("token audience is not accepted", detail=detail)
        if self.client_ids and client_id not in self.client_ids:
            raise InvalidToken(
                "token client is not accepted",
                detail=f"client id {shown(client_id)} is not in OAUTH_CLIENT_IDS {sorted(self.client_ids)}",
            )


def check_not_key_bound(claims: Mapping[str, Any]) -> None:
    """A token bound to a key (`cnf`) is never a plain bearer token: whoever stole it would not need the key.
    DPoP-bound (`jkt`, RFC 9449 section 7) and certificate-bound (`x5t#S256`, RFC 8705 section 3) alike."""
    if "cnf" not in claims:
        return
    members = claims["cnf"] if isinstance(claims["cnf"], Mapping) else {}
    if "jkt" in members:
        why = "cnf.jkt: a DPoP-bound token sent with the Bearer scheme (RFC 9449 section 7)"
    elif "x5t#S256" in members:
        why = "cnf.x5t#S256: a certificate-bound token sent without its certificate (RFC 8705 section 3)"
    else:
        why = "cnf: a key-bound token sent as a bearer token (RFC 7800)"
    raise InvalidToken("token is bound to a key and cannot be used as a bearer token", detail=why)


def issuer_hint(issuer: object, expected: tuple[str, ...]) -> str:
    """Why an issuer did not match, in the words a user needs."""
    detail = f"issuer {shown(issuer)}, expected {' or '.join(repr(e) for e in expected)}"
    if not isinstance(issuer, str):
        return detail
    if any(issuer.rstrip("/") == e.rstrip("/") for e in expected):
        return detail + " (they differ only by a trailing slash: the issuer is compared exactly)"
    if issuer.startswith("https://sts.windows.net/") and any("login.microsoftonline.com" in e for e in expected):
        return detail + (
            " (this looks like an Entra v1 token: set accessTokenAcceptedVersion=2 in the API's manifest, "
            "or use OAUTH_PROVIDER=entra, which accepts both)"
        )
    if "okta.com" in issuer and "/oauth2/" not in issuer:
        return detail + " (Okta org authorization server tokens cannot be validated: use a custom authorization server)"
    return detail

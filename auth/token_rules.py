"""The token rules, written once as objects: the verifier enforces them, the refusal log and the doctor explain
with them. IdP differences are data here (issuers, tenants, audiences, token_use, client ids), never
`if provider == ...` in the verifier."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from auth.claims import TokenClaims, shown
from auth.errors import InvalidToken, Reason
from auth.principal import Principal
from settings import Settings

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ENTRA_ISSUER_TEMPLATES = ("https://login.microsoftonline.com/{tid}/v2.0", "https://sts.windows.net/{tid}/")
GRAPH_AUDIENCES = frozenset({"https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"})


class Rule(Protocol):
    def label(self, claims: TokenClaims) -> str:
        """What the rule asks of these claims, as the doctor shows it."""
        ...

    def check(self, claims: TokenClaims, now: float) -> None:
        """Nothing when the claims pass; InvalidToken (its detail says why, with the usual cause) otherwise."""
        ...


def when(moment: float) -> str:
    try:
        return datetime.fromtimestamp(moment, tz=UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return repr(moment)


@dataclass(frozen=True, slots=True)
class LifetimeRule:
    leeway: float

    def label(self, claims: TokenClaims) -> str:
        if claims.expires is None:
            return "has an exp claim"
        return f"expires {when(claims.expires)} (now {when(time.time())})"

    def check(self, claims: TokenClaims, now: float) -> None:
        if claims.expires is None:
            raise InvalidToken(Reason.MISSING_CLAIM, detail="no exp claim")
        if claims.expires + self.leeway <= now:
            raise InvalidToken(Reason.EXPIRED, detail=f"expired {when(claims.expires)}; get a fresh token")
        for name, moment in (("nbf", claims.not_before), ("iat", claims.issued_at)):
            if moment is not None and moment - self.leeway > now:
                detail = f"{name} {when(moment)} is ahead of now {when(now)}: clock skew? see OAUTH_LEEWAY_SECONDS"
                raise InvalidToken(Reason.NOT_YET_VALID, detail=detail)


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


@dataclass(frozen=True, slots=True)
class IssuerRule:
    """Compared exactly; Entra multi-tenant: the issuer from a template and the token's tid, the tid listed."""

    issuers: tuple[str, ...]
    allowed_tenants: frozenset[str] = frozenset()

    def label(self, claims: TokenClaims) -> str:
        return f"issuer {shown(claims.issuer)} is accepted"

    def check(self, claims: TokenClaims, now: float) -> None:
        issuer, tenant = claims.issuer, claims.tenant
        if issuer is None:
            raise InvalidToken(Reason.MISSING_CLAIM, detail="no iss claim")
        if not self.allowed_tenants:
            if issuer not in self.issuers:
                raise InvalidToken(Reason.ISSUER, detail=issuer_hint(issuer, self.issuers))
            return
        if tenant is None or not _GUID.match(tenant):
            raise InvalidToken(Reason.ISSUER, detail=f"tid {shown(tenant)} is not a tenant GUID")
        if issuer not in {template.format(tid=tenant) for template in ENTRA_ISSUER_TEMPLATES}:
            raise InvalidToken(Reason.ISSUER, detail=f"issuer {shown(issuer)} does not belong to tid {tenant}")
        if tenant not in self.allowed_tenants:
            raise InvalidToken(Reason.ISSUER, detail=f"tenant {tenant} is not in OAUTH_ALLOWED_TENANTS")


@dataclass(frozen=True, slots=True)
class AudienceRule:
    """One of ours must be in `aud`. Cognito access tokens carry no aud unless resource-bound (`optional`):
    then a present aud must match, and the client ids decide."""

    audiences: tuple[str, ...]
    optional: bool = False

    def label(self, claims: TokenClaims) -> str:
        return f"audience {shown(_aud_shown(claims))} is accepted"

    def check(self, claims: TokenClaims, now: float) -> None:
        if claims.audience is None:
            if self.optional:
                return
            raise InvalidToken(Reason.MISSING_CLAIM, detail=self.hint(claims))
        if not any(audience in self.audiences for audience in claims.audience):
            raise InvalidToken(Reason.AUDIENCE, detail=self.hint(claims))

    def hint(self, claims: TokenClaims, *, graph_header: bool = False) -> str:
        detail = f"audience {shown(_aud_shown(claims))}, expected one of {list(self.audiences)}"
        audiences = claims.audience or ()
        if graph_header or any(audience in GRAPH_AUDIENCES for audience in audiences):
            return detail + (
                " (this is a Microsoft Graph token, which cannot be validated by anyone but Graph: "
                "request a token for your own API, e.g. scope=api://<app-id>/.default)"
            )
        if claims.looks_like_id_token:
            return detail + " (this looks like an ID token: send the access token instead)"
        if audiences and all(audience.endswith("/userinfo") for audience in audiences):
            return detail + " (an Auth0 token with no API audience: request it with audience=<your API identifier>)"
        if claims.audience is None:
            return detail + " (the token has no aud claim: Cognito access tokens have none, use OAUTH_PROVIDER=cognito)"
        return detail


def _aud_shown(claims: TokenClaims) -> object:
    return claims.raw.get("aud")  # as sent: a string or a list


@dataclass(frozen=True, slots=True)
class TokenUseRule:
    """Cognito: `token_use` must be "access" (an ID token says "id")."""

    token_use: str

    def label(self, claims: TokenClaims) -> str:
        return "is an access token"

    def check(self, claims: TokenClaims, now: float) -> None:
        if claims.token_use != self.token_use:
            hint = " (this looks like an ID token)" if claims.token_use == "id" else ""  # noqa: S105 - a claim value
            detail = f"token_use {shown(claims.token_use)}, expected {self.token_use!r}{hint}"
            raise InvalidToken(Reason.NOT_ACCESS_TOKEN, detail=detail)


REFRESH_TOKEN_TYPES = frozenset({"refresh_token", "urn:ietf:params:oauth:token-type:refresh_token"})


@dataclass(frozen=True, slots=True)
class TokenTypeRule:
    """A refresh token is never an access token: introspection answers say which one they describe in
    `token_type` (RFC 7662 section 2.2; Ory Hydra in `token_use`); a JWT rarely carries either, then it passes."""

    def label(self, claims: TokenClaims) -> str:
        return f"is not a refresh token (token_type {shown(claims.token_type)})"

    def check(self, claims: TokenClaims, now: float) -> None:
        for name, value in (("token_type", claims.token_type), ("token_use", claims.token_use)):
            if value is not None and value.lower() in REFRESH_TOKEN_TYPES:
                detail = f"{name} {shown(value)}: a refresh token, send the access token instead"
                raise InvalidToken(Reason.NOT_ACCESS_TOKEN, detail=detail)


@dataclass(frozen=True, slots=True)
class ClientRule:
    client_ids: frozenset[str]

    def label(self, claims: TokenClaims) -> str:
        return f"client {shown(claims.client_id)} is in OAUTH_CLIENT_IDS"

    def check(self, claims: TokenClaims, now: float) -> None:
        if claims.client_id not in self.client_ids:
            detail = f"client id {shown(claims.client_id)} is not in OAUTH_CLIENT_IDS {sorted(self.client_ids)}"
            raise InvalidToken(Reason.CLIENT, detail=detail)


@dataclass(frozen=True, slots=True)
class SubjectRule:
    def label(self, claims: TokenClaims) -> str:
        return f"names a subject or client ({shown(claims.principal_subject)})"

    def check(self, claims: TokenClaims, now: float) -> None:
        if not claims.principal_subject:
            raise InvalidToken(Reason.NO_SUBJECT, detail="no sub and no client id claim")


def confirmation_of(cnf: object) -> Mapping[str, str] | None:
    """The `cnf` claim's string members; None only when there is no cnf. A cnf of another shape is still a binding
    (an empty one, which no request can satisfy): a key-bound token never passes as a bearer token."""
    if cnf is None:
        return None
    if not isinstance(cnf, Mapping):
        return {}
    return {name: value for name, value in cnf.items() if isinstance(name, str) and isinstance(value, str)}


@dataclass(frozen=True, slots=True)
class TokenRules:
    """Every rule a token's header and claims must pass, for the configured IdP."""

    issuer: IssuerRule
    audience: AudienceRule
    leeway: float = 30
    required_typ: str | None = None  # e.g. "at+jwt" (RFC 9068)
    scope_prefix: str = ""  # Cognito custom scopes: "{resource-server-id}/"
    token_use: str | None = None
    client_ids: frozenset[str] = frozenset()
    clock: Callable[[], float] = field(default=time.time, compare=False)

    @classmethod
    def create(
        cls,
        *,
        issuers: tuple[str, ...],
        audiences: tuple[str, ...],
        audience_optional: bool = False,
        allowed_tenants: frozenset[str] = frozenset(),
        **options: Any,
    ) -> TokenRules:
        return cls(
            issuer=IssuerRule(issuers, allowed_tenants),
            audience=AudienceRule(audiences, audience_optional),
            **options,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenRules:
        """The rules of the issuer the OAUTH_* variables describe."""
        from auth.issuer_config import IssuerConfig  # here: issuer_config builds on this module

        return IssuerConfig.from_settings(settings).token_rules()

    @property
    def claim_rules(self) -> tuple[Rule, ...]:
        """In the order they are checked: lifetime first, as a client needs to hear it first."""
        rules: list[Rule] = [LifetimeRule(self.leeway), self.issuer, TokenTypeRule()]
        if self.token_use is not None:
            rules.append(TokenUseRule(self.token_use))  # before the audience: an ID token's aud is its client
        rules.append(self.audience)
        if self.client_ids:
            rules.append(ClientRule(self.client_ids))
        rules.append(SubjectRule())
        return tuple(rules)  # a key binding (cnf) is checked per request, by auth.binding

    def typ_accepted(self, header: Mapping[str, Any]) -> bool:
        if self.required_typ is None:
            return True
        typ = header.get("typ")
        wanted = self.required_typ.lower()
        return isinstance(typ, str) and typ.lower() in (wanted, f"application/{wanted}")

    def check_header(self, header: Mapping[str, Any]) -> None:
        if not self.typ_accepted(header):
            detail = f"header typ {shown(header.get('typ'))}, expected {self.required_typ!r}"
            raise InvalidToken(Reason.TYPE, detail=detail)

    def check(self, claims: TokenClaims) -> Principal:
        """Every claim rule, then the caller the claims name."""
        now = self.clock()
        for rule in self.claim_rules:
            rule.check(claims, now)
        return self.principal(claims)

    def principal(self, claims: TokenClaims) -> Principal:
        subject = claims.principal_subject
        if not subject or claims.issuer is None or claims.expires is None:
            raise InvalidToken(Reason.NO_SUBJECT)
        return Principal(
            subject=subject,
            client_id=claims.client_id,
            issuer=claims.issuer,
            audience=claims.audience or (),
            scopes=claims.scopes(self.scope_prefix),
            expires_at=datetime.fromtimestamp(claims.expires, tz=UTC),
            issued_at=None if claims.issued_at is None else datetime.fromtimestamp(claims.issued_at, tz=UTC),
            token_id=claims.token_id,
            is_machine=claims.is_machine,
            confirmation=confirmation_of(claims.confirmation),
            claims=claims.raw,
        )

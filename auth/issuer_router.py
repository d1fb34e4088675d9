"""Several trusted issuers: a token goes to the one its exact, unverified `iss` names, whose own key set and
rules then verify it, so a key of issuer B never verifies a token that says issuer A. An unknown `iss` is
refused before any fetch; the `iss` read here only chooses the verifier, which checks it again after the
signature. A token that is not a JWT names no issuer: the issuers that introspect are asked about it in file
order, and the first active answer (which passes that issuer's rules) wins.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping

from auth.errors import IntrospectionUnavailable, InvalidToken, Reason
from auth.issuer_config import IssuerConfig
from auth.jwks_cache import JWKSCache
from auth.jwt_verifier import JwtVerifier
from auth.principal import Principal
from auth.token_rules import issuer_hint
from auth.token_source import TokenSource
from auth.tooling.diagnostics import shape_hint

# The issuer label of an outcome no configured issuer judged (bounded, as metric labels must be).
OTHER_ISSUER = "other"  # a JWT naming an issuer not trusted here
NO_ISSUER = "none"  # no token, or none whose issuer could be read


class IssuerVerifier:
    """One trusted issuer: its settings, its key set, its JWT verifier, and its token source (the JWT verifier
    and, when the issuer introspects, its introspector)."""

    def __init__(
        self, config: IssuerConfig, keys: JWKSCache, verifier: JwtVerifier, source: TokenSource | None = None
    ) -> None:
        self.config = config
        self.keys = keys
        self.verifier = verifier
        self.source = source or TokenSource(verifier)

    @property
    def issuer(self) -> str:
        return self.config.issuer

    @property
    def max_token_bytes(self) -> int:
        return self.verifier.max_token_bytes

    async def verify(self, token: str) -> Principal:
        return await self.source.verify(token)

    def explain(self, token: str, exc: InvalidToken) -> str:
        return self.source.explain(token, exc)

    async def aclose(self) -> None:
        await self.keys.aclose()
        await self.source.aclose()


def unverified_issuer(token: object, max_token_bytes: int) -> str:
    """The `iss` a JWS says it comes from, signature NOT checked; InvalidToken when it says none."""
    if not isinstance(token, str):
        raise InvalidToken(Reason.MALFORMED, detail=f"not a string: {type(token).__name__}")
    if len(token) > max_token_bytes:
        raise InvalidToken(Reason.TOO_LARGE)
    if token.count(".") != 2:
        raise InvalidToken(Reason.NOT_JWT, detail="not three dot-separated parts")
    part = token.split(".")[1]
    try:
        payload = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, RecursionError):  # bad base64 or JSON, non-ASCII text, too many digits, deep nesting
        raise InvalidToken(Reason.MALFORMED, detail="payload is not base64url-encoded JSON") from None
    if not isinstance(payload, dict):
        raise InvalidToken(Reason.MALFORMED, detail="payload is not a JSON object")
    issuer = payload.get("iss")
    if issuer is None:
        raise InvalidToken(Reason.MISSING_CLAIM, detail="no iss claim")
    if not isinstance(issuer, str):
        raise InvalidToken(Reason.CLAIMS_MALFORMED, detail=f"iss is a {type(issuer).__name__}, not a string")
    return issuer


class IssuerRouter:
    """Verifies a token with the issuer it names. With one issuer every token goes to it (its issuer rule
    refuses the others), exactly as without the router."""

    def __init__(self, issuers: Iterable[IssuerVerifier], *, max_token_bytes: int) -> None:
        self.issuers = tuple(issuers)
        if not self.issuers:
            raise ValueError("at least one issuer is required")
        self.max_token_bytes = max_token_bytes
        by_iss: dict[str, IssuerVerifier] = {}
        for issuer in self.issuers:
            for iss in issuer.config.routing_issuers:
                by_iss.setdefault(iss, issuer)  # the file loader refuses an iss claimed twice
        self._by_iss = by_iss
        self._single = self.issuers[0] if len(self.issuers) == 1 else None
        self._introspecting = tuple(issuer for issuer in self.issuers if issuer.config.introspects)

    @property
    def key_sets(self) -> Mapping[str, JWKSCache]:
        """Each issuer's key set, by its configured issuer string, in file order."""
        return {issuer.issuer: issuer.keys for issuer in self.issuers}

    def route(self, token: str) -> IssuerVerifier:
        """The issuer whose keys and rules decide about this token; InvalidToken when none may."""
        if self._single is not None:
            return self._single
        # A token that is not a JWT names no issuer: today no issuer can check it (introspection routes it).
        issuer = unverified_issuer(token, self.max_token_bytes)
        found = self._by_iss.get(issuer)
        if found is None:
            raise InvalidToken(Reason.ISSUER, detail=issuer_hint(issuer, tuple(self._by_iss)))
        return found

    async def verify(self, token: str) -> Principal:
        """The caller the token names; InvalidToken (or a 503 error for its issuer's keys or introspection)."""
        if self._single is not None:
            return await self._single.verify(token)
        try:
            issuer = self.route(token)
        except InvalidToken as exc:
            if exc.reason is not Reason.NOT_JWT or not self._introspecting:
                raise
            return await self._introspected(token)
        return await issuer.verify(token)

    async def _introspected(self, token: str) -> Principal:
        """An opaque token, asked about at each introspecting issuer in file order: the first active answer that
        passes its issuer's rules wins; while one could not answer and none accepted, the 503 stands."""
        failures: list[InvalidToken | IntrospectionUnavailable] = []
        for issuer in self._introspecting:
            try:
                return await issuer.verify(token)
            except (IntrospectionUnavailable, InvalidToken) as exc:
                failures.append(exc)
        raise next((exc for exc in failures if isinstance(exc, IntrospectionUnavailable)), failures[0])

    def explain(self, token: str, exc: InvalidToken) -> str:
        """The refusal log's explanation, by the rules of the issuer the token names. Never the token."""
        try:
            issuer = self.route(token)
        except InvalidToken:
            return f"{exc.detail}; {shape_hint(token)}" if exc.reason is Reason.NOT_JWT else exc.detail
        return issuer.explain(token, exc)

    def issuer_label(self, token: str, principal: Principal | None = None) -> str:
        """The configured issuer whose token this is, OTHER_ISSUER or NO_ISSUER: a bounded metric label. An
        accepted token (its principal given) from the one issuer needs no second look at the payload."""
        if principal is not None and self._single is not None:
            return self._single.issuer
        if principal is not None:  # accepted: its issuer is one of ours (an introspected token has no iss to read)
            found = self._by_iss.get(principal.issuer)
            return found.issuer if found is not None else OTHER_ISSUER
        try:
            issuer = unverified_issuer(token, self.max_token_bytes)
        except InvalidToken:
            return NO_ISSUER
        found = self._by_iss.get(issuer)
        return found.issuer if found is not None else OTHER_ISSUER

"""One issuer's tokens, whichever way they are checked: a JWT locally (JwtVerifier), anything else by asking the
IdP (Introspector, RFC 7662) when introspection is configured; with `introspect_jwts`, a JWT that verifies is also
asked about, so a revoked JWT is refused within the introspection cache time.

With introspection on, a JWT the server cannot judge locally is asked about too: its signing key is not published
(Okta's org authorization server) or it leaves required claims out (Keycloak's lightweight access tokens). The
answer then passes every rule itself; a JWT refused locally for any other reason (expired, another audience, a bad
signature) stays refused without a call."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from auth.errors import InvalidToken, Reason
from auth.introspection import Introspector, discovered_endpoint
from auth.jwt_verifier import JwtVerifier
from auth.principal import Principal
from auth.token_rules import AudienceRule, TokenRules
from settings import Settings

if TYPE_CHECKING:
    from auth.issuer_config import IssuerConfig

# Local refusals the IdP's answer may overrule: what the JWT does not show, not what it shows to be wrong.
UNDECIDABLE_LOCALLY = frozenset({Reason.KEY_UNKNOWN, Reason.MISSING_CLAIM})


def is_jwt_shaped(token: str) -> bool:
    """Three dot-separated parts: a JWS. Anything else (opaque, JWE, garbage) is the IdP's to judge."""
    return token.count(".") == 2


class TokenSource:
    """The verify step for one issuer (auth.token_verifier.TokenVerifier)."""

    def __init__(
        self,
        jwt_verifier: JwtVerifier,
        introspector: Introspector | None = None,
        *,
        introspect_jwts: bool = False,
    ) -> None:
        if introspect_jwts and introspector is None:
            raise ValueError("introspect_jwts needs an introspector")
        self.jwt_verifier = jwt_verifier
        self.introspector = introspector
        self.introspect_jwts = introspect_jwts
        self.max_token_bytes = jwt_verifier.max_token_bytes
        self.rules = jwt_verifier.rules
        self.keys = jwt_verifier.keys

    async def verify(self, token: str) -> Principal:
        if self.introspector is None:
            return await self.jwt_verifier.verify(token)  # NOT_JWT for an opaque token, as the doctor explains
        if len(token) > self.max_token_bytes:
            raise InvalidToken(Reason.TOO_LARGE)
        if not is_jwt_shaped(token):
            return await self.introspector.verify(token)
        try:
            principal = await self.jwt_verifier.verify(token)
        except InvalidToken as exc:
            if exc.reason not in UNDECIDABLE_LOCALLY:
                raise
            return await self.introspector.verify(token)
        if self.introspect_jwts:
            await self.introspector.verify(token)  # inactive (revoked) -> 401, even though the signature holds
        return principal

    def explain(self, token: str, exc: InvalidToken) -> str:
        if self.introspector is not None and not is_jwt_shaped(token):
            return exc.detail  # the answer is the IdP's: its detail says it all; the token's text is not read
        return self.jwt_verifier.explain(token, exc)

    async def aclose(self) -> None:
        if self.introspector is not None:
            await self.introspector.aclose()


def introspection_rules(config: IssuerConfig) -> TokenRules:
    """The issuer's JWT rules; with `introspection_audience_optional` an answer without `aud` is judged by the
    client ids (which the settings then require), one with `aud` still by its audience."""
    rules = config.token_rules()
    if config.introspection_audience_optional:
        rules = dataclasses.replace(rules, audience=AudienceRule(rules.audience.audiences, optional=True))
    return rules


def build_introspector(config: IssuerConfig, settings: Settings) -> Introspector | None:
    """One issuer's introspector (its introspection settings; the server's timeout and cache bounds); None when
    introspection is off for it."""
    if not config.introspects or config.introspection_client_secret is None:
        return None
    endpoint = config.introspection_endpoint or discovered_endpoint(
        config.issuer, config.well_known_url, timeout=settings.oauth_http_timeout_seconds
    )
    return Introspector(
        endpoint,
        introspection_rules(config),
        issuer=config.issuer,
        client_id=config.introspection_client_id,
        client_secret=config.introspection_client_secret.get_secret_value(),
        auth_method=config.introspection_auth_method,
        timeout=settings.oauth_http_timeout_seconds,
        cache_seconds=config.introspection_cache_seconds,
        refusal_cache_seconds=settings.oauth_refusal_cache_seconds,
        cache_entries=settings.oauth_token_cache_entries,
    )

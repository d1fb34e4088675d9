"""Verifies a JWT access token: shape and header, the IdP's key, the signature, then the claims and their rules.

The only component that holds verification results (its VerificationCache): accepted and refused, bounded,
never past `exp` or the key's removal from the key set.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jwt

from auth.claims import TokenClaims, shown
from auth.errors import AuthError, InvalidToken, Reason
from auth.jwk import VerificationKey
from auth.jwks_cache import JWKSCache
from auth.principal import Principal
from auth.token_rules import TokenRules
from auth.tooling.diagnostics import explain
from auth.verification_cache import VerificationCache
from web.compat import jws

_MAX_KID_LENGTH = 256

# PyJWT's failures that can reach us (claims are ours to check: PyJWT only parses and checks the signature).
_JWT_ERRORS: tuple[tuple[type[jwt.PyJWTError], Reason], ...] = (
    (jwt.InvalidSignatureError, Reason.BAD_SIGNATURE),
    (jwt.InvalidAlgorithmError, Reason.ALGORITHM),
    (jwt.PyJWTError, Reason.MALFORMED),
)


class JwtVerifier:
    """Checks a JWT access token against the IdP's key set (JWKS keys only) and the token rules."""

    def __init__(
        self,
        keys: JWKSCache,
        rules: TokenRules,
        *,
        algorithms: Iterable[str],
        max_token_bytes: int = 16384,
        cache_entries: int = 10_000,
        cache_seconds: float = 300,
        refusal_cache_seconds: float = 5,
    ) -> None:
        if not rules.audience.audiences:
            raise ValueError("at least one audience is required")
        if rules.audience.optional and not rules.client_ids:
            raise ValueError("when tokens may lack an audience, client ids must be listed")
        self._keys = keys
        self.rules = rules
        self._algorithms = frozenset(algorithms)
        self.max_token_bytes = max_token_bytes
        self.cache = VerificationCache(
            max_entries=cache_entries, max_age=cache_seconds, refusal_seconds=refusal_cache_seconds, keys=keys
        )

    async def verify(self, token: str) -> Principal:
        """The caller the token names; InvalidToken (or KeySetUnavailable) saying briefly why not."""
        if not isinstance(token, str):
            raise InvalidToken(Reason.MALFORMED, detail=f"not a string: {type(token).__name__}")
        if len(token) > self.max_token_bytes:
            raise InvalidToken(Reason.TOO_LARGE)
        remembered = self.cache.lookup(token)
        if isinstance(remembered, Principal):
            return remembered
        if remembered is not None:
            try:
                raise remembered
            finally:
                del remembered  # the traceback holds this frame: no reference cycle through it
        try:
            principal, key, header = await self._checked(token)
        except InvalidToken as exc:
            self.cache.refuse(token, exc)
            raise
        self.cache.accept(token, principal, key, kid=header.get("kid"), alg=header["alg"])
        return principal

    @property
    def keys(self) -> JWKSCache:
        """The IdP's key set this verifier trusts (readiness and metrics read it)."""
        return self._keys

    def explain(self, token: str, exc: InvalidToken) -> str:
        """The refusal log line's explanation: the error's detail plus what the token's own claims suggest."""
        return explain(token, exc, self.rules, max_token_bytes=self.max_token_bytes)

    async def _checked(self, token: str) -> tuple[Principal, VerificationKey, dict[str, Any]]:
        try:
            return await self._verify(token)
        except AuthError:
            raise
        except jwt.PyJWTError as exc:
            reason = next(reason for kind, reason in _JWT_ERRORS if isinstance(exc, kind))
            # PyJWT's decode and header messages can quote token bytes: only the exception type reaches the log.
            raise InvalidToken(reason, detail=type(exc).__name__) from None
        except Exception as exc:  # noqa: BLE001 - overflowing numbers, deep nesting, odd types: a 401, never a 500
            raise InvalidToken(Reason.MALFORMED, detail=type(exc).__name__) from None

    async def _verify(self, token: str) -> tuple[Principal, VerificationKey, dict[str, Any]]:
        if token.count(".") != 2:
            raise InvalidToken(Reason.NOT_JWT, detail="not three dot-separated parts")
        header = jws.get_unverified_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise InvalidToken(Reason.ALGORITHM, detail=f"alg {shown(alg, 24)} not allowed")
        if "crit" in header:
            raise InvalidToken(Reason.CRITICAL_HEADER)
        self.rules.check_header(header)
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > _MAX_KID_LENGTH):
            raise InvalidToken(Reason.KID_MALFORMED)
        # jku, x5u, jwk and x5c are never read: keys come from the configured JWKS only.
        key = self._keys.fresh_key(kid, alg) or await self._keys.get_key(kid, alg)
        payload = jws.decode(token, key=key.key, algorithms=[alg])
        principal = self.rules.check(TokenClaims.from_payload(payload))
        return principal, key, header

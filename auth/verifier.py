"""Turns a bearer token into a Principal, or an InvalidToken saying briefly why not."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import jwt

from auth.claim_rules import ClaimRules, shown
from auth.diagnostics import explain
from auth.errors import AuthError, InvalidToken
from auth.jwks import JWKSCache, VerificationKey
from auth.jws import jws_parser, jwt_decoder
from auth.principal import Principal
from auth.signature_memo import UNIQUE_SIGNATURE_ALGORITHMS, SignatureMemo
from auth.token_cache import TokenCache

logger = logging.getLogger(__name__)

# Latest NumericDate a datetime can hold (9999-12-31T23:59:59Z).
_MAX_NUMERIC_DATE = 253402300799
_MAX_KID_LENGTH = 256
_CLIENT_ID_CLAIMS = ("azp", "client_id", "cid", "appid")
# Parsed JOSE headers remembered by their segment: an IdP signs with few (alg, kid) pairs, so most tokens share one.
_MAX_REMEMBERED_HEADERS = 256
_MAX_REMEMBERED_HEADER_CHARS = 512

# A signature the memo refuses is refused as PyJWT's InvalidSignatureError would be, mapped below.
_BAD_SIGNATURE = "token signature is invalid"
_BAD_SIGNATURE_DETAIL = "InvalidSignatureError"  # a DecodeError: only its type is shown


# PyJWT's exception family mapped once to what the client is told.
_JWT_ERRORS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.ImmatureSignatureError, "token is not yet valid"),
    (jwt.InvalidIssuerError, "token issuer is not accepted"),
    (jwt.InvalidAudienceError, "token audience is not accepted"),
    (jwt.MissingRequiredClaimError, "token is missing a required claim"),
    (jwt.InvalidSignatureError, _BAD_SIGNATURE),
    (jwt.InvalidIssuedAtError, "token iat claim is invalid"),
    (jwt.PyJWTError, "token is malformed"),
)


class TokenVerifier:
    """Checks signature (JWKS keys only), algorithm, issuer, audience and lifetime of a JWT access token,
    then the IdP-specific claim rules."""

    def __init__(
        self,
        keys: JWKSCache,
        *,
        algorithms: Iterable[str],
        rules: ClaimRules | None = None,
        issuer: str | None = None,
        audiences: Iterable[str] = (),
        leeway: float = 30,
        max_token_bytes: int = 16384,
        cache_entries: int = 10_000,
        cache_seconds: float = 300,
        refusal_cache_seconds: float = 5,
    ) -> None:
        if rules is None:
            if issuer is None:
                raise ValueError("give either rules or an issuer")
            rules = ClaimRules(issuers=(issuer,), audiences=tuple(audiences))
        if not rules.audiences:
            raise ValueError("at least one audience is required")
        if rules.audience_optional and not rules.client_ids:
            raise ValueError("when tokens may lack an audience, client ids must be listed")
        self._keys = keys
        self.rules = rules
        # With an optional audience, PyJWT only checks the lifetime; ClaimRules.check_claims checks a present aud.
        self._audiences = None if rules.audience_optional else list(rules.audiences)
        self._options: dict[str, Any] = {"require": ["exp", "iss", "aud"]}
        if rules.audience_optional:
            self._options = {"require": ["exp", "iss"], "verify_aud": False}
        self._algorithms = frozenset(algorithms)
        self._leeway = leeway
        self._max_token_bytes = max_token_bytes
        self._headers: dict[str, dict[str, Any]] = {}
        self.cache = TokenCache(
            max_entries=cache_entries,
            max_age=cache_seconds,
            refusal_seconds=refusal_cache_seconds,
            keys=keys,
        )
        self.signatures = SignatureMemo(max_entries=cache_entries)

    async def verify(self, token: str) -> Principal:
        result = await self.check(token)
        if isinstance(result, Principal):
            return result
        try:
            raise result
        finally:
            del result  # the traceback holds this frame: no cycle through it

    async def check(self, token: str) -> Principal | InvalidToken:
        """verify()'s answer, a refusal returned rather than raised: a flood of refusals then skips raising
        each one through the verifier's frames (the bearer middleware only needs the error to answer with)."""
        if not isinstance(token, str):
            return InvalidToken("token is malformed", detail=f"not a string: {type(token).__name__}")
        if len(token) > self._max_token_bytes:
            return InvalidToken("token is too large")
        remembered = self.cache.lookup(token)
        if remembered is not None:
            return remembered  # a Principal, or a fresh InvalidToken
        if self._memo_refuses(token):  # not remembered as a refusal: it costs about as little as one
            return InvalidToken(_BAD_SIGNATURE, detail=_BAD_SIGNATURE_DETAIL)
        try:
            checked = await self._checked(token)
        except InvalidToken as exc:
            self.cache.refuse(token, exc)
            return exc
        principal, key = checked
        self.cache.accept(token, principal, key)
        return principal

    def _memo_refuses(self, token: str) -> bool:
        """The signature memo's refusal, before any other step (see SignatureMemo.refuses): a token pairing an
        accepted token's header and payload with other signature bytes, or its signature with another payload.
        Only for ASCII tokens, as the memo holds only those."""
        if not self.signatures.enabled or not token.isascii():
            return False
        signing_input, _, signature = token.rpartition(".")
        return self.signatures.refuses(signing_input, signature, self._keys.fresh_key)

    async def _checked(self, token: str) -> tuple[Principal, VerificationKey]:
        try:
            return await self._verify(token)
        except AuthError:
            raise
        except jwt.PyJWTError as exc:
            description = next(text for kind, text in _JWT_ERRORS if isinstance(exc, kind))
            # PyJWT's decode and header-check messages can quote token bytes (e.g. `crit` values);
            # for those only the exception type reaches the log.
            quotes_token = isinstance(exc, jwt.DecodeError) or type(exc) is jwt.InvalidTokenError
            detail = type(exc).__name__ if quotes_token else f"{type(exc).__name__}: {exc}"
            raise InvalidToken(description, detail=detail) from None
        except Exception as exc:  # noqa: BLE001 - overflowing numbers, deep nesting, odd types: a 401, never a 500
            raise InvalidToken("token is malformed", detail=type(exc).__name__) from None

    def explain(self, token: str, error: AuthError) -> str:
        """The log line for a refusal: the error's detail plus what the token's claims suggest."""
        hint = explain(token, error.description, self.rules) if len(token) <= self._max_token_bytes else ""
        return f"{error.detail}; {hint}" if hint and hint not in error.detail else error.detail

    def _header(self, segment: str) -> dict[str, Any]:
        """The token's JOSE header, unverified: only used to choose the key and to refuse early.

        The header segment alone goes through PyJWT's steps and header checks (given the whole token it would also
        decode payload and signature, which jwt.decode does anyway). Parsed headers are remembered by their
        exact segment, bounded; the same segment always parses to the same header, and nothing changes it."""
        header = self._headers.get(segment)
        if header is None:
            header = jws_parser.header_of(segment)
            if len(segment) <= _MAX_REMEMBERED_HEADER_CHARS:
                if len(self._headers) >= _MAX_REMEMBERED_HEADERS:
                    del self._headers[next(iter(self._headers))]  # oldest first
                self._headers[segment] = header
        return header

    async def _verify(self, token: str) -> tuple[Principal, VerificationKey]:
        if token.count(".") != 2:
            raise InvalidToken("token is not a JWT", detail="not three dot-separated parts")
        header = self._header(token.partition(".")[0])
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise InvalidToken("token algorithm is not accepted", detail=f"alg {shown(alg, 24)} not allowed")
        if "crit" in header:
            raise InvalidToken("token has unsupported critical header parameters")
        self.rules.check_header(header)
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > _MAX_KID_LENGTH):
            raise InvalidToken("token kid is malformed")
        # jku, x5u, jwk and x5c are never read: keys come from the configured JWKS only.
        key = self._keys.fresh_key(kid, alg) or await self._keys.get_key(kid, alg)
        claims = jwt_decoder.decode(
            token,
            key=key.key,
            algorithms=[alg],
            audience=self._audiences,
            leeway=self._leeway,
            options=self._options,
        )
        # PyJWT checked signature, exp, nbf, iat and aud; the issuer is ours to check (exact or per tenant).
        self.rules.check_issuer(claims)
        principal = principal_from_claims(claims, scope_prefix=self.rules.scope_prefix)
        self.rules.check_claims(claims, principal.client_id)
        if alg in UNIQUE_SIGNATURE_ALGORITHMS and self.signatures.enabled and token.isascii():
            signing_input, _, signature = token.rpartition(".")
            self.signatures.remember(signing_input, key, signature, kid, alg)
        return principal, key


def _numeric_date(claims: Mapping[str, Any], name: str, *, required: bool) -> datetime | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidToken(f"token is missing the {name} claim")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken(f"token {name} claim is not a number")
    if not 0 <= value <= _MAX_NUMERIC_DATE:
        raise InvalidToken(f"token {name} claim is out of range")
    return datetime.fromtimestamp(value, tz=UTC)


def _unicode(value: str, name: str) -> str:
    """A claim string must be valid Unicode text: a lone surrogate (escaped in the JSON) is refused here."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidToken(f"token {name} claim is not valid Unicode text") from None
    return value


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidToken(f"token {name} claim is not a string")
    return _unicode(value, name) or None if value else None


def _string_list(value: Any, name: str, *, space_separated: bool) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        _unicode(value, name)
        return value.split() if space_separated else [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [_unicode(item, name) for item in value]
    raise InvalidToken(f"token {name} claim has an unexpected type")


def normalise_scopes(claims: Mapping[str, Any], *, prefix: str = "") -> frozenset[str]:
    """Scopes from every dialect: `scope` (string), `scp` (string or list), `permissions` and `roles` (lists).
    With a prefix (Cognito's `{resource-server-id}/`), `{prefix}{scope}` also counts as `{scope}`."""
    scopes: list[str] = []
    if "scope" in claims and not isinstance(claims["scope"], str | None):
        raise InvalidToken("token scope claim is not a string")
    scopes += _string_list(claims.get("scope"), "scope", space_separated=True)
    scopes += _string_list(claims.get("scp"), "scp", space_separated=True)
    scopes += _string_list(claims.get("permissions"), "permissions", space_separated=False)
    scopes += _string_list(claims.get("roles"), "roles", space_separated=False)
    if prefix:
        scopes += [scope[len(prefix) :] for scope in scopes if scope.startswith(prefix) and len(scope) > len(prefix)]
    return frozenset(scopes)


def client_id_of(claims: Mapping[str, Any]) -> str | None:
    for name in _CLIENT_ID_CLAIMS:
        value = _optional_str(claims, name)
        if value:
            return value
    return None


def is_machine_token(claims: Mapping[str, Any], subject: str, client_id: str | None) -> bool:
    """Client-credentials tokens, in each IdP's dialect."""
    if claims.get("gty") == "client-credentials" or claims.get("idtyp") == "app":
        return True
    if "tid" in claims and "scp" not in claims and claims.get("oid") == subject:
        return True  # Entra app-only (idtyp is an optional claim): no scp, the subject is the service principal
    return client_id is not None and subject in (client_id, f"{client_id}@clients")


def principal_from_claims(claims: dict[str, Any], *, scope_prefix: str = "") -> Principal:
    """The only place raw claims become an identity. Claims must already be verified."""
    expires_at = _numeric_date(claims, "exp", required=True)
    issued_at = _numeric_date(claims, "iat", required=False)
    _numeric_date(claims, "nbf", required=False)
    issuer = _optional_str(claims, "iss")
    client_id = client_id_of(claims)
    subject = _optional_str(claims, "sub") or client_id
    if not issuer or not subject or expires_at is None:
        raise InvalidToken("token has no subject or client id")
    audience = tuple(_string_list(claims.get("aud"), "aud", space_separated=False))
    return Principal(
        subject=subject,
        client_id=client_id,
        issuer=issuer,
        audience=audience,
        scopes=normalise_scopes(claims, prefix=scope_prefix),
        expires_at=expires_at,
        issued_at=issued_at,
        token_id=_optional_str(claims, "jti"),
        is_machine=is_machine_token(claims, subject, client_id),
        claims=MappingProxyType(claims),
    )

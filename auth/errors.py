"""The refusal family: every HTTP refusal is one of these, each with its status, error code and a reason enum."""

from __future__ import annotations

from enum import Enum


class Reason(Enum):
    """Why a request was refused. Code branches on this, never on the text; the value is the client-safe text."""

    # no or unusable credentials
    MISSING = "bearer token required"
    OTHER_SCHEME = "bearer token required (other schemes are not accepted)"
    DUPLICATE_HEADER = "more than one Authorization header"
    EMPTY = "access token is empty"  # after either scheme
    # the token's shape and header
    TOO_LARGE = "token is too large"
    NOT_JWT = "token is not a JWT"
    MALFORMED = "token is malformed"
    ALGORITHM = "token algorithm is not accepted"
    CRITICAL_HEADER = "token has unsupported critical header parameters"
    TYPE = "token type is not accepted"
    KID_MALFORMED = "token kid is malformed"
    # the key and the signature
    KEY_UNKNOWN = "token signing key is unknown"
    KEY_MISMATCH = "token algorithm does not match its key"
    BAD_SIGNATURE = "token signature is invalid"
    KEYS_UNAVAILABLE = "signing keys are temporarily unavailable"
    # the claims
    CLAIMS_MALFORMED = "token claims have unexpected types"
    MISSING_CLAIM = "token is missing a required claim"
    EXPIRED = "token has expired"
    NOT_YET_VALID = "token is not yet valid"
    ISSUER = "token issuer is not accepted"
    AUDIENCE = "token audience is not accepted"
    NOT_ACCESS_TOKEN = "token is not an access token"  # noqa: S105 - a message, not a secret
    CLIENT = "token client is not accepted"
    NO_SUBJECT = "token has no subject or client id"
    KEY_BOUND = "token is bound to a key and cannot be used as a bearer token"
    # after authentication
    INSUFFICIENT_SCOPE = "the token lacks a required scope"
    # refusals outside the bearer check
    MISDIRECTED = "this server does not answer for that Host"
    FORBIDDEN_ORIGIN = "requests from this Origin are not allowed"
    BODY_TOO_LARGE = "request body too large"
    METRICS_TOKEN = "metrics need the METRICS_TOKEN bearer token"  # noqa: S105 - a message, not a secret
    METRICS_REMOTE = "set METRICS_TOKEN to scrape metrics from elsewhere"
    BAD_REQUEST = "the request is not acceptable"  # the dev issuer's token endpoint: its description says more
    # certificate-bound tokens (RFC 8705, feature "mtls": auth/client_cert.py)
    CERT_MISSING = "certificate-bound token sent without a client certificate"
    CERT_MISMATCH = "token is bound to a different client certificate"
    CERT_MALFORMED = "the client certificate header is malformed"
    CERT_DUPLICATE = "more than one client certificate header"
    # opaque tokens: introspection (RFC 7662)
    INACTIVE = "token is not active"
    INTROSPECTION_UNAVAILABLE = "token introspection is temporarily unavailable"
    # DPoP, sender-constrained tokens (RFC 9449): the proof, the scheme and the server nonce
    DPOP_REQUIRED = "this server accepts only DPoP-bound tokens, sent with the DPoP scheme and a proof"
    DPOP_NOT_BOUND = "token is not bound to a DPoP key: send it with the Bearer scheme"
    DPOP_MISSING_PROOF = "a DPoP proof is required with the DPoP scheme"
    DPOP_DUPLICATE_PROOF = "more than one DPoP header"
    DPOP_MALFORMED = "DPoP proof is malformed"
    DPOP_TYPE = "DPoP proof typ must be dpop+jwt"
    DPOP_ALGORITHM = "DPoP proof algorithm is not accepted"
    DPOP_KEY = "DPoP proof jwk is not an acceptable public key"
    DPOP_SIGNATURE = "DPoP proof signature is invalid"
    DPOP_METHOD = "DPoP proof htm does not match the request method"
    DPOP_URL = "DPoP proof htu does not match this endpoint's URL"
    DPOP_TIME = "DPoP proof iat is outside the accepted window"
    DPOP_REPLAY = "DPoP proof has been used before"
    DPOP_TOKEN_HASH = "DPoP proof ath does not match the access token"  # noqa: S105 - a message, not a secret
    DPOP_KEY_MISMATCH = "DPoP proof key is not the key the token is bound to"
    DPOP_NONCE = "a fresh DPoP nonce is required: retry with the nonce in the DPoP-Nonce header"


class Refusal(Exception):
    """Base of every HTTP refusal. `description` is safe to send to the client; `detail` is for the log only."""

    status = 400
    error = "invalid_request"

    def __init__(
        self,
        reason: Reason,
        *,
        description: str | None = None,
        detail: str | None = None,
        status: int | None = None,
        error: str | None = None,
    ) -> None:
        self.reason = reason
        self.description = description or reason.value
        super().__init__(self.description)
        # More precise, for the server log: never the token itself.
        self.detail = detail or self.description
        if status is not None:
            self.status = status
        if error is not None:
            self.error = error


class AuthError(Refusal):
    """A refusal of the bearer check: answered with an RFC 6750 challenge."""

    status = 401
    error = "invalid_token"


class MissingToken(AuthError):
    """No bearer credentials at all: the challenge carries no error code (RFC 6750 section 3.1)."""

    error = ""

    def __init__(self, reason: Reason = Reason.MISSING) -> None:
        super().__init__(reason)


class InvalidRequest(AuthError):
    status = 400
    error = "invalid_request"


class InvalidToken(AuthError):
    """The token is malformed, expired, for someone else, badly signed or bound to a key."""


class InvalidDpopProof(AuthError):
    """The DPoP proof itself is at fault (RFC 9449 section 7.1)."""

    error = "invalid_dpop_proof"


class UseDpopNonce(AuthError):
    """The proof lacks a nonce this server issued recently: the answer carries a fresh one (RFC 9449 section 9)."""

    error = "use_dpop_nonce"

    def __init__(self, nonce: str, *, detail: str | None = None) -> None:
        super().__init__(Reason.DPOP_NONCE, detail=detail)
        self.nonce = nonce


class InsufficientScope(AuthError):
    status = 403
    error = "insufficient_scope"

    def __init__(self, required: tuple[str, ...]) -> None:
        super().__init__(Reason.INSUFFICIENT_SCOPE, description=f"required scope: {' '.join(required)}")
        self.required = required


class TemporarilyUnavailable(AuthError):
    """The IdP cannot be asked right now and no usable answer is held: not the caller's fault (503, Retry-After)."""

    status = 503
    error = "temporarily_unavailable"


class KeySetUnavailable(TemporarilyUnavailable):
    """The IdP's key set cannot be fetched and no usable copy is held."""

    def __init__(self) -> None:
        super().__init__(Reason.KEYS_UNAVAILABLE)


class IntrospectionUnavailable(TemporarilyUnavailable):
    """The introspection endpoint is down, slow or answers garbage, and this token has no cached answer."""

    def __init__(self, detail: str) -> None:
        super().__init__(Reason.INTROSPECTION_UNAVAILABLE, detail=detail)

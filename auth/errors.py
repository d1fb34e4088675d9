"""The authentication failure family; each knows its HTTP status and RFC 6750 error code."""

from __future__ import annotations


class AuthError(Exception):
    """Base of every authentication failure. `description` is safe to send to the client."""

    status = 401
    error = "invalid_token"

    def __init__(self, description: str, *, detail: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        # For the server log only: more precise, still never the token itself.
        self.detail = detail or description


class MissingToken(AuthError):
    """No bearer credentials at all: the challenge carries no error code (RFC 6750 section 3.1)."""

    error = ""

    def __init__(self, description: str = "bearer token required") -> None:
        super().__init__(description)


class InvalidRequest(AuthError):
    status = 400
    error = "invalid_request"


class InvalidToken(AuthError):
    """The token is malformed, expired, for someone else or badly signed."""


class InsufficientScope(AuthError):
    status = 403
    error = "insufficient_scope"

    def __init__(self, required: tuple[str, ...]) -> None:
        super().__init__(f"required scope: {' '.join(required)}")
        self.required = required


class KeySetUnavailable(AuthError):
    """The IdP's key set cannot be fetched and no usable copy is held: not the caller's fault."""

    status = 503
    error = "temporarily_unavailable"

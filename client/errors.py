"""Why a client-credentials token could not be had: one exception family under `TokenError`."""

from __future__ import annotations


class TokenError(Exception):
    """Base of every token failure. Messages name the endpoint and the reason, never a secret or a token."""


class TokenConfigError(TokenError, ValueError):
    """The TokenManager was configured with an unusable value (raised by the constructor)."""


class DiscoveryError(TokenError):
    """The issuer's metadata could not be found, read, or trusted (e.g. its `issuer` differs)."""


class TokenEndpointError(TokenError):
    """The token endpoint was unreachable or kept failing (network, timeout, 5xx, 429) or answered oddly."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TokenRejectedError(TokenError):
    """The IdP refused the request (HTTP 400/401/403). Retrying the same request cannot help."""

    def __init__(self, message: str, *, status: int, error: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


class InvalidClientError(TokenRejectedError):
    """Wrong client id or secret, or a client not allowed this grant (invalid_client, unauthorized_client,
    invalid_grant)."""


class InvalidScopeError(TokenRejectedError):
    """The requested scope, audience or resource is unknown to the IdP (invalid_scope, invalid_target)."""


class TokenResponseError(TokenError):
    """The token endpoint said 2xx but sent no usable token (not JSON, no access_token, odd token_type)."""

"""Machine-to-machine client side: a client-credentials TokenManager (Bearer or DPoP), httpx2 auth adapters, a CLI."""

from client.dpop import DPoPKey, DPoPKeyError
from client.errors import (
    DiscoveryError,
    InvalidClientError,
    InvalidScopeError,
    TokenConfigError,
    TokenEndpointError,
    TokenError,
    TokenRejectedError,
    TokenResponseError,
)
from client.http_retry import RetryPolicy
from client.httpx2_auth import BearerAuth, DPoPAuth
from client.sync import SyncTokenManager
from client.token_manager import TokenManager

__all__ = [
    "BearerAuth",
    "DPoPAuth",
    "DPoPKey",
    "DPoPKeyError",
    "DiscoveryError",
    "InvalidClientError",
    "InvalidScopeError",
    "RetryPolicy",
    "SyncTokenManager",
    "TokenConfigError",
    "TokenEndpointError",
    "TokenError",
    "TokenManager",
    "TokenRejectedError",
    "TokenResponseError",
]

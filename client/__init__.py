"""Machine-to-machine client side: a client-credentials TokenManager, an httpx2 auth adapter and a CLI."""

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
from client.httpx2_auth import BearerAuth
from client.sync import SyncTokenManager
from client.token_manager import TokenManager

__all__ = [
    "BearerAuth",
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

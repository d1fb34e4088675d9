"""The verify step's interface: what the bearer middleware needs of whatever checks a token."""

from __future__ import annotations

from typing import Protocol

from auth.errors import InvalidToken
from auth.principal import Principal


class TokenVerifier(Protocol):
    max_token_bytes: int

    async def verify(self, token: str) -> Principal:
        """The caller the token names; an AuthError subclass saying briefly why not."""
        ...

    def explain(self, token: str, exc: InvalidToken) -> str:
        """The refusal log line's explanation of `exc` (its detail and the usual cause). Never the token."""
        ...

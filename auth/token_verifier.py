"""The verify step's interface: what the bearer middleware asks of whatever checks tokens."""

from __future__ import annotations

from typing import Protocol

from auth.errors import InvalidToken
from auth.principal import Principal


class TokenVerifier(Protocol):
    max_token_bytes: int

    async def verify(self, token: str) -> Principal:
        """The caller the token names; InvalidToken (or KeySetUnavailable) saying briefly why not."""
        ...

    def explain(self, token: str, exc: InvalidToken) -> str:
        """The refusal log's explanation of why this token was refused. Never the token."""
        ...

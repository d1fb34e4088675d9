"""The verified caller: the only view of identity that tools and the rest of the app get."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    client_id: str | None
    issuer: str
    audience: tuple[str, ...]
    scopes: frozenset[str]
    expires_at: datetime
    issued_at: datetime | None = None
    token_id: str | None = None
    is_machine: bool = False
    # The token's `cnf` members (RFC 7800) when it is bound to a key; auth.binding checks them on every request.
    confirmation: Mapping[str, str] | None = field(default=None, compare=False)
    claims: Mapping[str, object] = field(default_factory=dict, repr=False, compare=False)

    @property
    def owner_key(self) -> tuple[str, str]:
        """What owns per-user data: subjects are unique only per issuer; a machine client is its client id."""
        return (self.issuer, self.client_id if self.is_machine and self.client_id else self.subject)

    def has_scopes(self, required: tuple[str, ...] | list[str]) -> bool:
        return self.scopes.issuperset(required)

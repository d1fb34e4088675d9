"""Remembers recent verification results so a reused token costs a hash and a dict lookup, not a signature check.

Security rules (a cache must never let a token in that the verifier would refuse):
- keyed by the SHA-256 of the whole token, bounded in entries (least recently used goes first);
- an accepted entry never outlives the token's `exp`, nor `max_age`, and is only used while the key
  that verified it is still in the IdP's key set (a removed key stops its tokens at the next refresh);
- refusals are kept only briefly (`refusal_seconds`) and never for "key unknown" or "keys unavailable",
  which can change as soon as the key set is refreshed.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from auth.errors import InvalidToken
from auth.jwks import VerificationKey
from auth.principal import Principal

_NOT_CACHED_REFUSALS = frozenset({"token signing key is unknown"})


@dataclass(frozen=True, slots=True)
class _Accepted:
    principal: Principal
    key: VerificationKey
    until: float


@dataclass(frozen=True, slots=True)
class _Refused:
    description: str
    detail: str
    until: float


class TokenCache:
    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_age: float = 300,
        refusal_seconds: float = 5,
        key_is_current: Callable[[VerificationKey], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._entries: OrderedDict[bytes, _Accepted | _Refused] = OrderedDict()
        self._max_entries = max_entries
        self._max_age = max_age
        self._refusal_seconds = refusal_seconds
        self._key_is_current = key_is_current
        self._clock = clock
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def digest(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()

    def lookup(self, digest: bytes) -> Principal | InvalidToken | None:
        """The remembered answer for this token, or None when it must be verified."""
        entry = self._entries.get(digest)
        if entry is None:
            self.misses += 1
            return None
        if self._clock() >= entry.until or (isinstance(entry, _Accepted) and not self._key_is_current(entry.key)):
            del self._entries[digest]
            self.misses += 1
            return None
        self._entries.move_to_end(digest)
        self.hits += 1
        if isinstance(entry, _Accepted):
            return entry.principal
        return InvalidToken(entry.description, detail=entry.detail)  # a fresh exception: tracebacks don't pile up

    def accept(self, digest: bytes, principal: Principal, key: VerificationKey) -> None:
        until = min(principal.expires_at.timestamp(), self._clock() + self._max_age)
        self._store(digest, _Accepted(principal, key, until))

    def refuse(self, digest: bytes, error: InvalidToken) -> None:
        if self._refusal_seconds > 0 and error.description not in _NOT_CACHED_REFUSALS:
            self._store(digest, _Refused(error.description, error.detail, self._clock() + self._refusal_seconds))

    def _store(self, digest: bytes, entry: _Accepted | _Refused) -> None:
        if self._max_entries <= 0:
            return
        self._entries[digest] = entry
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

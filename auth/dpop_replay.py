"""Remembers the DPoP proofs accepted recently, so a replayed proof is refused (RFC 9449 section 11.1).

Per replica and in memory: a proof replayed to another replica is not detected there (its iat window and,
with OAUTH_DPOP_NONCE, the nonce's lifetime bound how long it could be). Bounded: at most `max_entries` proofs;
when full, the longest-held goes first, so a proof replayed after that many newer ones (within its window, on
the same replica) is not detected either. Each entry is a 16-byte digest of the key's thumbprint and the jti,
kept until the proof's iat leaves the window.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_MAX_ENTRIES = 100_000


class ReplayGuard:
    def __init__(
        self, *, window: float, max_entries: int = DEFAULT_MAX_ENTRIES, clock: Callable[[], float] = time.time
    ) -> None:
        self._window = window
        self._max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # digest -> when it may be forgotten

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, thumbprint: str, jti: str, issued_at: float) -> bool:
        """True the first time this key's proof `jti` is seen within the window (and it is remembered); False after."""
        now = self._clock()
        self._forget_expired(now)
        digest = hashlib.sha256(f"{thumbprint}\0{jti}".encode("utf-8", "surrogatepass")).digest()[:16]
        if digest in self._seen:
            return False
        if len(self._seen) >= self._max_entries:
            self._seen.popitem(last=False)
        # A proof is acceptable until its iat is `window` behind the clock: remembered until then (at least a while).
        self._seen[digest] = max(issued_at, now) + self._window
        return True

    def _forget_expired(self, now: float) -> None:
        # Entries are in arrival order; their ends are nearly so (iat close to arrival): stop at the first live one.
        while self._seen:
            digest, until = next(iter(self._seen.items()))
            if until > now:
                return
            del self._seen[digest]

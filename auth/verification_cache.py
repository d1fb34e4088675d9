"""The one verification cache: recent answers (accepted and refused), so a reused token costs a dict lookup.

Security rules (a cache must never let a token in that the verifier would refuse):
- keyed by the whole token's text: a dict hashes it and compares the whole text on a match, so two tokens are
  never taken for one (not even by a hash collision). Python seeds its string hash at random in every process
  (unless PYTHONHASHSEED is set, which nothing here does), so nobody can pick tokens that pile up on one hash
  slot. Bounded in entries (least recently used goes first);
  refusals have their own, smaller bound, so a flood of bad tokens cannot push the valid ones out, and only
  tokens of at most REFUSED_TOKEN_CHARS are remembered as refused (their memory is bounded too);
- an accepted entry never outlives the token's `exp`, nor `max_age`, and is only used while the key
  that verified it is still in the IdP's key set (a removed key stops its tokens at the next refresh);
- refusals are kept only briefly (`refusal_seconds`); "key unknown" only while the key set it was unknown in
  is still held and no refresh may start (KeySource.kid_still_unknown), "keys unavailable" never;
- a token whose header and payload are those of an accepted RS256/384/512 token but whose signature is other
  bytes is refused as a bad signature without an RSA operation: PKCS#1 v1.5 signing is deterministic, so one
  key verifies exactly one byte string per signing input. Only while the key set still gives that very key
  for the token's kid and alg, and only for a signature segment in its one canonical base64url text (any
  other text goes through the whole check, which says what is wrong). ECDSA, RSA-PSS and EdDSA admit many
  valid signatures: never used for them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from auth.errors import InvalidToken, Reason
from auth.jwk import VerificationKey
from auth.principal import Principal
from web.compat import is_canonical_segment

UNIQUE_SIGNATURE_ALGORITHMS = frozenset({"RS256", "RS384", "RS512"})

REFUSALS_PER_ACCEPTED = 10  # at most max_entries // 10 refusals are remembered
# Longer refused tokens are checked afresh each time: refusals then hold at most max_entries // 10 * 4096
# characters (4 MB at the default 10,000).
REFUSED_TOKEN_CHARS = 4096


@dataclass(frozen=True, slots=True)
class _Accepted:
    principal: Principal
    key: VerificationKey
    until: float
    kid: str | None = None
    alg: str | None = None  # set only for UNIQUE_SIGNATURE_ALGORITHMS: then the signing input is indexed


@dataclass(frozen=True, slots=True)
class _Refused:
    reason: Reason
    detail: str
    until: float
    keys_mark: object | None = None  # for KEY_UNKNOWN: the key set the kid was unknown in


class KeySource(Protocol):
    """What the cache asks the key set (auth.jwks_cache.JWKSCache)."""

    def is_current(self, key: VerificationKey) -> bool: ...

    def fresh_key(self, kid: str | None, alg: str) -> VerificationKey | None: ...

    def unknown_kid_mark(self) -> object | None: ...

    def kid_still_unknown(self, mark: object) -> bool: ...


_Entry = TypeVar("_Entry", _Accepted, _Refused)


class VerificationCache:
    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_age: float = 300,
        refusal_seconds: float = 5,
        keys: KeySource,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._accepted: OrderedDict[str, _Accepted] = OrderedDict()
        self._refused: OrderedDict[str, _Refused] = OrderedDict()
        self._signing_inputs: dict[str, str] = {}  # signing input -> accepted token (unique-signature algs only)
        self._max_entries = max_entries
        self._max_refusals = max(1, max_entries // REFUSALS_PER_ACCEPTED) if max_entries > 0 else 0
        self._max_age = max_age
        self._refusal_seconds = refusal_seconds
        self._keys = keys
        self._key_is_current = keys.is_current
        self._clock = clock
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._accepted) + len(self._refused)

    @property
    def max_entries(self) -> int:
        """The bound on remembered acceptances (refusals have a bound of their own, a fraction of it)."""
        return self._max_entries

    def lookup(self, token: str) -> Principal | InvalidToken | None:
        """The remembered answer for this token, or None when it must be verified."""
        accepted = self._accepted.get(token)
        if accepted is not None:
            if self._still_valid(accepted):
                self._accepted.move_to_end(token)
                self.hits += 1
                return accepted.principal
            self._drop(token)
        else:
            refused = self._refused.get(token)
            if refused is not None:
                if self._clock() < refused.until and (
                    refused.keys_mark is None or self._keys.kid_still_unknown(refused.keys_mark)
                ):
                    self.hits += 1
                    # a fresh exception: tracebacks don't pile up
                    return InvalidToken(refused.reason, detail=refused.detail)
                del self._refused[token]
            if self._signing_inputs and self._other_signature(token):
                self.hits += 1
                return InvalidToken(Reason.BAD_SIGNATURE, detail="another signature over an accepted token's content")
        self.misses += 1
        return None

    def _other_signature(self, token: str) -> bool:
        """Whether `token` pairs an accepted RS* token's signing input with other signature bytes (see above)."""
        signing_input, _, signature = token.rpartition(".")
        accepted_token = self._signing_inputs.get(signing_input)
        if accepted_token is None:
            return False
        accepted = self._accepted[accepted_token]
        return (
            accepted.alg is not None
            and self._keys.fresh_key(accepted.kid, accepted.alg) is accepted.key
            and signature.isascii()
            and is_canonical_segment(signature.encode("ascii"))
        )

    def _still_valid(self, accepted: _Accepted) -> bool:
        """An acceptance holds before its `until` (≤ exp, ≤ max_age) and while its key is still in the key set."""
        return self._clock() < accepted.until and self._key_is_current(accepted.key)

    def accept(
        self, token: str, principal: Principal, key: VerificationKey, *, kid: str | None = None, alg: str = ""
    ) -> None:
        """Remember an acceptance; `kid` and `alg` are the token header's (the key set is asked for them again)."""
        if self._max_entries <= 0:
            return
        until = min(principal.expires_at.timestamp(), self._clock() + self._max_age)
        self._refused.pop(token, None)
        self._drop(token)
        unique = alg in UNIQUE_SIGNATURE_ALGORITHMS and token.count(".") == 2
        self._accepted[token] = _Accepted(principal, key, until, kid, alg if unique else None)
        if unique:
            signing_input = token.rpartition(".")[0]
            self._drop(self._signing_inputs.get(signing_input))
            self._signing_inputs[signing_input] = token
        while len(self._accepted) > self._max_entries:
            self._drop(next(iter(self._accepted)))

    def _drop(self, token: str | None) -> None:
        accepted = None if token is None else self._accepted.pop(token, None)
        if accepted is not None and accepted.alg is not None and token is not None:
            signing_input = token.rpartition(".")[0]
            if self._signing_inputs.get(signing_input) == token:
                del self._signing_inputs[signing_input]

    def refuse(self, token: str, error: InvalidToken) -> None:
        """Remember a refusal briefly. "Key unknown" is remembered only while the verifier would give it again
        without looking further: under the same key set, with no refresh allowed (see KeySource)."""
        if self._refusal_seconds <= 0 or len(token) > REFUSED_TOKEN_CHARS:
            return
        keys_mark = None
        if error.reason is Reason.KEY_UNKNOWN:
            keys_mark = self._keys.unknown_kid_mark()
            if keys_mark is None:  # a refresh may start now, and may bring the kid
                return
        self._drop(token)
        refused = _Refused(error.reason, error.detail, self._clock() + self._refusal_seconds, keys_mark)
        _store(self._refused, token, refused, self._max_refusals)


def _store(entries: OrderedDict[str, _Entry], token: str, entry: _Entry, bound: int) -> None:
    if bound <= 0:
        return
    entries[token] = entry
    entries.move_to_end(token)
    while len(entries) > bound:
        entries.popitem(last=False)

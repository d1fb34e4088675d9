"""Remembers the one valid signature of recently accepted RS256/RS384/RS512 tokens, so that a token replaying an
accepted header and payload with other signature bytes is refused without an RSA operation.

Why this is sound: RSASSA-PKCS1-v1_5 signing is deterministic and its verification a bijection, so for one key
and one signing input exactly one byte string verifies (OpenSSL refuses any length but the modulus's and any value
at or above the modulus; tests/auth/test_signature_memo.py checks both). Once a signature has verified for
(key, signing input), different bytes for the same pair cannot. The memo only ever refuses: equal bytes go
through the whole check, and a key that is not the very object that verified (rotated, refetched) misses.
ECDSA, RSA-PSS and EdDSA admit many valid signatures per message; they are never remembered.

Entries are keyed by the signing input's text itself (header and payload, about 0.4 KB for a typical token),
compared whole: no hash of it stands in for it, so no collision can make one signing input pass for another.
"""

from __future__ import annotations

from collections.abc import Callable

from jwt.exceptions import DecodeError

from auth.jwks import VerificationKey
from auth.jws import canonical_segment

# The key set's answer for a (kid, alg) within its TTL, as JWKSCache.fresh_key gives it (None: no answer at once).
CurrentKey = Callable[[str | None, str], VerificationKey | None]

UNIQUE_SIGNATURE_ALGORITHMS = frozenset({"RS256", "RS384", "RS512"})


class SignatureMemo:
    def __init__(self, max_entries: int) -> None:
        # signing input -> (the key that verified, a fingerprint of the signature bytes, the header's kid and alg).
        # Equal fingerprints of different bytes would only send a token to the full check, never refuse a valid one.
        self._signatures: dict[str, tuple[VerificationKey, int, str | None, str]] = {}
        self._max_entries = max_entries

    @property
    def enabled(self) -> bool:
        return self._max_entries > 0

    def __len__(self) -> int:
        return len(self._signatures)

    def refuses(self, signing_input: str, segment: str, current_key: CurrentKey) -> bool:
        """True when the signature in `segment` cannot verify: the key that verified other bytes for the same
        signing input is still the very key `current_key(kid, alg)` finds for the header it was accepted with.

        Asked before the token's header is even read. The header is that of an accepted token, so every step
        before the signature check would pass as it did then (the configuration does not change, and the key is
        checked here); so a refusal here is the answer the whole check would give. No verdict (False) for an
        unknown signing input, another key, or a segment that does not decode: the whole check answers then."""
        remembered = self._signatures.get(signing_input)
        if remembered is None:
            return False
        key, fingerprint, kid, alg = remembered
        if current_key(kid, alg) is not key:
            return False
        try:
            return fingerprint != _fingerprint(segment)
        except DecodeError:
            return False

    def remember(self, signing_input: str, key: VerificationKey, segment: str, kid: str | None, alg: str) -> None:
        """Record the signature that verified with `key`, found for (kid, alg) of the token's header; only for
        UNIQUE_SIGNATURE_ALGORITHMS. Bounded, oldest first out."""
        if self._max_entries <= 0:
            return
        self._signatures.pop(signing_input, None)
        self._signatures[signing_input] = (key, _fingerprint(segment), kid, alg)
        while len(self._signatures) > self._max_entries:
            del self._signatures[next(iter(self._signatures))]


def _fingerprint(segment: str) -> int:
    """A fingerprint of the signature bytes: the hash of their canonical base64url text, which is the segment
    itself in every token a signer makes (no decoding then). Any function of the bytes would do: equal bytes
    always give equal fingerprints, and a collision of different bytes only sends a token to the whole check."""
    return hash(canonical_segment(segment.encode("ascii"), "crypto"))

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

from auth.jwks import VerificationKey
from auth.jws import canonical_segment

UNIQUE_SIGNATURE_ALGORITHMS = frozenset({"RS256", "RS384", "RS512"})


class SignatureMemo:
    def __init__(self, max_entries: int) -> None:
        # signing input -> (the key that verified, a fingerprint of the signature bytes). Equal fingerprints of
        # different bytes would only send a token to the full check, never refuse a valid one.
        self._signatures: dict[str, tuple[VerificationKey, int]] = {}
        self._max_entries = max_entries

    @property
    def enabled(self) -> bool:
        return self._max_entries > 0

    def __len__(self) -> int:
        return len(self._signatures)

    def refuses(self, signing_input: str, key: VerificationKey, segment: str) -> bool:
        """True when the signature in `segment` cannot verify: this very key verified other bytes for the same
        signing input. The segment is decoded only then, by PyJWT's rules (its DecodeError for a malformed one:
        the header and payload are known good, so that is the error PyJWT itself would give)."""
        remembered = self._signatures.get(signing_input)
        if remembered is None or remembered[0] is not key:
            return False
        return remembered[1] != _fingerprint(segment)

    def remember(self, signing_input: str, key: VerificationKey, segment: str) -> None:
        """Record the signature that verified; only for UNIQUE_SIGNATURE_ALGORITHMS. Bounded, oldest first out."""
        if self._max_entries <= 0:
            return
        self._signatures.pop(signing_input, None)
        self._signatures[signing_input] = (key, _fingerprint(segment))
        while len(self._signatures) > self._max_entries:
            del self._signatures[next(iter(self._signatures))]


def _fingerprint(segment: str) -> int:
    """A fingerprint of the signature bytes: the hash of their canonical base64url text, which is the segment
    itself in every token a signer makes (no decoding then). Any function of the bytes would do: equal bytes
    always give equal fingerprints, and a collision of different bytes only sends a token to the whole check."""
    return hash(canonical_segment(segment.encode("ascii"), "crypto"))

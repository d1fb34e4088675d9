"""Remembers the one valid signature of recently accepted RS256/RS384/RS512 tokens, so that a token pairing an
accepted token's header and payload with other signature bytes, or its signature with another payload, is refused
without an RSA operation.

Why this is sound: RSASSA-PKCS1-v1_5 signing is deterministic and its verification a bijection, so for one key
and one signing input exactly one byte string verifies (OpenSSL refuses any length but the modulus's and any value
at or above the modulus; tests/auth/test_signature_memo.py checks both). Once a signature has verified for
(key, signing input), different bytes for the same pair cannot. And those bytes verify, under that key, only a
signing input with the same digest: another signing input with them fails the check unless it collides in
SHA-256 (and such a collision, refused here, is a refusal the whole check would wrongly not give). The memo only
ever refuses: an accepted token itself goes through the whole check, and a key that is not the very object that
verified (rotated, refetched) misses. ECDSA, RSA-PSS and EdDSA admit many valid signatures per message; they are
never remembered.

Entries are keyed by the signing input's text (header and payload, about 0.4 KB for a typical token) and by the
signature's canonical base64url text, each compared whole: no hash of them stands in for them, so no collision
can make one pass for another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from jwt.exceptions import DecodeError

from auth.jwks import VerificationKey
from auth.jws import canonical_segment, decode_segment

# The key set's answer for a (kid, alg) within its TTL, as JWKSCache.fresh_key gives it (None: no answer at once).
CurrentKey = Callable[[str | None, str], VerificationKey | None]

UNIQUE_SIGNATURE_ALGORITHMS = frozenset({"RS256", "RS384", "RS512"})


class _Accepted(NamedTuple):
    key: VerificationKey  # the key object that verified
    signature: str  # the canonical base64url text of the signature bytes that verified
    kid: str | None  # the header's kid and alg, to ask the key set again
    alg: str


class SignatureMemo:
    def __init__(self, max_entries: int) -> None:
        self._accepted: dict[str, _Accepted] = {}  # signing input -> what verified it
        self._signing_inputs: dict[str, str] = {}  # signature text -> the signing input it verified
        self._max_entries = max_entries

    @property
    def enabled(self) -> bool:
        return self._max_entries > 0

    def __len__(self) -> int:
        return len(self._accepted)

    def refuses(self, signing_input: str, segment: str, current_key: CurrentKey) -> bool:
        """True when the signature in `segment` cannot verify `signing_input`, and the whole check would refuse the
        token for its signature:
        - other signature bytes over an accepted token's signing input, or
        - an accepted token's signature over another payload under the same header segment,
        while the key that verified is still the very key `current_key(kid, alg)` finds for that header.

        Asked before the token's header is even read. The header is that of an accepted token, so every step
        before the signature check would pass as it did then (the configuration does not change, and the key is
        checked here); so a refusal here is the answer the whole check would give. No verdict (False) otherwise:
        an unknown signing input and signature, another key or header, a token that is not three segments, a
        segment that does not decode. The whole check answers then."""
        accepted = self._accepted.get(signing_input)
        if accepted is not None:
            if current_key(accepted.kid, accepted.alg) is not accepted.key:
                return False
            try:
                return canonical_segment(segment.encode("ascii"), "crypto") != accepted.signature.encode("ascii")
            except DecodeError:
                return False
        accepted_input = self._signing_inputs.get(segment)
        if accepted_input is None:
            return False
        return self._refuses_other_payload(signing_input, accepted_input, current_key)

    def _refuses_other_payload(self, signing_input: str, accepted_input: str, current_key: CurrentKey) -> bool:
        # The signature verified `accepted_input`, which differs from `signing_input` (it was not found above).
        header, dot, payload = signing_input.partition(".")
        if not dot or "." in payload or header != accepted_input.partition(".")[0]:
            return False  # not a JWT, or another header: the whole check says which
        accepted = self._accepted[accepted_input]
        if current_key(accepted.kid, accepted.alg) is not accepted.key:
            return False
        try:
            decode_segment(payload.encode("ascii"), "payload")  # PyJWT decodes it before checking the signature
        except DecodeError:
            return False  # malformed: the whole check says so
        return True

    def remember(self, signing_input: str, key: VerificationKey, segment: str, kid: str | None, alg: str) -> None:
        """Record the signature that verified with `key`, found for (kid, alg) of the token's header; only for
        UNIQUE_SIGNATURE_ALGORITHMS. Bounded, oldest first out."""
        if self._max_entries <= 0:
            return
        signature = canonical_segment(segment.encode("ascii"), "crypto").decode("ascii")
        self._forget(signing_input)
        self._forget(self._signing_inputs.get(signature))  # another key's equal bytes: keep one pair per signature
        self._accepted[signing_input] = _Accepted(key, signature, kid, alg)
        self._signing_inputs[signature] = signing_input
        while len(self._accepted) > self._max_entries:
            self._forget(next(iter(self._accepted)))

    def _forget(self, signing_input: str | None) -> None:
        accepted = None if signing_input is None else self._accepted.pop(signing_input, None)
        if accepted is not None:
            del self._signing_inputs[accepted.signature]

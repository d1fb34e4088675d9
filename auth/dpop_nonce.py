"""Server-provided DPoP nonces (RFC 9449 section 8) that every replica accepts without shared state.

A nonce is the time it was issued and an HMAC-SHA256 of that time under a secret: any replica holding the same
secret (OAUTH_DPOP_NONCE_SECRET) checks it, and it expires `lifetime` seconds after it was issued. Without a
configured secret each process makes its own (fine for one replica; `web.app` warns).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Callable

_CONTEXT = b"mcp-dpop-nonce\0"
_MAC_BYTES = 16
_NONCE_CHARS = 32  # base64url of 8 + 16 bytes
# Replicas' clocks differ a little: a nonce from a replica slightly ahead is still good.
CLOCK_SKEW_SECONDS = 30


class NonceSource:
    def __init__(self, secret: bytes, *, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 32:
            raise ValueError("the nonce secret needs at least 32 bytes")
        self._secret = secret
        self.lifetime = lifetime
        self._clock = clock

    @classmethod
    def generated(cls, *, lifetime: float, clock: Callable[[], float] = time.time) -> NonceSource:
        """A source with a random secret of its own: its nonces are good on this process only."""
        return cls(secrets.token_bytes(32), lifetime=lifetime, clock=clock)

    def __repr__(self) -> str:
        return f"NonceSource(lifetime={self.lifetime})"  # never the secret

    def _mac(self, issued: bytes) -> bytes:
        return hmac.new(self._secret, _CONTEXT + issued, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self) -> str:
        issued = struct.pack(">q", int(self._clock()))
        return base64.urlsafe_b64encode(issued + self._mac(issued)).decode("ascii")[:_NONCE_CHARS]

    def age(self, nonce: object) -> float | None:
        """Seconds since a nonce of this secret was issued; None when it is not one, or is past its lifetime."""
        if not isinstance(nonce, str) or len(nonce) != _NONCE_CHARS:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except (UnicodeEncodeError, binascii.Error, ValueError):
            return None
        issued, mac = raw[:8], raw[8:]
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, self._mac(issued)):
            return None
        age = self._clock() - struct.unpack(">q", issued)[0]
        return age if -CLOCK_SKEW_SECONDS <= age <= self.lifetime else None

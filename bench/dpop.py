"""DPoP (RFC 9449) for the benchmark's clients: keys, tokens bound to them, and one fresh proof per request.

wrk cannot sign, so the proofs of a run are made just before it (each is good once: the server refuses a
replayed `jti`) and written as `token<TAB>proof` lines for bench/lua/mcp_call.lua.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from bench.tokens import Issuer

# More than A answers per second on any machine we know: a run never runs out of proofs.
PROOFS_PER_SECOND = 4000


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class ProofKey:
    """One client's ES256 key: its public JWK, RFC 7638 thumbprint, and proofs for an access token."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.jwk: dict[str, Any] = ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        members = {name: self.jwk[name] for name in ("crv", "kty", "x", "y")}
        canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
        self.thumbprint = b64url(hashlib.sha256(canonical).digest())

    def proof(self, url: str, token: str, *, now: int | None = None) -> str:
        claims = {
            "jti": secrets.token_urlsafe(12),
            "htm": "POST",
            "htu": url,
            "iat": int(time.time()) if now is None else now,
            "ath": b64url(hashlib.sha256(token.encode()).digest()),
        }
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": self.jwk})


class BoundClients:
    """`count` clients, each with its own key and a DPoP-bound access token for the server at `url`."""

    def __init__(self, issuer: Issuer, url: str, count: int, prefix: str) -> None:
        self.url = url
        self.keys = [ProofKey() for _ in range(count)]
        self.tokens = [
            issuer.es256_claims({**issuer.claims(f"{prefix}-{index}", url), "cnf": {"jkt": key.thumbprint}})
            for index, key in enumerate(self.keys)
        ]

    def write_proofs(self, path: Path, count: int) -> Path:
        """`count` requests' worth of `token<TAB>proof` lines, the clients taking turns; every proof fresh now."""
        now = int(time.time())
        clients = len(self.keys)
        lines = []
        for index in range(count):
            key, token = self.keys[index % clients], self.tokens[index % clients]
            lines.append(f"{token}\t{key.proof(self.url, token, now=now)}")
        path.write_text("\n".join(lines) + "\n")
        return path

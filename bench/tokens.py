"""Signing keys and tokens for the benchmark: what a real IdP would issue to the load generator's clients."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from bench.fake_idp import OPAQUE_PREFIX

SCOPES = "use:calculator read:notes write:notes"
TOKEN_LIFETIME = 3600


class Issuer:
    """One published RSA key (RS256, the common case) and one EC key (ES256, cheap to sign in bulk)."""

    def __init__(self, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self.rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.rsa_kid = "bench-rsa-" + secrets.token_hex(4)
        self.ec_kid = "bench-ec-" + secrets.token_hex(4)

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = RSAAlgorithm.to_jwk(self.rsa_key.public_key(), as_dict=True)
        ec_jwk = ECAlgorithm.to_jwk(self.ec_key.public_key(), as_dict=True)
        return {
            "keys": [
                {**rsa_jwk, "kid": self.rsa_kid, "use": "sig", "alg": "RS256"},
                {**ec_jwk, "kid": self.ec_kid, "use": "sig", "alg": "ES256"},
            ]
        }

    def write_jwks(self, path: Path) -> None:
        path.write_text(json.dumps(self.jwks()))

    def claims(self, subject: str, audience: str | None = None) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience or self.audience,
            "azp": "bench-client",
            "scope": SCOPES,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
            "jti": secrets.token_hex(8),
        }

    def rs256(self, subject: str, audience: str | None = None) -> str:
        claims = self.claims(subject, audience)
        return jwt.encode(claims, self.rsa_key, algorithm="RS256", headers={"kid": self.rsa_kid})

    def es256(self, subject: str) -> str:
        return self.es256_claims(self.claims(subject))

    def es256_claims(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.ec_key, algorithm="ES256", headers={"kid": self.ec_kid})

    def many_es256(self, prefix: str, count: int, *, audience: str) -> list[str]:
        """`count` distinct tokens (ES256: cheap to sign in bulk) for a server whose URL is `audience`."""
        headers = {"kid": self.ec_kid}
        return [
            jwt.encode(self.claims(f"{prefix}-{index}", audience), self.ec_key, algorithm="ES256", headers=headers)
            for index in range(count)
        ]

    def unknown_kid(self, index: int) -> str:
        """Signed by a key the IdP never published, under a kid nobody knows."""
        claims = self.claims(f"intruder-{index}")
        return jwt.encode(claims, self.ec_key, algorithm="ES256", headers={"kid": f"unknown-{secrets.token_hex(6)}"})


def opaque_tokens(prefix: str, count: int) -> list[str]:
    """`count` distinct opaque tokens the fake IdP introspects as active (bench/fake_idp.py)."""
    return [f"{OPAQUE_PREFIX}{prefix}-{index}-{secrets.token_hex(16)}" for index in range(count)]


def write_tokens(path: Path, tokens: list[str]) -> Path:
    path.write_text("\n".join(tokens) + "\n")
    return path

"""One JWKS entry parsed into a public verification key: only keys this server can and may use."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from auth.http_fetch import FetchError
from settings import SUPPORTED_ALGORITHMS

logger = logging.getLogger(__name__)

MAX_KEYS = 64
MIN_RSA_BITS = 2048
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_OKP_CURVES = ("Ed25519", "Ed448")

PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    key: PublicKey

    def fits(self, alg: str) -> bool:
        """True when a token signed with `alg` may be checked with this key."""
        if self.alg is not None and self.alg != alg:
            return False
        if alg.startswith(("RS", "PS")):
            return self.kty == "RSA"
        if alg in _EC_CURVES:
            return self.kty == "EC" and self.crv == _EC_CURVES[alg]
        if alg == "EdDSA":
            return self.kty == "OKP"
        return False


def parse_jwk(entry: object) -> VerificationKey | None:
    """One JWKS entry as a public verification key, or None when this server cannot or must not use it."""
    if not isinstance(entry, dict):
        return None
    kty, kid, alg = entry.get("kty"), entry.get("kid"), entry.get("alg")
    if entry.get("use", "sig") != "sig" or any(member in entry for member in _PRIVATE_MEMBERS):
        return None
    key_ops = entry.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return None
    if (kid is not None and not isinstance(kid, str)) or (alg is not None and alg not in SUPPORTED_ALGORITHMS):
        return None
    crv = entry.get("crv")
    try:
        if kty == "RSA":
            key: Any = RSAAlgorithm.from_jwk(entry)
            if not isinstance(key, RSAPublicKey) or key.key_size < MIN_RSA_BITS:
                return None
        elif kty == "EC" and crv in _EC_CURVES.values():
            key = ECAlgorithm.from_jwk(entry)
            if not isinstance(key, EllipticCurvePublicKey):
                return None
        elif kty == "OKP" and crv in _OKP_CURVES:
            key = OKPAlgorithm.from_jwk(entry)
            if not isinstance(key, Ed25519PublicKey | Ed448PublicKey):
                return None
        else:
            return None
    except Exception:  # noqa: BLE001 - any malformed member skips this entry, never the whole set
        return None
    return VerificationKey(kid=kid, kty=kty, crv=crv, alg=alg, key=key)


def parse_jwks(document: dict[str, Any]) -> list[VerificationKey]:
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise FetchError("JWKS document has no 'keys' list")
    keys = [key for key in map(parse_jwk, entries[:MAX_KEYS]) if key is not None]
    skipped = len(entries) - len(keys)
    if skipped:
        logger.info(
            "JWKS: skipped %d entr%s this server cannot use",
            skipped,
            "y" if skipped == 1 else "ies",
        )
    if not keys:
        raise FetchError("JWKS has no usable signing keys")
    return keys

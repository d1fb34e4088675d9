"""DPoP (RFC 9449) on the client side: the proof key, the proofs it signs, and the nonces servers hand out."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Literal, NoReturn, get_args
from urllib.parse import urlsplit

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from client.errors import TokenConfigError

DPoPAlgorithm = Literal["ES256", "ES384", "EdDSA", "RS256", "PS256"]
DEFAULT_ALGORITHM: DPoPAlgorithm = "ES256"
MIN_RSA_BITS = 2048

# RFC 9449 section 8.1: nonce = 1*NQCHAR, NQCHAR = %x21 / %x23-5B / %x5D-7E. Longer nonces are ignored: a
# server cannot make every later proof (and request) grow without bound.
MAX_NONCE_LENGTH = 512
MAX_REMEMBERED_ORIGINS = 64
_NONCE = re.compile(rf"[\x21\x23-\x5b\x5d-\x7e]{{1,{MAX_NONCE_LENGTH}}}")
# `error="use_dpop_nonce"` (or the token form) in a WWW-Authenticate value; linear, no nested quantifiers.
_USE_DPOP_NONCE = re.compile(r'(?:^|[\s,])error\s*=\s*(?:"use_dpop_nonce"|use_dpop_nonce)(?=[\s,]|$)', re.IGNORECASE)

_CURVES: dict[str, tuple[type[ec.EllipticCurve], str, int]] = {
    "ES256": (ec.SECP256R1, "P-256", 32),
    "ES384": (ec.SECP384R1, "P-384", 48),
}

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class DPoPKeyError(TokenConfigError):
    """The DPoP key cannot be used (unreadable PEM, unsupported type, algorithm not fitting the key)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int, length: int | None = None) -> str:
    return _b64url(value.to_bytes(length or (value.bit_length() + 7) // 8, "big"))


def _default_algorithm(key: PrivateKey) -> DPoPAlgorithm:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        for algorithm, (curve, _, _) in _CURVES.items():
            if isinstance(key.curve, curve):
                return algorithm  # type: ignore[return-value]
        raise DPoPKeyError(f"expected an EC key on P-256 or P-384, got curve {key.curve.name}")
    raise DPoPKeyError(f"expected an EC (P-256, P-384), Ed25519 or RSA private key, got {type(key).__name__}")


def _check_fits(key: PrivateKey, algorithm: str) -> DPoPAlgorithm:
    if algorithm not in get_args(DPoPAlgorithm):
        raise DPoPKeyError(f"algorithm: expected one of {', '.join(get_args(DPoPAlgorithm))}, got {algorithm!r}")
    natural = _default_algorithm(key)
    fits = algorithm in ("RS256", "PS256") if natural == "RS256" else algorithm == natural
    if not fits:
        raise DPoPKeyError(f"algorithm {algorithm} does not fit this key (it takes {natural})")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise DPoPKeyError(f"expected an RSA key of at least {MIN_RSA_BITS} bits, got {key.key_size}")
    return algorithm  # type: ignore[return-value]


def public_jwk(key: PrivateKey) -> dict[str, str]:
    """The public half as a JWK holding exactly the RFC 7638 required members (so it is also the thumbprint input)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        numbers = key.public_key().public_numbers()
        _, crv, size = _CURVES[_default_algorithm(key)]
        return {"crv": crv, "kty": "EC", "x": _uint(numbers.x, size), "y": _uint(numbers.y, size)}
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    numbers_rsa = key.public_key().public_numbers()
    return {"e": _uint(numbers_rsa.e), "kty": "RSA", "n": _uint(numbers_rsa.n)}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638: base64url SHA-256 of the required members, sorted, without whitespace."""
    required = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in required}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(token: str) -> str:
    """The proof's `ath`: base64url SHA-256 of the access token's ASCII bytes (RFC 9449 section 4.2)."""
    return _b64url(hashlib.sha256(token.encode("ascii")).digest())


def _scheme_and_authority(url: str) -> tuple[str, str, str]:
    """Lower-case scheme and host, no user info, no default port (RFC 3986 section 6.2.3); and the path."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    default = {"https": 443, "http": 80}.get(scheme)
    authority = f"{host}:{parts.port}" if parts.port not in (None, default) else host
    return scheme, authority, parts.path or "/"


def target_uri(url: str) -> str:
    """The proof's `htu`: the request URL without query and fragment (and without user info)."""
    scheme, authority, path = _scheme_and_authority(url)
    return f"{scheme}://{authority}{path}"


def origin(url: str) -> str:
    """scheme://host[:port]: nonces are remembered per server (RFC 9449 section 8.2)."""
    scheme, authority, _ = _scheme_and_authority(url)
    return f"{scheme}://{authority}"


def usable_nonce(value: str | None) -> str | None:
    """A DPoP-Nonce header value if it has the RFC 9449 syntax (and a sane length), else None."""
    return value if value is not None and _NONCE.fullmatch(value) else None


def asks_for_nonce(challenges: list[str]) -> bool:
    """Whether any WWW-Authenticate value carries `error="use_dpop_nonce"` (RFC 9449 section 9)."""
    return any(_USE_DPOP_NONCE.search(value) for value in challenges)


class DPoPKey:
    """A DPoP proof key. The private key lives only in this object's memory: it has no repr, str or pickled
    form that shows it, and it is never written anywhere. `proof()` signs a fresh proof per request."""

    __slots__ = ("_algorithm", "_clock", "_jwk", "_private_key", "_thumbprint")

    def __init__(
        self, private_key: PrivateKey, *, algorithm: str | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        if not isinstance(private_key, PrivateKey):
            raise DPoPKeyError(
                f"expected an EC (P-256, P-384), Ed25519 or RSA private key, got {type(private_key).__name__}"
            )
        self._algorithm = _check_fits(private_key, algorithm or _default_algorithm(private_key))
        self._private_key = private_key
        self._jwk = public_jwk(private_key)
        self._thumbprint = jwk_thumbprint(self._jwk)
        self._clock = clock

    @classmethod
    def generate(cls, algorithm: str = DEFAULT_ALGORITHM, *, clock: Callable[[], float] = time.time) -> DPoPKey:
        """A new key, in memory only, for `algorithm` (ES256 by default)."""
        key: PrivateKey
        if algorithm in _CURVES:
            key = ec.generate_private_key(_CURVES[algorithm][0]())
        elif algorithm == "EdDSA":
            key = ed25519.Ed25519PrivateKey.generate()
        elif algorithm in ("RS256", "PS256"):
            key = rsa.generate_private_key(public_exponent=65537, key_size=MIN_RSA_BITS)
        else:
            raise DPoPKeyError(f"algorithm: expected one of {', '.join(get_args(DPoPAlgorithm))}, got {algorithm!r}")
        return cls(key, algorithm=algorithm, clock=clock)

    @classmethod
    def from_pem(
        cls, pem: str | bytes, *, algorithm: str | None = None, clock: Callable[[], float] = time.time
    ) -> DPoPKey:
        """A key from an unencrypted PEM private key (PKCS#8 or traditional). Errors never quote the PEM."""
        data = pem.encode("utf-8", "replace") if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise DPoPKeyError("the PEM private key is encrypted; expected an unencrypted one") from None
        except (ValueError, UnsupportedAlgorithm):
            raise DPoPKeyError("expected a PEM private key (-----BEGIN PRIVATE KEY-----)") from None
        return cls(key, algorithm=algorithm, clock=clock)  # type: ignore[arg-type]

    @property
    def algorithm(self) -> DPoPAlgorithm:
        return self._algorithm

    @property
    def public_jwk(self) -> dict[str, str]:
        return dict(self._jwk)

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 thumbprint: what a bound token carries as `cnf.jkt`."""
        return self._thumbprint

    def proof(self, method: str, url: str, *, access_token: str | None = None, nonce: str | None = None) -> str:
        """A DPoP proof JWT for one request: a new `jti` every call; `ath` when an access token goes with it."""
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(24),
            "htm": method.upper(),
            "htu": target_uri(url),
            "iat": int(self._clock()),
        }
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        headers = {"typ": "dpop+jwt", "jwk": self._jwk}
        return jwt.encode(claims, self._private_key, algorithm=self._algorithm, headers=headers)

    def __repr__(self) -> str:
        return f"DPoPKey(algorithm={self._algorithm!r}, thumbprint={self._thumbprint!r})"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("a DPoPKey cannot be pickled or copied: its private key stays in this process's memory")


class NonceMemory:
    """The last DPoP-Nonce each server (origin) sent, for the next proof to it. Bounded: least recent out."""

    def __init__(self, max_origins: int = MAX_REMEMBERED_ORIGINS) -> None:
        self._nonces: OrderedDict[str, str] = OrderedDict()
        self._max_origins = max_origins

    def __repr__(self) -> str:
        return f"NonceMemory({len(self._nonces)} origins)"

    def get(self, url: str) -> str | None:
        return self._nonces.get(origin(url))

    def remember(self, url: str, header: str | None) -> bool:
        """Keep a response's DPoP-Nonce for its origin; True if it was a usable nonce."""
        nonce = usable_nonce(header)
        if nonce is None:
            return False
        key = origin(url)
        self._nonces[key] = nonce
        self._nonces.move_to_end(key)
        while len(self._nonces) > self._max_origins:
            self._nonces.popitem(last=False)
        return True

"""Checks one DPoP proof JWT (RFC 9449 section 4.3). Pure, no I/O: the resource server and the dev issuer share it.

Replay (`auth.dpop_replay`), server nonces (`auth.dpop_nonce`) and the token's `cnf.jkt` (`auth.binding`) are
checked by the caller with what this returns.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt

from auth.claims import shown
from auth.credential import single_header
from auth.errors import InvalidDpopProof, Reason
from auth.jwk import VerificationKey, parse_jwk
from web.compat import jws

DPOP_HEADER = b"dpop"
DPOP_TYP = "dpop+jwt"
MAX_PROOF_CHARS = 8192  # a proof carries a public key: an RSA-4096 jwk and its signature fit well within
MAX_JTI_CHARS = 256
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# RFC 7638 section 3.2: the required members of each key type, in lexicographic order.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def token_hash(access_token: str) -> str:
    """The `ath` of a proof: base64url(SHA-256(the access token's ASCII text))."""
    return b64url(hashlib.sha256(access_token.encode("ascii", "surrogateescape")).digest())


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256) of an EC, RSA or OKP key; ValueError when a required member is missing."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if members is None:
        raise ValueError("unsupported kty")
    if not all(isinstance(jwk.get(name), str) for name in members):
        raise ValueError("a required member is missing or not a string")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def normalized_url(url: str) -> str | None:
    """`url` without query and fragment, scheme and host in lower case, default port dropped (RFC 3986 6.2.2-6.2.3);
    None when it is not an absolute http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path or '/'}"


@dataclass(frozen=True, slots=True)
class ProofPolicy:
    """What a proof must satisfy beyond its request: the accepted algorithms and the iat window, either way."""

    algorithms: frozenset[str]
    max_age: float


@dataclass(frozen=True, slots=True)
class DpopProof:
    """A proof that passed every check of its own: the key's thumbprint, for `cnf.jkt` and the replay guard."""

    thumbprint: str
    jti: str
    issued_at: float
    nonce: str | None


class ProofKeys:
    """The public keys of recent proofs, by their RFC 7638 thumbprint (least recently used goes first): a client
    signs every proof with the one key its token is bound to, so the key is built once per client, not once per
    request. The thumbprint is the SHA-256 of exactly the members that make the key, so one thumbprint is one
    key; a `jwk` that also names an `alg` is parsed afresh (that member limits what the key may verify)."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._max_entries = max_entries
        self._keys: OrderedDict[str, VerificationKey] = OrderedDict()

    def key(self, jwk: dict[str, Any], thumbprint: str) -> VerificationKey | None:
        if "alg" in jwk:
            return _parsed(jwk)
        key = self._keys.get(thumbprint)
        if key is not None:
            self._keys.move_to_end(thumbprint)
            return key
        key = _parsed(jwk)
        if key is not None:
            self._keys[thumbprint] = key
            if len(self._keys) > self._max_entries:
                self._keys.popitem(last=False)
        return key


def _parsed(jwk: dict[str, Any]) -> VerificationKey | None:
    return parse_jwk({name: value for name, value in jwk.items() if name not in ("use", "key_ops")})


def proof_header(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The single `DPoP` header's value; None when there is none; two are a 400 (RFC 9449 section 4.3, check 1)."""
    value = single_header(headers, DPOP_HEADER, Reason.DPOP_DUPLICATE_PROOF)
    if value is None:
        return None
    return value.decode("latin-1").strip() or None


def verify_proof(
    proof: str,
    *,
    method: str,
    url: str,
    policy: ProofPolicy,
    now: float,
    access_token: str | None = None,
    keys: ProofKeys | None = None,
) -> DpopProof:
    """The proof's key and jti when it is a valid proof for `method` on `url` (compared without query and
    fragment) at `now`, with `ath` when `access_token` is given; InvalidDpopProof saying why not."""
    try:
        return _verified(proof, method=method, url=url, policy=policy, now=now, access_token=access_token, keys=keys)
    except InvalidDpopProof:
        raise
    except jwt.InvalidSignatureError:
        raise InvalidDpopProof(Reason.DPOP_SIGNATURE) from None
    except Exception as exc:  # noqa: BLE001 - any shape of untrusted input: a 401, never a 500
        raise InvalidDpopProof(Reason.DPOP_MALFORMED, detail=f"DPoP proof: {type(exc).__name__}") from None


def _verified(
    proof: str,
    *,
    method: str,
    url: str,
    policy: ProofPolicy,
    now: float,
    access_token: str | None,
    keys: ProofKeys | None,
) -> DpopProof:
    if len(proof) > MAX_PROOF_CHARS or proof.count(".") != 2:
        raise InvalidDpopProof(Reason.DPOP_MALFORMED, detail="DPoP proof is not a compact JWS of bounded size")
    header = jws.get_unverified_header(proof)
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in (DPOP_TYP, f"application/{DPOP_TYP}"):
        raise InvalidDpopProof(Reason.DPOP_TYPE, detail=f"DPoP proof typ {shown(typ)}")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in policy.algorithms:
        raise InvalidDpopProof(Reason.DPOP_ALGORITHM, detail=f"DPoP proof alg {shown(alg, 24)} not accepted")
    if "crit" in header:
        raise InvalidDpopProof(Reason.DPOP_MALFORMED, detail="DPoP proof has critical header parameters")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise InvalidDpopProof(Reason.DPOP_KEY, detail="DPoP proof has no jwk header")
    if _PRIVATE_MEMBERS.intersection(jwk):
        raise InvalidDpopProof(Reason.DPOP_KEY, detail="DPoP proof jwk holds private key members")
    try:
        thumbprint = jwk_thumbprint(jwk)
    except ValueError:
        raise InvalidDpopProof(Reason.DPOP_KEY, detail=f"DPoP proof jwk is not a usable {alg} public key") from None
    key = keys.key(jwk, thumbprint) if keys is not None else _parsed(jwk)
    if key is None or not key.fits(alg):
        raise InvalidDpopProof(Reason.DPOP_KEY, detail=f"DPoP proof jwk is not a usable {alg} public key")
    payload = json.loads(jws.decode(proof, key=key.key, algorithms=[alg]))
    if not isinstance(payload, dict):
        raise InvalidDpopProof(Reason.DPOP_MALFORMED, detail="DPoP proof payload is not a JSON object")
    htm, htu = payload.get("htm"), payload.get("htu")
    if htm != method:
        raise InvalidDpopProof(Reason.DPOP_METHOD, detail=f"DPoP proof htm {shown(htm, 16)}, request {method}")
    expected = normalized_url(url)
    if not isinstance(htu, str) or expected is None or normalized_url(htu) != expected:
        raise InvalidDpopProof(Reason.DPOP_URL, detail=f"DPoP proof htu {shown(htu)}, expected {url!r}")
    iat = payload.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        raise InvalidDpopProof(Reason.DPOP_MALFORMED, detail="DPoP proof iat is missing or not a number")
    if abs(now - iat) > policy.max_age:
        raise InvalidDpopProof(Reason.DPOP_TIME, detail=f"DPoP proof iat is {now - iat:.0f}s from now: clock skew?")
    jti = payload.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
        raise InvalidDpopProof(Reason.DPOP_MALFORMED, detail="DPoP proof jti is missing or too long")
    if access_token is not None and payload.get("ath") != token_hash(access_token):
        raise InvalidDpopProof(Reason.DPOP_TOKEN_HASH)
    nonce = payload.get("nonce")
    return DpopProof(
        thumbprint=thumbprint, jti=jti, issued_at=float(iat), nonce=nonce if isinstance(nonce, str) else None
    )

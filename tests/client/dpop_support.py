"""Test-only DPoP checks, written apart from client/dpop.py: a proof verifier (PyJWT + cryptography), an IdP
that binds tokens to the proof's key, and an MCP server that checks every proof against its token's cnf.jkt."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER_KEY = ec.generate_private_key(ec.SECP256R1())  # signs the fake IdP's tokens
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_PROOF_AGE = 60


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638, section 3.2's required members per key type; this test's own implementation."""
    members = {"EC": ["crv", "kty", "x", "y"], "RSA": ["e", "kty", "n"], "OKP": ["crv", "kty", "x"]}[jwk["kty"]]
    text = "{" + ",".join(f'"{name}":{json.dumps(jwk[name])}' for name in sorted(members)) + "}"
    return b64url(hashlib.sha256(text.encode()).digest())


class ProofError(AssertionError):
    """The proof breaks a rule of RFC 9449 section 4.3."""


def check_proof(
    proof: str, method: str, url: str, *, token: str | None = None, nonce: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify a proof as a resource server or IdP would; returns (header, claims)."""
    header = jwt.get_unverified_header(proof)
    if header.get("typ") != "dpop+jwt":
        raise ProofError(f"typ {header.get('typ')!r}")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or PRIVATE_JWK_MEMBERS & set(jwk):
        raise ProofError("jwk missing or not a public key")
    if header["alg"] not in ("ES256", "ES384", "EdDSA", "RS256", "PS256"):
        raise ProofError(f"alg {header['alg']!r}")
    public_key = jwt.PyJWK(jwk, algorithm=header["alg"]).key
    claims = jwt.decode(proof, public_key, algorithms=[header["alg"]], options={"verify_aud": False})
    if claims.get("htm") != method:
        raise ProofError(f"htm {claims.get('htm')!r} for {method}")
    if claims.get("htu") != url:
        raise ProofError(f"htu {claims.get('htu')!r} for {url}")
    if not isinstance(claims.get("iat"), int) or abs(claims["iat"] - time.time()) > MAX_PROOF_AGE:
        raise ProofError("iat")
    if not isinstance(claims.get("jti"), str) or len(claims["jti"]) < 16:
        raise ProofError("jti")
    expected_ath = b64url(hashlib.sha256(token.encode()).digest()) if token is not None else None
    if claims.get("ath") != expected_ath:
        raise ProofError("ath")
    if claims.get("nonce") != nonce:
        raise ProofError(f"nonce {claims.get('nonce')!r}, expected {nonce!r}")
    return header, claims


def bound_token(jkt: str, *, subject: str = "client-abc", lifetime: int = 3600) -> str:
    now = int(time.time())
    claims = {"sub": subject, "iat": now, "exp": now + lifetime, "cnf": {"jkt": jkt}, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, ISSUER_KEY, algorithm="ES256")


def token_jkt(token: str) -> str:
    return jwt.decode(token, ISSUER_KEY.public_key(), algorithms=["ES256"])["cnf"]["jkt"]


@dataclass
class BindingIdP:
    """A token endpoint (for respx) that binds each token to its proof's key; optionally demands nonces."""

    url: str
    nonces: list[str] = field(default_factory=list)  # handed out in turn while `demand_nonce`
    demand_nonce: int = 0  # how many requests in a row are answered use_dpop_nonce
    token_type: str = "DPoP"
    proofs: list[dict[str, Any]] = field(default_factory=list)
    issued: list[str] = field(default_factory=list)
    current_nonce: str | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        proof = request.headers.get("DPoP")
        if proof is None:
            return httpx.Response(400, json={"error": "invalid_dpop_proof", "error_description": "no proof"})
        try:
            header, claims = check_proof(proof, "POST", self.url, nonce=self.current_nonce)
        except (ProofError, jwt.PyJWTError) as exc:
            if self.current_nonce is not None and "nonce" in str(exc):
                return self._ask_for_nonce()
            return httpx.Response(400, json={"error": "invalid_dpop_proof", "error_description": str(exc)})
        self.proofs.append(claims)
        if self.demand_nonce:
            self.demand_nonce -= 1
            return self._ask_for_nonce()
        token = bound_token(thumbprint(header["jwk"]))
        self.issued.append(token)
        body = {"access_token": token, "token_type": self.token_type, "expires_in": 3600}
        return httpx.Response(200, json=body)

    def _ask_for_nonce(self) -> httpx.Response:
        self.current_nonce = self.nonces.pop(0)
        return httpx.Response(
            400,
            json={"error": "use_dpop_nonce", "error_description": "Authorization server requires nonce in DPoP proof"},
            headers={"DPoP-Nonce": self.current_nonce},
        )


@dataclass
class DPoPServer:
    """An MCP endpoint (httpx2.MockTransport handler) that accepts a bound token only with a valid proof of its key."""

    url: str
    nonces: list[str] = field(default_factory=list)
    demand_nonce: int = 0
    refuse_tokens: set[str] = field(default_factory=set)
    current_nonce: str | None = None
    jtis: list[str] = field(default_factory=list)
    seen: list[tuple[str | None, dict[str, Any] | None]] = field(default_factory=list)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        proofs = request.headers.get_list("DPoP")
        if scheme != "DPoP" or len(proofs) != 1:
            self.seen.append((authorization, None))
            return self._refuse('DPoP error="invalid_token"')
        try:
            header, claims = check_proof(proofs[0], request.method, self.url, token=token, nonce=self.current_nonce)
        except (ProofError, jwt.PyJWTError) as exc:
            self.seen.append((authorization, None))
            if self.current_nonce is not None and "nonce" in str(exc):
                return self._ask_for_nonce()
            return self._refuse(f'DPoP error="invalid_dpop_proof", error_description="{exc}"')
        self.seen.append((authorization, claims))
        if claims["jti"] in self.jtis:
            return self._refuse('DPoP error="invalid_dpop_proof", error_description="replayed"')
        self.jtis.append(claims["jti"])
        if thumbprint(header["jwk"]) != token_jkt(token) or token in self.refuse_tokens:
            return self._refuse('DPoP error="invalid_token"')
        if self.demand_nonce:
            self.demand_nonce -= 1
            return self._ask_for_nonce()
        return httpx2.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})

    def _refuse(self, challenge: str) -> httpx2.Response:
        return httpx2.Response(401, headers={"WWW-Authenticate": challenge})

    def _ask_for_nonce(self) -> httpx2.Response:
        self.current_nonce = self.nonces.pop(0)
        return httpx2.Response(
            401,
            headers={
                "WWW-Authenticate": 'DPoP error="use_dpop_nonce", error_description="Resource server requires nonce"',
                "DPoP-Nonce": self.current_nonce,
            },
        )

"""Test support: real keys, real signed tokens, an IdP served by respx, and MCP request helpers."""

from __future__ import annotations

import gc
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import jwt
import respx
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from auth.jwks_cache import JWKSCache
from auth.jwt_verifier import JwtVerifier
from auth.token_rules import TokenRules
from settings import DEFAULT_ALGORITHMS, Settings

ISSUER = "https://idp.example.com/"  # Auth0-style trailing slash: compared exactly
JWKS_URI = "https://idp.example.com/.well-known/jwks.json"
ISSUER_B = "https://login.partner.example.org/"  # a second IdP, for several issuers
JWKS_B = "https://login.partner.example.org/keys"
DISCOVERY_URL = "https://idp.example.com/.well-known/openid-configuration"
SERVER_URL = "https://mcp.example.com/mcp"
BASE_URL = "https://mcp.example.com"
CLIENT_ID = "client-abc"
PRM_URL = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
NOTES_SCOPES = "read:notes write:notes use:calculator"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
LEGACY_VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
# The per-request metadata a 2026-07-28 client sends in `_meta` (as the SDK's own client sends it).
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
    "io.modelcontextprotocol/clientInfo": {"name": "mcp", "version": "0.1.0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


class Openable(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...


OpenableT = TypeVar("OpenableT", bound=Openable)


@asynccontextmanager
async def opened(store: OpenableT) -> AsyncIterator[OpenableT]:
    """The store opened for the block and closed after it, also when the block fails."""
    await store.open()
    try:
        yield store
    finally:
        await store.close()


class Clock:
    """A clock the test moves by hand, so TTLs, cooldowns and lifetimes pass without sleeping."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Signer:
    """A private key with its kid and algorithm; signs tokens and publishes its public JWK."""

    private_key: Any
    kid: str | None
    alg: str

    def jwk(self, **extra: Any) -> dict[str, Any]:
        public = self.private_key.public_key()
        if self.alg.startswith(("RS", "PS")):
            data = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif self.alg.startswith("ES"):
            data = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            data = OKPAlgorithm.to_jwk(public, as_dict=True)
        if self.kid is not None:
            data["kid"] = self.kid
        return {**data, "use": "sig", **extra}

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None, alg: str | None = None) -> str:
        all_headers = {"kid": self.kid} if self.kid is not None else {}
        all_headers.update(headers or {})
        return jwt.encode(claims, self.private_key, algorithm=alg or self.alg, headers=all_headers)

    def token(self, *, headers: dict[str, Any] | None = None, drop: tuple[str, ...] = (), **overrides: Any) -> str:
        return self.sign(make_claims(drop=drop, **overrides), headers=headers)


def secret_file(directory: Path, content: bytes | str | None, name: str = "secret") -> Path:
    """The path of a secret file holding `content`; None leaves the file missing."""
    path = directory / name
    if content is not None:
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def user_token(signer: Signer, subject: str, **claims: Any) -> str:
    """A person's token for the notes and calculator tools."""
    return signer.token(sub=subject, scope=NOTES_SCOPES, **claims)


def make_claims(*, drop: tuple[str, ...] = (), **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "user-123",
        "aud": SERVER_URL,
        "azp": CLIENT_ID,
        "scope": "openid profile",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    for name in drop:
        claims.pop(name, None)
    return claims


@dataclass
class FakeIdP:
    """The IdP's HTTP side, served by respx: a JWKS (and discovery) whose keys tests can change."""

    router: respx.MockRouter
    keys: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.jwks_route = self.router.get(JWKS_URI).mock(side_effect=self._jwks)
        self.discovery_route = self.router.get(DISCOVERY_URL).mock(
            return_value=httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": JWKS_URI})
        )

    def _jwks(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"keys": self.keys})

    def publish(self, *signers: Signer) -> None:
        self.keys = [s.jwk() for s in signers]

    @property
    def jwks_fetches(self) -> int:
        return self.jwks_route.call_count


def expiring_soon() -> int:
    """An `exp` one to two seconds ahead: `int(time.time()) + 1` can be only milliseconds away, and a test that
    expects the token to be accepted first then fails on a slow machine."""
    return int(time.time()) + 2


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "oauth_issuer": ISSUER,
        "oauth_jwks_uri": JWKS_URI,
        "mcp_server_url": SERVER_URL,
        "_env_file": None,
    }
    values.update(overrides)
    return Settings(**values)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rpc_body(method: str, params: dict[str, Any] | None = None, request_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}


def initialize_body(request_id: int = 1) -> dict[str, Any]:
    return rpc_body(
        "initialize",
        {"protocolVersion": LEGACY_VERSION, "capabilities": {}, "clientInfo": {"name": "tests", "version": "1"}},
        request_id,
    )


def parse_mcp_response(response: httpx.Response | Any) -> dict[str, Any]:
    """The JSON-RPC message in a JSON or SSE answer."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                return json.loads(line[5:])
        raise AssertionError(f"no data in SSE answer: {response.text!r}")
    return response.json()


def legacy_headers(token: str | None = None, session_id: str | None = None) -> dict[str, str]:
    headers = {**MCP_HEADERS, "MCP-Protocol-Version": LEGACY_VERSION}
    if token is not None:
        headers.update(bearer(token))
    if session_id is not None:
        headers["Mcp-Session-Id"] = session_id
    return headers


@contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """What becomes unreachable only through reference cycles inside the block (found by the collector)."""
    found: list[object] = []
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


class CollidingText(str):
    """Text whose hash equals every other's: what a hash collision looks like to a dict keyed by it."""

    def __hash__(self) -> int:
        return 42


def make_verifier(
    keys: JWKSCache,
    *,
    issuer: str = ISSUER,
    audiences: Any = (SERVER_URL,),
    algorithms: Any = DEFAULT_ALGORITHMS,
    leeway: float = 30,
    **options: Any,
) -> JwtVerifier:
    """A verifier for the test IdP: the given issuer and audiences, every other rule off."""
    rules = TokenRules.create(issuers=(issuer,), audiences=tuple(audiences), leeway=leeway)
    return JwtVerifier(keys, rules, algorithms=algorithms, **options)


@dataclass
class DpopKey:
    """A client's DPoP key: signs proofs (RFC 9449 section 4.2) and knows its RFC 7638 thumbprint."""

    private_key: Any
    alg: str

    def public_jwk(self) -> dict[str, Any]:
        jwk = Signer(self.private_key, None, self.alg).jwk()
        jwk.pop("use", None)
        return jwk

    @property
    def thumbprint(self) -> str:
        from auth.dpop_proof import jwk_thumbprint

        return jwk_thumbprint(self.public_jwk())

    def proof(
        self,
        htm: str = "POST",
        htu: str = SERVER_URL,
        *,
        token: str | None = None,
        iat: float | None = None,
        nonce: str | None = None,
        headers: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        **claims: Any,
    ) -> str:
        from auth.dpop_proof import token_hash

        payload: dict[str, Any] = {"htm": htm, "htu": htu, "iat": int(time.time()) if iat is None else iat}
        payload["jti"] = uuid.uuid4().hex
        if token is not None:
            payload["ath"] = token_hash(token)
        if nonce is not None:
            payload["nonce"] = nonce
        payload.update(claims)
        for name in drop:
            payload.pop(name, None)
        header = {"typ": "dpop+jwt", "jwk": self.public_jwk(), **(headers or {})}
        return jwt.encode(payload, self.private_key, algorithm=self.alg, headers=header)


def dpop_headers(token: str, proof: str) -> dict[str, str]:
    return {**MCP_HEADERS, "Authorization": f"DPoP {token}", "DPoP": proof}

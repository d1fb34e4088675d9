"""The benchmark's stand-in IdP answers introspection as RFC 7662 says, and its DPoP clients make proofs a
server accepts: signed with the key the token is bound to, for this request, each once."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
import jwt
import pytest

from bench.dpop import BoundClients
from bench.fake_idp import build_idp
from bench.tokens import Issuer, opaque_tokens

URL = "http://127.0.0.1:9/mcp"
CLAIMS = {"iss": "http://127.0.0.1:8/", "aud": URL, "scope": "use:calculator", "client_id": "bench-client"}


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer("http://127.0.0.1:8/", audience=URL)


async def introspect(client: httpx.AsyncClient, token: str) -> dict[str, object]:
    response = await client.post("/introspect", data={"token": token, "token_type_hint": "access_token"})
    assert response.status_code == 200
    return response.json()


async def test_the_fake_idp_introspects_its_opaque_tokens_and_counts_every_request():
    transport = httpx.ASGITransport(app=build_idp(b'{"keys": []}', CLAIMS))
    async with httpx.AsyncClient(transport=transport, base_url="http://idp") as client:
        (token,) = opaque_tokens("one", 1)
        answer = await introspect(client, token)
        assert answer["active"] is True
        assert {name: answer[name] for name in CLAIMS} == CLAIMS
        assert answer["sub"] == "one-0"  # never the token itself
        assert answer["exp"] > answer["iat"]
        assert await introspect(client, "someone-elses-token") == {"active": False}
        stats = (await client.get("/stats")).json()
    assert stats == {"jwks_fetches": 0, "introspections": 2}


def test_opaque_tokens_are_distinct():
    tokens = opaque_tokens("rotating", 1000)
    assert len(set(tokens)) == 1000


def thumbprint(jwk: dict[str, str]) -> str:
    canonical = json.dumps({name: jwk[name] for name in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def test_each_proof_is_fresh_signed_by_the_bound_key_and_names_its_token(issuer: Issuer, tmp_path: Path):
    clients = BoundClients(issuer, URL, 3, "dpop")
    lines = clients.write_proofs(tmp_path / "proofs.txt", 6).read_text().splitlines()
    assert len(lines) == 6
    jtis = set()
    for line in lines:
        token, proof = line.split("\t")
        header = jwt.get_unverified_header(proof)
        assert header["typ"] == "dpop+jwt"
        assert header["alg"] == "ES256"
        assert "d" not in header["jwk"]  # the public key only
        key = jwt.PyJWK(header["jwk"], algorithm="ES256")
        claims = jwt.decode(proof, key.key, algorithms=["ES256"])
        assert claims["htm"] == "POST"
        assert claims["htu"] == URL
        digest = hashlib.sha256(token.encode()).digest()
        assert claims["ath"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        bound = jwt.decode(token, options={"verify_signature": False})
        assert bound["cnf"] == {"jkt": thumbprint(header["jwk"])}
        jtis.add(claims["jti"])
    assert len(jtis) == 6
    # the clients take turns: three distinct tokens
    assert len({line.split("\t")[0] for line in lines}) == 3

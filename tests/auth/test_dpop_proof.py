"""One DPoP proof checked as RFC 9449 section 4.3 says, with real keys (EC P-256/P-384, RSA, Ed25519)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from auth.dpop_proof import (
    ProofKeys,
    ProofPolicy,
    jwk_thumbprint,
    normalized_url,
    proof_header,
    token_hash,
    verify_proof,
)
from auth.errors import InvalidDpopProof, InvalidRequest, Reason
from settings import DEFAULT_DPOP_ALGORITHMS
from tests.support import SERVER_URL, DpopKey

POLICY = ProofPolicy(algorithms=frozenset(DEFAULT_DPOP_ALGORITHMS), max_age=300)
TOKEN = "header.payload.signature"


@pytest.fixture(params=["ES256", "ES384", "RS256", "PS256", "EdDSA"])
def key(request, ec_private_key, ec384_private_key, rsa_private_key, ed_private_key) -> DpopKey:
    private = {
        "ES256": ec_private_key,
        "ES384": ec384_private_key,
        "RS256": rsa_private_key,
        "PS256": rsa_private_key,
        "EdDSA": ed_private_key,
    }[request.param]
    return DpopKey(private, request.param)


@pytest.fixture
def ec_key(ec_private_key) -> DpopKey:
    return DpopKey(ec_private_key, "ES256")


def checked(proof: str, *, method: str = "POST", url: str = SERVER_URL, now: float | None = None, **options: Any):
    return verify_proof(
        proof, method=method, url=url, policy=options.pop("policy", POLICY), now=now or time.time(), **options
    )


def refused(proof: str, **options: Any) -> InvalidDpopProof:
    with pytest.raises(InvalidDpopProof) as caught:
        checked(proof, **options)
    assert caught.value.status == 401 and caught.value.error == "invalid_dpop_proof"
    return caught.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"sig") -> str:
    return ".".join(b64(json.dumps(part).encode()) for part in (header, payload)) + "." + b64(signature)


def test_a_valid_proof_of_each_key_type_gives_its_thumbprint_and_jti(key):
    proof = checked(key.proof(token=TOKEN, jti="j-1", nonce="n-1"), access_token=TOKEN)
    assert proof.thumbprint == key.thumbprint
    assert (proof.jti, proof.nonce) == ("j-1", "n-1")


def test_the_rfc_7638_thumbprint_of_the_rfcs_own_example():
    jwk = {
        "kty": "RSA",
        "n": (
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjB"
            "ZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8"
            "KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_"
            "xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        ),
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_ath_is_the_base64url_sha256_of_the_token():
    assert token_hash("abc") == "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"


# --- the header ------------------------------------------------------------------------------------


@pytest.mark.parametrize("typ", [None, "JWT", "at+jwt", "dpop"])
def test_typ_must_be_dpop_jwt(ec_key, typ):
    headers = {"typ": typ} if typ is not None else {"typ": None}
    assert refused(ec_key.proof(headers=headers)).reason is Reason.DPOP_TYPE


def test_typ_is_compared_as_a_media_type(ec_key):
    checked(ec_key.proof(headers={"typ": "DPoP+JWT"}))
    checked(ec_key.proof(headers={"typ": "application/dpop+jwt"}))


def test_an_hmac_proof_is_refused(ec_key):
    proof = jwt.encode(
        {"htm": "POST", "htu": SERVER_URL, "iat": int(time.time()), "jti": "x"},
        "a-shared-secret-of-at-least-32-bytes!!",
        algorithm="HS256",
        headers={"typ": "dpop+jwt", "jwk": ec_key.public_jwk()},
    )
    assert refused(proof).reason is Reason.DPOP_ALGORITHM


def test_alg_none_is_refused(ec_key):
    payload = {"htm": "POST", "htu": SERVER_URL, "iat": int(time.time()), "jti": "x"}
    proof = forged({"typ": "dpop+jwt", "alg": "none", "jwk": ec_key.public_jwk()}, payload, b"")
    assert refused(proof).reason is Reason.DPOP_ALGORITHM


def test_an_algorithm_outside_the_configured_list_is_refused(ec_key):
    policy = ProofPolicy(algorithms=frozenset({"EdDSA"}), max_age=300)
    assert refused(ec_key.proof(), policy=policy).reason is Reason.DPOP_ALGORITHM


def test_a_proof_without_a_jwk_is_refused(ec_key):
    proof = jwt.encode({"htm": "POST"}, ec_key.private_key, algorithm="ES256", headers={"typ": "dpop+jwt"})
    assert refused(proof).reason is Reason.DPOP_KEY


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_a_private_jwk_is_refused(alg, ec_private_key, rsa_private_key, ed_private_key):
    private = {"ES256": ec_private_key, "RS256": rsa_private_key, "EdDSA": ed_private_key}[alg]
    algorithm = jwt.get_algorithm_by_name(alg)
    private_jwk = json.loads(algorithm.to_jwk(private))
    assert "d" in private_jwk
    proof = DpopKey(private, alg).proof(headers={"jwk": private_jwk})
    exc = refused(proof)
    assert exc.reason is Reason.DPOP_KEY and "private" in exc.detail


def test_a_jwk_that_does_not_fit_the_alg_is_refused(ec_key, ec384_private_key):
    other = DpopKey(ec384_private_key, "ES384")
    assert refused(ec_key.proof(headers={"jwk": other.public_jwk()})).reason is Reason.DPOP_KEY


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # signing it, as an attacker would
def test_a_small_rsa_key_is_refused():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert refused(DpopKey(small, "RS256").proof()).reason is Reason.DPOP_KEY


def test_the_signature_must_be_by_the_jwk(ec_key):
    impostor = DpopKey(ec.generate_private_key(ec.SECP256R1()), "ES256")
    proof = impostor.proof(headers={"jwk": ec_key.public_jwk()})  # claims ec_key, signed by another
    assert refused(proof).reason is Reason.DPOP_SIGNATURE


def test_critical_header_parameters_are_refused(ec_key):
    assert refused(ec_key.proof(headers={"crit": ["exp"], "exp": 1})).reason is Reason.DPOP_MALFORMED


# --- the claims ------------------------------------------------------------------------------------


def test_htm_must_be_the_request_method(ec_key):
    assert refused(ec_key.proof("GET")).reason is Reason.DPOP_METHOD
    assert refused(ec_key.proof("post")).reason is Reason.DPOP_METHOD
    checked(ec_key.proof("GET"), method="GET")


def test_htu_is_compared_without_query_and_fragment_and_normalised(ec_key):
    checked(ec_key.proof(htu=SERVER_URL + "?x=1#frag"))
    checked(ec_key.proof(htu="HTTPS://MCP.example.com:443/mcp"))


@pytest.mark.parametrize(
    "htu",
    [
        "https://mcp.example.com/mcp/",
        "https://mcp.example.com/other",
        "http://mcp.example.com/mcp",
        "https://mcp.example.com:8443/mcp",
        "https://pod-1.internal:8000/mcp",
        "https://user@mcp.example.com/mcp",
        "mcp.example.com/mcp",
        "",
    ],
)
def test_any_other_htu_is_refused(ec_key, htu):
    assert refused(ec_key.proof(htu=htu)).reason is Reason.DPOP_URL


def test_a_missing_htu_is_refused(ec_key):
    assert refused(ec_key.proof(drop=("htu",))).reason is Reason.DPOP_URL


@pytest.mark.parametrize("offset", [-200, 200, -300, 300])
def test_iat_within_the_window_passes_either_way(ec_key, offset):
    now = time.time()
    checked(ec_key.proof(iat=int(now) + offset), now=int(now))


@pytest.mark.parametrize("offset", [-400, 400, -301, 301])
def test_iat_outside_the_window_fails_either_way(ec_key, offset):
    now = int(time.time())
    assert refused(ec_key.proof(iat=now + offset), now=now).reason is Reason.DPOP_TIME


@pytest.mark.parametrize("iat", ["now", [], True, 1e400])
def test_an_iat_that_is_not_a_number_is_refused(ec_key, iat):
    assert refused(ec_key.proof(iat=iat)).reason is Reason.DPOP_MALFORMED


@pytest.mark.parametrize("jti", [None, "", 5, "x" * 257])
def test_a_jti_is_required(ec_key, jti):
    proof = ec_key.proof(drop=("jti",)) if jti is None else ec_key.proof(jti=jti)
    assert refused(proof).reason is Reason.DPOP_MALFORMED


def test_ath_must_hash_the_presented_token(ec_key):
    assert refused(ec_key.proof(token="another"), access_token=TOKEN).reason is Reason.DPOP_TOKEN_HASH
    assert refused(ec_key.proof(), access_token=TOKEN).reason is Reason.DPOP_TOKEN_HASH
    checked(ec_key.proof(), access_token=None)  # at a token endpoint there is no token yet


# --- the header field and any input --------------------------------------------------------------


def test_the_dpop_header_is_read_once():
    assert proof_header([(b"DPoP", b" a.b.c ")]) == "a.b.c"
    assert proof_header([(b"authorization", b"x")]) is None
    assert proof_header([(b"dpop", b"  ")]) is None
    with pytest.raises(InvalidRequest) as caught:
        proof_header([(b"dpop", b"a.b.c"), (b"DPoP", b"d.e.f")])
    assert caught.value.status == 400 and caught.value.reason is Reason.DPOP_DUPLICATE_PROOF


def test_urls_are_normalised_or_refused():
    assert normalized_url("HTTPS://Example.COM:443/a?b#c") == "https://example.com/a"
    assert normalized_url("http://[::1]:8000") == "http://[::1]:8000/"
    assert normalized_url("https://example.com:99999/") is None
    assert normalized_url("ftp://example.com/") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    header=st.dictionaries(st.sampled_from(["typ", "alg", "jwk", "crit", "kid"]), json_values, max_size=3),
    payload=st.dictionaries(st.sampled_from(["htm", "htu", "iat", "jti", "ath", "nonce"]), json_values, max_size=4),
)
@example(header={"alg": "ES256", "typ": "dpop+jwt", "jwk": {"kty": "EC", "crv": "P-256", "x": 1}}, payload={})
@example(header={"alg": "EdDSA", "typ": "dpop+jwt", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": ""}}, payload={})
def test_any_proof_shape_is_refused_with_an_invalid_dpop_proof(ec_key, header, payload):
    base_header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": ec_key.public_jwk()}
    proof = forged({**base_header, **header}, payload)
    refused(proof, access_token=TOKEN)


@settings(max_examples=80, deadline=None)
@given(text=st.text(max_size=300))
@example(text="a.b.c")
@example(text="..")
@example(text="e30.e30.")
def test_any_text_is_refused_with_an_invalid_dpop_proof(text):
    refused(text)


def test_a_clients_key_is_built_once_and_still_checks_every_proof(ec_key, ec384_private_key):
    keys = ProofKeys(max_entries=1)
    first = checked(ec_key.proof(), keys=keys)
    assert checked(ec_key.proof(), keys=keys).thumbprint == first.thumbprint
    held = keys.key(ec_key.public_jwk(), first.thumbprint)
    assert held is keys.key(ec_key.public_jwk(), first.thumbprint)  # the same object: built once
    # the held key verifies nothing it did not sign: another signature over the same content is refused
    header, payload, _ = ec_key.proof().split(".")
    other = ec_key.proof().split(".")[2]
    assert refused(f"{header}.{payload}.{other}", keys=keys).reason is Reason.DPOP_SIGNATURE
    # bounded: a second client's key pushes the first one out
    second = DpopKey(ec384_private_key, "ES384")
    checked(second.proof(), keys=keys)
    assert keys.key(ec_key.public_jwk(), first.thumbprint) is not held


def test_a_jwk_naming_an_alg_is_judged_by_it_every_time(ec_key):
    keys = ProofKeys()
    checked(ec_key.proof(), keys=keys)  # the key held, built from a jwk without alg
    proof = ec_key.proof(headers={"jwk": {**ec_key.public_jwk(), "alg": "ES384"}})
    assert refused(proof, keys=keys).reason is Reason.DPOP_KEY  # ES256 proof, jwk says ES384: not the held key

"""DPoPKey: proofs checked with PyJWT + cryptography for every key type, the key kept out of repr and pickles,
and the nonce and challenge parsers fed any header value a server could send."""

from __future__ import annotations

import base64
import copy
import logging
import pickle
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.dpop import (
    MAX_NONCE_LENGTH,
    DPoPKey,
    DPoPKeyError,
    NonceMemory,
    asks_for_nonce,
    origin,
    target_uri,
    usable_nonce,
)
from tests.client.dpop_support import check_proof, thumbprint
from tests.support import Clock

ALGORITHMS = ["ES256", "ES384", "EdDSA", "RS256", "PS256"]
BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
URL = "https://mcp.example.com/team-a/mcp"


def pem_of(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def keys() -> dict[str, DPoPKey]:
    return {algorithm: DPoPKey.generate(algorithm) for algorithm in ALGORITHMS}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_proof_verifies_with_its_embedded_public_key(keys, algorithm) -> None:
    key = keys[algorithm]

    header, claims = check_proof(
        key.proof("post", URL + "?session=1#frag", access_token="tok-1", nonce="n-1"),
        "POST",
        URL,
        token="tok-1",
        nonce="n-1",
    )

    assert header["alg"] == algorithm
    assert header["typ"] == "dpop+jwt"
    assert thumbprint(header["jwk"]) == key.thumbprint
    assert set(claims) == {"jti", "htm", "htu", "iat", "ath", "nonce"}


def test_every_proof_has_a_new_jti(keys) -> None:
    key = keys["ES256"]
    jtis = {check_proof(key.proof("GET", URL), "GET", URL)[1]["jti"] for _ in range(200)}
    assert len(jtis) == 200


def test_a_proof_without_token_or_nonce_has_no_ath_or_nonce(keys) -> None:
    _, claims = check_proof(keys["ES256"].proof("POST", URL), "POST", URL)
    assert "ath" not in claims
    assert "nonce" not in claims


def test_iat_comes_from_the_clock() -> None:
    key = DPoPKey.generate(clock=Clock(1_700_000_000.7))
    claims = jwt.decode(key.proof("GET", URL), options={"verify_signature": False})
    assert claims["iat"] == 1_700_000_000


def test_the_thumbprint_matches_rfc_8037_appendix_a3() -> None:
    private = base64.urlsafe_b64decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
    key = DPoPKey(ed25519.Ed25519PrivateKey.from_private_bytes(private))

    assert key.public_jwk == {"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert key.thumbprint == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


@pytest.mark.parametrize(
    ("url", "htu"),
    [
        ("https://MCP.Example.com:443/mcp?x=1#f", "https://mcp.example.com/mcp"),
        ("http://127.0.0.1:8000/mcp?", "http://127.0.0.1:8000/mcp"),
        ("https://user:pw@mcp.example.com/a/b/", "https://mcp.example.com/a/b/"),
        ("http://[::1]:8000/mcp", "http://[::1]:8000/mcp"),
        ("https://mcp.example.com", "https://mcp.example.com/"),
    ],
)
def test_htu_is_the_url_without_query_fragment_or_default_port(url, htu) -> None:
    assert target_uri(url) == htu


def test_origins_ignore_path_and_default_port() -> None:
    assert (
        origin("https://Mcp.example.com:443/mcp?x")
        == origin("https://mcp.example.com/other")
        != origin("https://mcp.example.com:8443/mcp")
    )


# --- loading keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("private_key", "algorithm"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    ],
    ids=["p256", "p384", "ed25519", "rsa"],
)
def test_a_pem_key_gets_the_algorithm_of_its_type(private_key, algorithm) -> None:
    key = DPoPKey.from_pem(pem_of(private_key).decode())

    assert key.algorithm == algorithm
    check_proof(key.proof("GET", URL), "GET", URL)


def test_an_rsa_key_may_sign_with_ps256() -> None:
    key = DPoPKey.from_pem(pem_of(rsa.generate_private_key(65537, 2048)), algorithm="PS256")
    assert jwt.get_unverified_header(key.proof("GET", URL))["alg"] == "PS256"


@pytest.mark.parametrize(
    ("pem", "algorithm", "message"),
    [
        (b"not a key", None, "expected a PEM private key"),
        (pem_of(ec.generate_private_key(ec.SECP256R1())), "RS256", "algorithm RS256 does not fit this key"),
        (pem_of(ec.generate_private_key(ec.SECP256R1())), "HS256", "algorithm: expected one of"),
        (pem_of(ec.generate_private_key(ec.SECP256K1())), None, "expected an EC key on P-256 or P-384"),
        (pem_of(rsa.generate_private_key(65537, 1024)), None, "at least 2048 bits"),
        (
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"pass"),
            ),
            None,
            "encrypted",
        ),
    ],
    ids=["garbage", "wrong-alg", "symmetric-alg", "secp256k1", "rsa-1024", "encrypted"],
)
def test_an_unusable_key_is_a_clear_error_without_the_pem(pem, algorithm, message) -> None:
    with pytest.raises(DPoPKeyError, match=message) as caught:
        DPoPKey.from_pem(pem, algorithm=algorithm)
    assert "PRIVATE KEY-----\n" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_an_unknown_algorithm_cannot_be_generated() -> None:
    with pytest.raises(DPoPKeyError, match="algorithm: expected one of ES256, ES384, EdDSA, RS256, PS256"):
        DPoPKey.generate("none")


# --- the private key stays private ----------------------------------------------------------------


def test_repr_str_and_logs_show_only_the_algorithm_and_thumbprint(tmp_path: Path, caplog) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = pem_of(private).decode()
    key = DPoPKey.from_pem(pem)
    secret_number = str(private.private_numbers().private_value)
    d = base64.urlsafe_b64encode(private.private_numbers().private_value.to_bytes(32, "big")).rstrip(b"=").decode()

    with caplog.at_level(logging.DEBUG):
        logging.getLogger(__name__).info("key %s %r", key, key)
    shown = [repr(key), str(key), f"{key}", caplog.text]

    assert key.thumbprint in repr(key)
    for text in shown:
        assert pem.splitlines()[1] not in text
        assert d not in text
        assert secret_number not in text
    with pytest.raises(TypeError):
        vars(key)


@pytest.mark.parametrize(
    "copier",
    [pickle.dumps, copy.copy, copy.deepcopy, lambda key: pickle.dumps(key, protocol=0)],
    ids=["pickle", "copy", "deepcopy", "pickle-0"],
)
def test_a_key_cannot_be_pickled_or_copied(keys, copier) -> None:
    with pytest.raises(TypeError, match="cannot be pickled or copied") as caught:
        copier(keys["ES256"])
    assert "PRIVATE" not in str(caught.value)


# --- what servers send back: any value, no crash ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "usable"),
    [
        ("eyJ7S_zG.eyJH0-Z.HX4w-7v", True),
        ("a" * MAX_NONCE_LENGTH, True),
        ("a" * (MAX_NONCE_LENGTH + 1), False),
        ("", False),
        ("with space", False),
        ('quote"inside', False),
        ("back\\slash", False),
        ("é", False),
        (None, False),
    ],
)
def test_a_nonce_must_have_the_rfc_9449_syntax(value, usable) -> None:
    assert usable_nonce(value) == (value if usable else None)


@pytest.mark.parametrize(
    ("challenges", "asks"),
    [
        (['DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"'], True),
        (['Bearer realm="x", DPoP algs="ES256", error="use_dpop_nonce"'], True),
        (['Bearer resource_metadata="https://h/x"', 'DPoP error="use_dpop_nonce"'], True),
        (["DPoP error=use_dpop_nonce"], True),
        (['DPoP error="invalid_token", error_description="use_dpop_nonce"'], False),
        (['DPoP error="use_dpop_nonce_please"'], False),
        (['DPoP myerror="use_dpop_nonce"'], False),
        ([], False),
    ],
)
def test_the_nonce_challenge_is_read_from_the_error_parameter(challenges, asks) -> None:
    assert asks_for_nonce(challenges) is asks


@BOUNDED
@given(st.lists(st.text(max_size=2000), max_size=4))
def test_any_challenge_is_read_without_crashing(challenges: list[str]) -> None:
    assert isinstance(asks_for_nonce(challenges), bool)


@BOUNDED
@given(
    st.one_of(
        st.none(),
        st.text(max_size=2000),
        st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=600),
    ),
    st.sampled_from(["https://a.example/mcp", "http://127.0.0.1:8000/x", "https://b.example:8443/"]),
)
def test_any_nonce_header_is_remembered_only_if_usable(value: str | None, url: str) -> None:
    memory = NonceMemory()
    kept = memory.remember(url, value)
    assert kept is (usable_nonce(value) is not None)
    assert memory.get(url) == (value if kept else None)
    if kept:
        check_proof(DPoPKey.generate().proof("GET", url, nonce=memory.get(url)), "GET", target_uri(url), nonce=value)


def test_nonce_memory_is_bounded_and_per_origin() -> None:
    memory = NonceMemory(max_origins=3)
    for port in range(1, 6):
        memory.remember(f"https://h.example:{port}/mcp", f"n{port}")

    assert [memory.get(f"https://h.example:{port}/x") for port in range(1, 6)] == [None, None, "n3", "n4", "n5"]
    assert memory.get("https://other.example/mcp") is None

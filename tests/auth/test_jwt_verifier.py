"""JwtVerifier: every rule a bearer JWT must pass to become a Principal, checked with real keys and tokens."""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import ssl
import time
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from jwt.algorithms import get_default_algorithms

from auth.claims import TokenClaims
from auth.errors import InvalidToken, KeySetUnavailable, Reason
from auth.jwks_cache import JWKSCache
from auth.jwt_verifier import JwtVerifier
from auth.principal import Principal
from auth.token_rules import TokenRules
from settings import DEFAULT_ALGORITHMS
from tests.support import CLIENT_ID, ISSUER, JWKS_URI, SERVER_URL, Clock, Signer, make_claims, make_verifier

ATTACKER_JWKS = "https://attacker.example/jwks.json"
ATTACKER_CERT = "https://attacker.example/cert.pem"
MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z
BAD_UTF8_HEADER = b'{"alg": "RS256", "kid": "\xff"}'


# --- building blocks ---------------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


@pytest.fixture
async def keys(idp, clock, tls_context, monkeypatch):
    # Loading the CA bundle for each cache's client would dominate the run; respx answers anyway.
    monkeypatch.setattr(httpx, "AsyncClient", functools.partial(httpx.AsyncClient, verify=tls_context))
    cache = JWKSCache(JWKS_URI, clock=clock)
    yield cache
    await cache.aclose()


def normalise_scopes(claims: dict[str, Any], *, prefix: str = "") -> frozenset[str]:
    return TokenClaims.parse(claims).scopes(prefix)


def client_id_of(claims: dict[str, Any]) -> str | None:
    return TokenClaims.parse(claims).client_id


def is_machine_token(claims: dict[str, Any], subject: str, client_id: str | None) -> bool:
    client = {"azp": client_id} if client_id else {}
    return TokenClaims.parse({"sub": subject, **client, **claims}).is_machine


def principal_from_claims(claims: dict[str, Any], *, scope_prefix: str = "") -> Principal:
    rules = TokenRules.create(issuers=(ISSUER,), audiences=(SERVER_URL,), scope_prefix=scope_prefix)
    return rules.principal(TokenClaims.parse(claims))


@pytest.fixture
def verifier(keys) -> JwtVerifier:
    return make_verifier(keys)


@pytest.fixture
def ec384_signer(ec384_private_key) -> Signer:
    return Signer(ec384_private_key, "ec384-1", "ES384")


@pytest.fixture
def attacker(second_rsa_private_key) -> Signer:
    """A key the IdP never published, presenting itself under the IdP's kid."""
    return Signer(second_rsa_private_key, "rsa-1", "RS256")


@pytest.fixture
def signers(idp, signer, ec_signer, ec384_signer, ed_signer) -> dict[str, Signer]:
    idp.publish(signer, ec_signer, ec384_signer, ed_signer)
    return {"rsa": signer, "ec": ec_signer, "ec384": ec384_signer, "ed": ed_signer}


@pytest.fixture
def anything_else(idp):
    """Catches any request that is not for the published JWKS, so it is recorded instead of swallowed."""
    return idp.router.route().mock(return_value=httpx.Response(200, json={"keys": []}))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def hand_signed(private_key: Any, alg: str, header: bytes, payload: bytes) -> str:
    """A compact JWS with exactly these header and payload bytes, really signed with `alg`."""
    signing_input = f"{b64url(header)}.{b64url(payload)}".encode()
    signature = get_default_algorithms()[alg].sign(signing_input, private_key)
    return f"{signing_input.decode()}.{b64url(signature)}"


def rs256(signer: Signer, payload: bytes, **header: Any) -> str:
    return hand_signed(signer.private_key, "RS256", as_json({"alg": "RS256", "kid": signer.kid, **header}), payload)


def claims_without(*names: str, **overrides: Any) -> dict[str, Any]:
    """The usual claims with `names` removed, then `overrides` applied."""
    return {**make_claims(drop=names), **overrides}


def claims_with_raw(name: str, literal: str, **overrides: Any) -> bytes:
    """Claims JSON where one claim's value is the literal text given (Infinity, 1e400, ...)."""
    text = json.dumps(claims_without(name, **overrides))
    return f'{text[:-1]}, "{name}": {literal}}}'.encode()


async def refused(verifier: JwtVerifier, token: Any) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    assert type(caught.value) is InvalidToken
    assert caught.value.status == 401
    return caught.value


def self_signed_certificate(private_key: Any) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example.com")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(private_key, hashes.SHA256())
    )
    return base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


# --- construction --------------------------------------------------------------------------------
def test_an_audience_is_required(keys):
    with pytest.raises(ValueError, match="audience"):
        make_verifier(keys, audiences=[])


async def test_other_signature_bytes_over_an_accepted_token_are_refused_fresh_and_remembered(verifier, signer):
    """The header and payload of an accepted RS256 token under other signature bytes: a bad signature, whether the
    verification cache answers (no RSA operation) or the whole check does."""
    token = signer.token()
    assert (await verifier.verify(token)).subject == "user-123"
    segment = token.rpartition(".")[2]
    forged = token.rpartition(".")[0] + "." + segment[:20] + "abcdef" + segment[26:]
    for _ in range(2):
        assert (await refused(verifier, forged)).reason is Reason.BAD_SIGNATURE
    assert (await refused(make_verifier(verifier._keys, cache_entries=0), forged)).reason is Reason.BAD_SIGNATURE


async def test_valid_token_becomes_a_principal(verifier, signer):
    claims = make_claims()
    principal = await verifier.verify(signer.sign(claims))
    assert principal.subject == "user-123"
    assert principal.client_id == CLIENT_ID
    assert principal.issuer == ISSUER
    assert principal.audience == (SERVER_URL,)
    assert principal.scopes == frozenset({"openid", "profile"})
    assert principal.token_id == claims["jti"]
    assert principal.is_machine is False


# --- algorithms ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("alg", "key"),
    [
        ("RS256", "rsa"),
        ("RS384", "rsa"),
        ("RS512", "rsa"),
        ("PS256", "rsa"),
        ("ES256", "ec"),
        ("ES384", "ec384"),
        ("EdDSA", "ed"),
    ],
)
async def test_accepts_each_default_algorithm_with_its_key(verifier, signers, alg, key):
    token = signers[key].sign(make_claims(), alg=alg)
    assert jwt.get_unverified_header(token)["alg"] == alg
    principal = await verifier.verify(token)
    assert principal.subject == "user-123"


@pytest.mark.parametrize(("alg", "key"), [("PS256", "rsa"), ("RS512", "rsa"), ("ES256", "ec"), ("EdDSA", "ed")])
async def test_refuses_algorithm_outside_the_allow_list(keys, idp, signers, alg, key):
    token = signers[key].sign(make_claims(), alg=alg)
    exc = await refused(make_verifier(keys, algorithms=["RS256"]), token)
    assert exc.description == "token algorithm is not accepted"
    assert idp.jwks_fetches == 0  # refused before any network
    assert (await make_verifier(keys, algorithms=[alg]).verify(token)).subject == "user-123"


@pytest.mark.parametrize("alg", ["PS384", "PS512"])
async def test_default_allow_list_leaves_out_other_rsa_algorithms(verifier, signer, alg):
    exc = await refused(verifier, signer.sign(make_claims(), alg=alg))
    assert exc.description == "token algorithm is not accepted"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_refuses_unsigned_token(verifier, idp, alg):
    token = f"{b64url(as_json({'alg': alg, 'typ': 'JWT'}))}.{b64url(as_json(make_claims()))}."
    exc = await refused(verifier, token)
    assert exc.description == "token algorithm is not accepted"
    assert idp.jwks_fetches == 0


@pytest.mark.parametrize("header", [{"kid": "rsa-1"}, {"alg": None}, {"alg": ""}, {"alg": ["RS256"]}, {"alg": 256}])
async def test_refuses_missing_or_non_string_alg(verifier, signer, header):
    token = hand_signed(signer.private_key, "RS256", as_json(header), as_json(make_claims()))
    exc = await refused(verifier, token)
    assert exc.description == "token algorithm is not accepted"


def _public_key_as_secret(signer: Signer, form: str) -> bytes:
    public = signer.private_key.public_key()
    if form == "spki-pem":
        return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if form == "pkcs1-pem":
        return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    if form == "der":
        return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return json.dumps(signer.jwk()).encode()


@pytest.mark.parametrize("form", ["spki-pem", "pkcs1-pem", "der", "jwk-json"])
async def test_refuses_hs256_signed_with_the_rsa_public_key(keys, verifier, signer, form):
    secret = _public_key_as_secret(signer, form)
    token = hand_signed(secret, "HS256", as_json({"alg": "HS256", "kid": "rsa-1"}), as_json(make_claims()))
    exc = await refused(verifier, token)
    assert exc.description == "token algorithm is not accepted"
    # Even a verifier wrongly told to allow HS256 refuses: an RSA key never fits an HMAC algorithm.
    careless = make_verifier(keys, algorithms=[*DEFAULT_ALGORITHMS, "HS256"])
    exc = await refused(careless, token)
    assert exc.description == "token algorithm does not match its key"


@pytest.mark.parametrize(
    ("signing_key", "alg", "kid"),
    [
        ("rsa", "RS256", "ec-1"),
        ("ec", "ES384", "ec-1"),
        ("ec384", "ES256", "ec384-1"),
        ("ec", "ES256", "rsa-1"),
        ("ed", "EdDSA", "rsa-1"),
        ("rsa", "PS256", "ed-1"),
    ],
)
async def test_refuses_alg_that_does_not_fit_the_key_named_by_kid(verifier, signers, signing_key, alg, kid):
    header = as_json({"alg": alg, "kid": kid})
    token = hand_signed(signers[signing_key].private_key, alg, header, as_json(make_claims()))
    exc = await refused(verifier, token)
    assert exc.description == "token algorithm does not match its key"


async def test_refuses_alg_other_than_the_one_pinned_by_the_jwk(verifier, idp, signer):
    idp.keys = [signer.jwk(alg="RS256")]
    assert (await verifier.verify(signer.token())).subject == "user-123"
    exc = await refused(verifier, signer.sign(make_claims(), alg="RS512"))
    assert exc.description == "token algorithm does not match its key"


# --- issuer --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "iss",
    [
        "https://idp.example.com",
        "https://idp.example.com//",
        "https://IDP.example.com/",
        "HTTPS://idp.example.com/",
        "https://idp.example.com/ ",
        "https://idp.example.com:443/",
        "",
    ],
)
async def test_issuer_is_compared_exactly(verifier, signer, iss):
    exc = await refused(verifier, signer.token(iss=iss))
    assert exc.description == "token issuer is not accepted"


async def test_issuer_configured_without_slash_refuses_slash(keys, signer):
    verifier = make_verifier(keys, issuer="https://idp.example.com")
    assert (await verifier.verify(signer.token(iss="https://idp.example.com"))).issuer == "https://idp.example.com"
    exc = await refused(verifier, signer.token(iss=ISSUER))
    assert exc.description == "token issuer is not accepted"


@pytest.mark.parametrize("iss", [[ISSUER], {"iss": ISSUER}, 1, True])
async def test_issuer_of_odd_type_is_refused(verifier, signer, iss):
    exc = await refused(verifier, rs256(signer, as_json(make_claims(iss=iss))))
    assert exc.reason is Reason.CLAIMS_MALFORMED  # typed once, in auth.claims


@pytest.mark.parametrize("claims", [claims_without("iss"), make_claims(iss=None)], ids=["absent", "null"])
async def test_missing_issuer_is_refused(verifier, signer, claims):
    exc = await refused(verifier, rs256(signer, as_json(claims)))
    assert exc.description == "token is missing a required claim"


# --- audience ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "aud",
    ["api://notes", SERVER_URL, ["https://idp.example.com/userinfo", SERVER_URL], ["api://notes"]],
)
async def test_audience_matches_any_configured(keys, signer, aud):
    verifier = make_verifier(keys, audiences=[SERVER_URL, "api://notes"])
    principal = await verifier.verify(signer.token(aud=aud))
    assert principal.audience == ((aud,) if isinstance(aud, str) else tuple(aud))


@pytest.mark.parametrize(
    "aud",
    [
        "https://mcp.example.com",
        SERVER_URL + "/",
        "https://MCP.example.com/mcp",
        "api://notes",
        ["https://idp.example.com/userinfo", "api://other"],
    ],
)
async def test_audience_without_a_match_is_refused(verifier, signer, aud):
    exc = await refused(verifier, signer.token(aud=aud))
    assert exc.description == "token audience is not accepted"


@pytest.mark.parametrize("claims", [{"drop": ("aud",)}, {"aud": None}, {"aud": ""}, {"aud": []}])
async def test_missing_audience_is_refused(verifier, signer, claims):
    exc = await refused(verifier, signer.token(**claims))
    assert exc.description == "token is missing a required claim"


@pytest.mark.parametrize("aud", [42, True, {"aud": SERVER_URL}, [SERVER_URL, 42], [[SERVER_URL]], [SERVER_URL, None]])
async def test_audience_of_odd_type_is_refused(verifier, signer, aud):
    exc = await refused(verifier, signer.token(aud=aud))
    assert exc.reason is Reason.CLAIMS_MALFORMED  # typed once, in auth.claims


# --- lifetime ------------------------------------------------------------------------------------
@pytest.mark.parametrize("claims", [{"drop": ("exp",)}, {"exp": None}], ids=["absent", "null"])
async def test_exp_is_required(verifier, signer, claims):
    exc = await refused(verifier, signer.token(**claims))
    assert exc.description == "token is missing a required claim"


@pytest.mark.parametrize(
    ("exp", "description"),
    [
        ("9999999999", "token exp claim is not a number"),
        ("soon", "token is malformed"),
        (True, "token has expired"),
        (False, "token has expired"),
        ([9999999999], "token is malformed"),
        ({"at": 9999999999}, "token is malformed"),
        (10**30, "token exp claim is out of range"),
        (10**400, "token is malformed"),  # too large even to become a float
        (1e300, "token exp claim is out of range"),
        (MAX_NUMERIC_DATE + 1, "token exp claim is out of range"),
        (-1, "token has expired"),
        (-(10**30), "token has expired"),
    ],
)
async def test_exp_of_bad_type_or_range_is_refused(verifier, signer, exp, description):
    exc = await refused(verifier, signer.token(exp=exp))
    assert exc.reason is Reason.CLAIMS_MALFORMED  # typed once, in auth.claims


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e400", "-1e400", "9" * 5000])
async def test_non_finite_exp_is_refused(verifier, signer, literal):
    exc = await refused(verifier, rs256(signer, claims_with_raw("exp", literal)))
    assert exc.reason in (Reason.CLAIMS_MALFORMED, Reason.MALFORMED)  # 5000 digits are not JSON to Python


async def test_latest_representable_exp_is_accepted(verifier, signer):
    principal = await verifier.verify(signer.token(exp=MAX_NUMERIC_DATE))
    assert principal.expires_at == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


async def test_expiry_within_leeway_is_accepted(verifier, signer):
    now = int(time.time())
    assert (await verifier.verify(signer.token(iat=now - 600, exp=now - 20))).subject == "user-123"


async def test_expiry_beyond_leeway_is_refused(verifier, signer):
    now = int(time.time())
    exc = await refused(verifier, signer.token(iat=now - 600, exp=now - 60))
    assert exc.description == "token has expired"


async def test_leeway_is_configurable(keys, signer):
    now = int(time.time())
    exc = await refused(make_verifier(keys, leeway=0), signer.token(iat=now - 600, exp=now - 5))
    assert exc.description == "token has expired"


async def test_nbf_within_leeway_is_accepted(verifier, signer):
    assert (await verifier.verify(signer.token(nbf=int(time.time()) + 20))).subject == "user-123"


async def test_nbf_beyond_leeway_is_refused(verifier, signer):
    exc = await refused(verifier, signer.token(nbf=int(time.time()) + 60))
    assert exc.description == "token is not yet valid"


async def test_iat_within_leeway_is_accepted(verifier, signer):
    assert (await verifier.verify(signer.token(iat=int(time.time()) + 20))).subject == "user-123"


async def test_iat_beyond_leeway_is_refused(verifier, signer):
    exc = await refused(verifier, signer.token(iat=int(time.time()) + 60))
    assert exc.description == "token is not yet valid"


@pytest.mark.parametrize(
    ("name", "value", "description"),
    [
        ("iat", True, "token iat claim is not a number"),
        ("iat", "100", "token iat claim is not a number"),
        ("iat", "yesterday", "token iat claim is invalid"),
        ("iat", -1, "token iat claim is out of range"),
        ("iat", 10**30, "token is not yet valid"),
        ("nbf", True, "token nbf claim is not a number"),
        ("nbf", "0", "token nbf claim is not a number"),
        ("nbf", "now", "token is malformed"),
        ("nbf", -1, "token nbf claim is out of range"),
    ],
)
async def test_optional_dates_of_bad_type_or_range_are_refused(verifier, signer, name, value, description):
    exc = await refused(verifier, signer.token(**{name: value}))
    assert exc.reason is Reason.CLAIMS_MALFORMED  # typed once, in auth.claims


# --- header parameters that carry keys are ignored -------------------------------------------------
def _key_header(name: str, attacker: Signer) -> dict[str, Any]:
    return {
        "jku": {"jku": ATTACKER_JWKS},
        "x5u": {"x5u": ATTACKER_CERT},
        "jwk": {"jwk": attacker.jwk()},
        "x5c": {"x5c": [self_signed_certificate(attacker.private_key)]},
    }[name]


@pytest.mark.parametrize(
    ("kid", "description"),
    [
        ("rsa-1", "token signature is invalid"),
        (None, "token signature is invalid"),
        ("attacker-key", "token signing key is unknown"),
    ],
    ids=["jwks-kid", "no-kid", "own-kid"],
)
@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c"])
async def test_key_material_in_header_is_ignored(
    verifier, idp, anything_else, second_rsa_private_key, name, kid, description
):
    attacker = Signer(second_rsa_private_key, kid, "RS256")
    token = attacker.token(headers=_key_header(name, attacker))
    exc = await refused(verifier, token)
    assert exc.description == description
    assert anything_else.call_count == 0
    assert [str(call.request.url) for call in idp.router.calls] == [JWKS_URI]


async def test_genuine_token_carrying_foreign_key_headers_is_accepted(verifier, idp, anything_else, signer, attacker):
    headers = {name: value for name in ("jku", "x5u", "jwk", "x5c") for value in _key_header(name, attacker).values()}
    principal = await verifier.verify(signer.token(headers=headers))
    assert principal.subject == "user-123"
    assert anything_else.call_count == 0
    assert idp.jwks_fetches == 1


# --- crit and other header parameters --------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "description"),
    [
        ({"crit": ["exp"], "exp": 1}, "token is malformed"),
        ({"crit": ["b64"]}, "token is malformed"),
        ({"crit": ["b64"], "b64": True}, "token has unsupported critical header parameters"),
        ({"crit": []}, "token is malformed"),
        ({"crit": "b64", "b64": True}, "token is malformed"),
        ({"crit": [1]}, "token is malformed"),
    ],
)
async def test_crit_header_is_refused(verifier, signer, header, description):
    exc = await refused(verifier, rs256(signer, as_json(make_claims()), **header))
    assert exc.description == description


async def test_unencoded_detached_payload_is_refused(verifier, signer):
    payload = as_json(make_claims())
    header = b64url(as_json({"alg": "RS256", "kid": "rsa-1", "b64": False, "crit": ["b64"]}))
    signature = get_default_algorithms()["RS256"].sign(header.encode() + b"." + payload, signer.private_key)
    exc = await refused(verifier, f"{header}..{b64url(signature)}")
    assert exc.description == "token has unsupported critical header parameters"


async def test_crit_values_never_reach_the_log_detail(verifier, signer):
    exc = await refused(verifier, rs256(signer, as_json(make_claims()), crit=["x\nFORGED LOG LINE"]))
    assert "FORGED" not in exc.detail
    assert "\n" not in exc.detail


@pytest.mark.parametrize("header", [{"cat": "cl_B"}, {"typ": "at+jwt"}, {"x-vendor": {"nested": [1, 2]}}])
async def test_unknown_non_critical_header_is_accepted(verifier, signer, header):
    assert (await verifier.verify(signer.token(headers=header))).subject == "user-123"


async def test_a_refused_header_stays_refused_and_one_character_more_is_parsed_on_its_own(verifier, signer):
    crit = rs256(signer, as_json(make_claims()), crit=["b64"], b64=True)
    for _ in range(3):
        assert (await refused(verifier, crit)).description == "token has unsupported critical header parameters"
    good = signer.token()
    assert (await verifier.verify(good)).subject == "user-123"
    assert (await verifier.verify(signer.token())).subject == "user-123"  # new token, same header segment
    segment, _, rest = good.partition(".")
    other_kid = signer.token(headers={"kid": "rsa-2"})
    assert (await refused(verifier, other_kid)).description == "token signing key is unknown"
    assert (await refused(verifier, segment[:-1] + "!." + rest)).description == "token is malformed"


# --- kid -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kid", "description"),
    [
        ("../../etc/passwd", "token signing key is unknown"),
        ("' OR 1=1 --", "token signing key is unknown"),
        ("rsa-1\x00", "token signing key is unknown"),
        ("", "token signing key is unknown"),
        ("k" * 256, "token signing key is unknown"),
        ("k" * 257, "token kid is malformed"),
        ("k" * 10240, "token kid is malformed"),
        (7, "token is malformed"),
        (["rsa-1"], "token is malformed"),
        ({"kid": "rsa-1"}, "token is malformed"),
        (None, "token is malformed"),
    ],
    ids=["traversal", "sql", "nul", "empty", "256", "257", "10kb", "number", "list", "dict", "null"],
)
async def test_kid_is_only_a_lookup_key(verifier, idp, signer, kid, description):
    token = rs256(signer, as_json(make_claims()), kid=kid)
    exc = await refused(verifier, token)
    assert exc.description == description
    assert idp.jwks_fetches <= 1


async def test_unknown_kid_costs_at_most_one_refetch(verifier, idp, clock, signer, rotated_signer):
    assert (await verifier.verify(signer.token())).subject == "user-123"
    assert idp.jwks_fetches == 1
    clock.now += 11  # past the refetch cooldown
    exc = await refused(verifier, rotated_signer.token())
    assert exc.description == "token signing key is unknown"
    assert idp.jwks_fetches == 2
    for _ in range(5):
        await refused(verifier, rotated_signer.token())
    assert idp.jwks_fetches == 2
    # The refetch is what picks up a rotated key once the cooldown has passed.
    idp.publish(signer, rotated_signer)
    clock.now += 11
    assert (await verifier.verify(rotated_signer.token())).subject == "user-123"
    assert idp.jwks_fetches == 3


async def test_unknown_kid_on_a_cold_cache_fetches_once(verifier, idp, rotated_signer):
    exc = await refused(verifier, rotated_signer.token())
    assert exc.description == "token signing key is unknown"
    assert idp.jwks_fetches == 1


async def test_unreachable_key_set_is_not_blamed_on_the_token(verifier, idp, signer):
    idp.keys = []
    with pytest.raises(KeySetUnavailable) as caught:
        await verifier.verify(signer.token())
    assert caught.value.status == 503


# --- malformed input -----------------------------------------------------------------------------
def _header_segment() -> str:
    return b64url(as_json({"alg": "RS256", "kid": "rsa-1"}))


@pytest.mark.parametrize(
    ("token", "description"),
    [
        ("", "token is not a JWT"),
        ("abc", "token is not a JWT"),
        ("abc.def", "token is not a JWT"),
        ("a.b.c.d", "token is not a JWT"),
        ("....", "token is not a JWT"),
        ("!!!.@@@.###", "token is malformed"),
        ("é.é.é", "token is malformed"),
        ("..", "token is malformed"),
        (f"{b64url(b'not json')}.{b64url(b'{}')}.c2ln", "token is malformed"),
        (f"{b64url(b'[]')}.{b64url(b'{}')}.c2ln", "token is malformed"),
        (f"{b64url(b'[' * 10000)}.{b64url(b'{}')}.c2ln", "token is malformed"),
        (f"{b64url(BAD_UTF8_HEADER)}.{b64url(b'{}')}.c2ln", "token is malformed"),
        (f"{_header_segment()}.e30.@@@", "token is malformed"),
    ],
    ids=[
        "empty",
        "one-part",
        "two-parts",
        "four-parts",
        "only-dots",
        "not-base64",
        "non-ascii",
        "empty-parts",
        "header-not-json",
        "header-array",
        "header-deeply-nested",
        "header-bad-utf8",
        "signature-not-base64",
    ],
)
async def test_malformed_token_is_refused(verifier, token, description):
    exc = await refused(verifier, token)
    assert exc.description == description


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[]", b'"a string"', b"42", b"null", b"[" * 10000, b'{"sub": "\xff\xfe"}', b""],
    ids=["not-json", "array", "string", "number", "null", "deeply-nested", "bad-utf8", "empty"],
)
async def test_signed_but_malformed_payload_is_refused(verifier, signer, payload):
    exc = await refused(verifier, rs256(signer, payload))
    assert exc.description == "token is malformed"


async def test_hundred_thousand_levels_of_nesting_is_refused(keys, signer):
    token = rs256(signer, b"[" * 100_000)
    assert len(token) > 16384
    exc = await refused(make_verifier(keys, max_token_bytes=200_000), token)
    assert exc.description == "token is malformed"


async def test_token_larger_than_the_limit_is_refused_before_any_work(verifier, idp, signer):
    token = signer.token(padding="x" * 20000)
    exc = await refused(verifier, token)
    assert exc.description == "token is too large"
    assert idp.jwks_fetches == 0


async def test_size_limit_is_inclusive(keys, signer):
    token = signer.token()
    assert (await make_verifier(keys, max_token_bytes=len(token)).verify(token)).subject == "user-123"
    exc = await refused(make_verifier(keys, max_token_bytes=len(token) - 1), token)
    assert exc.description == "token is too large"


async def test_stripped_signature_is_refused(verifier, signer):
    header, payload, _ = signer.token().split(".")
    exc = await refused(verifier, f"{header}.{payload}.")
    assert exc.description == "token signature is invalid"


async def test_tampered_payload_is_refused(verifier, signer):
    header, payload, signature = signer.token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "admin"
    exc = await refused(verifier, f"{header}.{b64url(as_json(claims))}.{signature}")
    assert exc.description == "token signature is invalid"


async def test_signature_from_another_key_is_refused(verifier, signer, attacker):
    header, payload, _ = signer.token().split(".")
    forged = attacker.sign(make_claims()).split(".")[2]
    exc = await refused(verifier, f"{header}.{payload}.{forged}")
    assert exc.description == "token signature is invalid"


@pytest.mark.parametrize("token", [None, b"a.b.c", 42])
async def test_non_string_token_is_refused(verifier, token):
    await refused(verifier, token)


@pytest.mark.parametrize(
    "make_token",
    [
        lambda s: s.token(aud="https://elsewhere.example"),
        lambda s: s.token(exp=1),
        lambda s: s.token()[:-4] + "AAAA",
        lambda s: rs256(s, b"{not json"),
    ],
    ids=["audience", "expired", "signature", "payload"],
)
async def test_refusals_never_quote_the_token(verifier, signer, make_token):
    token = make_token(signer)
    exc = await refused(verifier, token)
    for part in token.split("."):
        assert part not in exc.description
        assert part not in exc.detail


# --- scopes --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("claims", "scopes"),
    [
        ({"scope": "openid  notes:read\tnotes:write"}, {"openid", "notes:read", "notes:write"}),
        ({"scope": None}, set()),
        ({"scope": ""}, set()),
        ({"scp": "Notes.Read Notes.Write"}, {"Notes.Read", "Notes.Write"}),
        ({"scp": ["notes:read", "notes:write"]}, {"notes:read", "notes:write"}),
        ({"permissions": ["read:notes", "write:notes"]}, {"read:notes", "write:notes"}),
        ({"roles": ["Notes.Admin"]}, {"Notes.Admin"}),
        (
            {"scope": "a", "scp": ["b"], "permissions": ["c", "a"], "roles": ["d"]},
            {"a", "b", "c", "d"},
        ),
        # A bare string where an array is expected is one value, never split into several grants.
        ({"permissions": "read:notes"}, {"read:notes"}),
        ({"roles": "Notes.Reader Notes.Admin"}, {"Notes.Reader Notes.Admin"}),
    ],
    ids=[
        "scope",
        "scope-null",
        "scope-empty",
        "scp-string",
        "scp-list",
        "permissions",
        "roles",
        "union",
        "permissions-string",
        "roles-string",
    ],
)
async def test_scopes_from_every_dialect(verifier, signer, claims, scopes):
    principal = await verifier.verify(signer.sign(claims_without("scope", **claims)))
    assert principal.scopes == frozenset(scopes)


async def test_no_scope_claims_means_no_scopes(verifier, signer):
    principal = await verifier.verify(signer.token(drop=("scope",)))
    assert principal.scopes == frozenset()
    assert not principal.has_scopes(("openid",))


@pytest.mark.parametrize(
    ("claims", "description"),
    [
        ({"scope": ["notes:read"]}, "token scope claim is not a string"),
        ({"scope": 5}, "token scope claim is not a string"),
        ({"scope": {"notes": "read"}}, "token scope claim is not a string"),
        ({"scp": 5}, "token scp claim has an unexpected type"),
        ({"scp": ["a", 1]}, "token scp claim has an unexpected type"),
        ({"permissions": {"read": True}}, "token permissions claim has an unexpected type"),
        ({"permissions": 1}, "token permissions claim has an unexpected type"),
        ({"roles": [None]}, "token roles claim has an unexpected type"),
        ({"roles": [["Admin"]]}, "token roles claim has an unexpected type"),
    ],
)
async def test_scope_claims_of_odd_type_are_refused(verifier, signer, claims, description):
    exc = await refused(verifier, signer.sign(claims_without("scope", **claims)))
    assert exc.reason is Reason.CLAIMS_MALFORMED  # typed once, in auth.claims


def test_normalise_scopes_is_a_pure_function():
    assert normalise_scopes({}) == frozenset()
    assert normalise_scopes({"scope": "a b", "scp": "b c", "roles": ["d"]}) == frozenset("abcd")
    with pytest.raises(InvalidToken) as caught:
        normalise_scopes({"scope": ["a"]})
    assert caught.value.reason is Reason.CLAIMS_MALFORMED
    assert "scope" in caught.value.detail


# --- client id and subject -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("claims", "client_id"),
    [
        ({"azp": "from-azp", "client_id": "from-client-id", "cid": "from-cid", "appid": "from-appid"}, "from-azp"),
        ({"client_id": "from-client-id", "cid": "from-cid", "appid": "from-appid"}, "from-client-id"),
        ({"cid": "from-cid", "appid": "from-appid"}, "from-cid"),
        ({"appid": "from-appid"}, "from-appid"),
        ({"azp": "", "client_id": "from-client-id"}, "from-client-id"),
        ({}, None),
    ],
    ids=["azp", "client_id", "cid", "appid", "empty-azp-skipped", "none"],
)
async def test_client_id_precedence(verifier, signer, claims, client_id):
    principal = await verifier.verify(signer.sign(claims_without("azp", **claims)))
    assert principal.client_id == client_id
    assert principal.subject == "user-123"
    assert client_id_of(claims) == client_id


@pytest.mark.parametrize("name", ["azp", "client_id", "cid", "appid"])
async def test_client_id_of_odd_type_is_refused(verifier, signer, name):
    exc = await refused(verifier, signer.sign(claims_without("azp", **{name: 42})))
    assert exc.reason is Reason.CLAIMS_MALFORMED  # typed once, in auth.claims


@pytest.mark.parametrize("name", ["azp", "client_id", "cid", "appid"])
async def test_subject_falls_back_to_client_id(verifier, signer, name):
    principal = await verifier.verify(signer.sign(claims_without("sub", "azp", **{name: "svc-1"})))
    assert principal.subject == "svc-1"
    assert principal.client_id == "svc-1"


async def test_token_without_subject_or_client_id_is_refused(verifier, signer):
    exc = await refused(verifier, signer.token(drop=("sub", "azp")))
    assert exc.description == "token has no subject or client id"


@pytest.mark.parametrize("sub", [123, ["user-123"], {"id": "user-123"}])
async def test_subject_of_odd_type_is_refused(verifier, signer, sub):
    await refused(verifier, signer.token(sub=sub))


# --- machine tokens ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "claims",
    [
        {"gty": "client-credentials", "sub": f"{CLIENT_ID}@clients", "azp": CLIENT_ID},
        {"sub": f"{CLIENT_ID}@clients", "azp": CLIENT_ID},
        {"gty": "client-credentials", "sub": "svc", "azp": CLIENT_ID},
        {"idtyp": "app", "sub": "oid-7f3a", "azp": "entra-app"},
        {"sub": "0oa-okta-client", "cid": "0oa-okta-client"},
        {"sub": "cognito-client", "client_id": "cognito-client"},
        {"client_id": "cognito-client"},
    ],
    ids=["auth0-gty", "auth0-sub", "auth0-gty-only", "entra-idtyp", "okta", "cognito", "no-sub"],
)
async def test_machine_tokens_are_recognised(verifier, signer, claims):
    principal = await verifier.verify(signer.sign(claims_without("sub", "azp", **claims)))
    assert principal.is_machine is True


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "user-123", "azp": CLIENT_ID},
        {"sub": "user-123", "azp": CLIENT_ID, "gty": "password"},
        {"sub": "user-123", "azp": CLIENT_ID, "idtyp": "user"},
        {"sub": "other-client@clients", "azp": CLIENT_ID},
        {"sub": "user-123"},
    ],
    ids=["user", "auth0-password", "entra-user", "another-clients-sub", "no-client"],
)
async def test_user_tokens_are_not_machine_tokens(verifier, signer, claims):
    principal = await verifier.verify(signer.sign(claims_without("sub", "azp", **claims)))
    assert principal.is_machine is False


def test_is_machine_token_is_a_pure_function():
    assert is_machine_token({}, "c1@clients", "c1") is True
    assert is_machine_token({"idtyp": "app"}, "oid", None) is True
    assert is_machine_token({}, "user", "c1") is False
    assert is_machine_token({}, "user", None) is False


# --- the Principal -------------------------------------------------------------------------------
async def test_principal_is_frozen(verifier, signer):
    principal = await verifier.verify(signer.token())
    with pytest.raises(dataclasses.FrozenInstanceError):
        principal.subject = "admin"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        principal.scopes = frozenset({"admin"})  # type: ignore[misc]


async def test_principal_claims_are_read_only(verifier, signer):
    principal = await verifier.verify(signer.token())
    assert isinstance(principal.claims, MappingProxyType)
    assert principal.claims["sub"] == "user-123"
    with pytest.raises(TypeError):
        principal.claims["sub"] = "admin"  # type: ignore[index]
    with pytest.raises(TypeError):
        del principal.claims["sub"]  # type: ignore[attr-defined]


async def test_principal_dates_are_utc(verifier, signer):
    now = int(time.time())
    principal = await verifier.verify(signer.token(iat=now - 10, exp=now + 600))
    assert principal.issued_at == datetime.fromtimestamp(now - 10, tz=UTC)
    assert principal.expires_at == datetime.fromtimestamp(now + 600, tz=UTC)
    assert principal.issued_at.utcoffset() == timedelta(0)
    assert principal.expires_at.tzinfo is UTC


async def test_principal_without_iat_or_jti(verifier, signer):
    principal = await verifier.verify(signer.token(drop=("iat", "jti")))
    assert principal.issued_at is None
    assert principal.token_id is None


async def test_token_id_comes_from_jti(verifier, signer):
    assert (await verifier.verify(signer.token(jti="AT.abc123"))).token_id == "AT.abc123"
    await refused(verifier, signer.token(jti=12345))


def test_principal_from_claims_checks_what_it_reads():
    claims = make_claims()
    assert principal_from_claims(dict(claims)).owner_key == (ISSUER, "user-123")
    for broken, reason in [
        (make_claims(drop=("exp",)), Reason.NO_SUBJECT),
        (make_claims(exp="1"), Reason.CLAIMS_MALFORMED),
        (make_claims(nbf=float("nan")), Reason.CLAIMS_MALFORMED),
        (make_claims(sub=5), Reason.CLAIMS_MALFORMED),
        (make_claims(drop=("iss",)), Reason.NO_SUBJECT),
        (make_claims(aud=5), Reason.CLAIMS_MALFORMED),
    ]:
        with pytest.raises(InvalidToken) as caught:
            principal_from_claims(broken)
        assert caught.value.reason is reason

"""The signature memo: once an RS256 token is accepted, other signature bytes over the same header and payload are
refused without an RSA operation, and never is a token refused that the whole check would accept."""

from __future__ import annotations

import base64
import functools

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from jwt.algorithms import RSAAlgorithm

import auth.jws
from auth.errors import InvalidToken
from auth.jwks import JWKSCache, VerificationKey
from auth.signature_memo import CurrentKey, SignatureMemo
from auth.verifier import TokenVerifier
from settings import DEFAULT_ALGORITHMS
from tests.support import ISSUER, JWKS_URI, SERVER_URL, CollidingText, Signer


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def with_signature(token: str, segment: str) -> str:
    return token.rpartition(".")[0] + "." + segment


# --- the fact the memo rests on, checked against the OpenSSL in use ---------------------------------------------


def test_rsa_pkcs1_v1_5_has_exactly_one_valid_byte_string_per_key_and_message(rsa_private_key):
    public = rsa_private_key.public_key()
    modulus = public.public_numbers().n
    for index in range(4000):  # about one signature in 256 starts with a zero byte
        message = b"message %d" % index
        signature = rsa_private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        if signature[0] == 0:
            break
    else:
        pytest.fail("no signature with a leading zero byte found")
    as_number = int.from_bytes(signature, "big")
    others = [
        signature[1:],  # the same number, one byte shorter
        b"\0" + signature,  # the same number, one byte longer
        (as_number + modulus).to_bytes(256, "big"),  # congruent, but not below the modulus
        (as_number + modulus).to_bytes(257, "big"),
    ]
    public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    for other in others:
        with pytest.raises(InvalidSignature):
            public.verify(other, message, padding.PKCS1v15(), hashes.SHA256())


# --- the memo alone ----------------------------------------------------------------------------------------------


@pytest.fixture
def key(signer) -> VerificationKey:
    return VerificationKey(kid=signer.kid, kty="RSA", crv=None, alg="RS256", key=signer.private_key.public_key())


def finds(key: VerificationKey) -> CurrentKey:
    """A key set that finds `key` for its kid and RS256, and nothing else."""
    return lambda kid, alg: key if (kid, alg) == (key.kid, "RS256") else None


def remember(memo: SignatureMemo, signing_input: str, key: VerificationKey, signature: bytes) -> None:
    memo.remember(signing_input, key, b64(signature), key.kid, "RS256")


def test_the_memo_refuses_only_other_bytes_under_the_very_key_that_verified(key, signer):
    memo = SignatureMemo(max_entries=10)
    signing_input = "header.payload"
    remember(memo, signing_input, key, b"\x01" * 256)
    current = finds(key)
    assert not memo.refuses(signing_input, b64(b"\x01" * 256), current)  # the same bytes: left to the whole check
    assert not memo.refuses(signing_input, b64(b"\x01" * 256) + "==", current)  # the same bytes, padded
    assert memo.refuses(signing_input, b64(b"\x02" + b"\x01" * 255), current)
    same_key_again = VerificationKey(kid=key.kid, kty="RSA", crv=None, alg="RS256", key=key.key)
    # the key set now finds another key object (refetched, rotated): not known
    assert not memo.refuses(signing_input, b64(b"\x02" * 256), finds(same_key_again))
    assert not memo.refuses(signing_input, b64(b"\x02" * 256), lambda kid, alg: None)  # no answer at once
    assert not memo.refuses("header.other-payload", b64(b"\x02" * 256), current)


def test_the_memo_asks_the_key_set_for_the_kid_and_alg_it_was_accepted_with(key):
    memo = SignatureMemo(max_entries=10)
    memo.remember("header.payload", key, b64(b"\x01" * 256), "kid-7", "RS384")
    asked = []
    assert memo.refuses("header.payload", b64(b"\x02" * 256), lambda kid, alg: asked.append((kid, alg)) or key)
    assert asked == [("kid-7", "RS384")]


def test_signing_inputs_whose_hashes_collide_are_still_told_apart(key):
    memo = SignatureMemo(max_entries=10)
    remember(memo, CollidingText("header.payload"), key, b"\x01" * 256)
    current = finds(key)
    assert not memo.refuses(CollidingText("header.other-payload"), b64(b"\x02" * 256), current)  # not known
    assert memo.refuses(CollidingText("header.payload"), b64(b"\x02" * 256), current)


def test_a_signature_as_signers_write_it_is_compared_without_decoding(key, monkeypatch):
    memo = SignatureMemo(max_entries=10)
    signing_input = "header.payload"
    remember(memo, signing_input, key, b"\x01" * 256)
    current = finds(key)
    decoded = []
    original = auth.jws.decode_segment
    monkeypatch.setattr(auth.jws, "decode_segment", lambda *args: decoded.append(args) or original(*args))
    assert memo.refuses(signing_input, b64(b"\x02" + b"\x01" * 255), current)
    assert not memo.refuses(signing_input, b64(b"\x01" * 256), current)
    assert decoded == []
    assert not memo.refuses(signing_input, b64(b"\x01" * 256) + "==", current)  # padded: decoded, the same bytes
    assert len(decoded) == 1


def test_a_signature_that_does_not_decode_gets_no_verdict(key):
    """Left to the whole check, which refuses it as malformed (test_every_signature_variant_... compares)."""
    memo = SignatureMemo(max_entries=10)
    signing_input = "header.payload"
    remember(memo, signing_input, key, b"\x01" * 256)
    assert not memo.refuses(signing_input, "not*base64", finds(key))


def test_the_memo_is_bounded_and_the_oldest_goes_first(key):
    memo = SignatureMemo(max_entries=3)
    signing_inputs = [f"header.payload{index}" for index in range(5)]
    for index, signing_input in enumerate(signing_inputs):
        remember(memo, signing_input, key, bytes([index + 1]) * 256)
    assert len(memo) == 3
    assert not memo.refuses(signing_inputs[0], b64(b"\x09" * 256), finds(key))  # forgotten
    assert not memo.refuses("header.payloadX", b64(b"\x01" * 256), finds(key))  # and its signature with it
    assert memo.refuses(signing_inputs[4], b64(b"\x09" * 256), finds(key))
    assert memo.refuses("header.payloadX", b64(b"\x05" * 256), finds(key))


def test_zero_entries_remembers_nothing(key):
    memo = SignatureMemo(max_entries=0)
    assert not memo.enabled
    signing_input = "header.payload"
    remember(memo, signing_input, key, b"\x01" * 256)
    assert len(memo) == 0
    assert not memo.refuses(signing_input, b64(b"\x02" * 256), finds(key))


def test_an_accepted_signature_over_another_payload_is_refused_under_the_same_header_and_key(key):
    memo = SignatureMemo(max_entries=10)
    signature = b64(b"\x01" * 256)
    remember(memo, "header.payload", key, b"\x01" * 256)
    current = finds(key)
    assert memo.refuses("header.payloadX", signature, current)
    assert memo.refuses("header.", signature, current)  # an empty payload decodes (to nothing)
    assert not memo.refuses("header.payload", signature, current)  # the accepted token itself: the whole check
    assert not memo.refuses("headeR.payloadX", signature, current)  # another header: the whole check
    assert not memo.refuses("header.pay.oadX", signature, current)  # four segments: not a JWT, the whole check
    assert not memo.refuses("header", signature, current)
    assert not memo.refuses("header.payl*adX", signature, current)  # not base64url: malformed, the whole check
    assert not memo.refuses("header.payloadXY", signature, current)  # a length of 4n+1: malformed
    assert not memo.refuses("header.payloadX", signature + "==", current)  # the same bytes, another text: unknown
    same_key_again = VerificationKey(kid=key.kid, kty="RSA", crv=None, alg="RS256", key=key.key)
    assert not memo.refuses("header.payloadX", signature, finds(same_key_again))  # another key object
    assert not memo.refuses("header.payloadX", signature, lambda kid, alg: None)  # no answer at once


def test_a_signature_is_looked_up_by_its_canonical_text(key):
    memo = SignatureMemo(max_entries=10)
    canonical = b64(b"\x01" * 256)
    memo.remember("header.payload", key, canonical + "==", key.kid, "RS256")  # accepted padded
    assert memo.refuses("header.payloadX", canonical, finds(key))
    assert not memo.refuses("header.payload", canonical, finds(key))  # the same bytes


def test_equal_signature_bytes_accepted_for_two_signing_inputs_keep_only_the_latest(key):
    """Only under two keys (or a SHA-256 collision) can that happen; the memo then forgets the older pair."""
    memo = SignatureMemo(max_entries=10)
    other = VerificationKey(kid="other", kty="RSA", crv=None, alg="RS256", key=key.key)
    remember(memo, "header.payload", key, b"\x01" * 256)
    memo.remember("other.payload", other, b64(b"\x01" * 256), "other", "RS256")
    assert len(memo) == 1
    assert not memo.refuses("header.payload", b64(b"\x02" * 256), finds(key))  # forgotten
    assert memo.refuses("other.payloadX", b64(b"\x01" * 256), lambda kid, alg: other)


# --- through the verifier ----------------------------------------------------------------------------------------


def make_verifier(keys: JWKSCache, **options: float) -> TokenVerifier:
    return TokenVerifier(
        keys, issuer=ISSUER, audiences=[SERVER_URL], algorithms=DEFAULT_ALGORITHMS, leeway=0, **options
    )


@pytest.fixture
def rsa_verifications(monkeypatch) -> list[bytes]:
    """The signatures PyJWT checks with RSA (PKCS#1 v1.5), recorded on the way through."""
    seen: list[bytes] = []
    original = RSAAlgorithm.verify

    def recording(self, msg, key, sig):  # type: ignore[no-untyped-def]
        seen.append(sig)
        return original(self, msg, key, sig)

    monkeypatch.setattr(RSAAlgorithm, "verify", recording)
    return seen


async def outcome(verifier: TokenVerifier, token: str) -> tuple[str, str]:
    try:
        principal = await verifier.verify(token)
    except InvalidToken as exc:
        return exc.description, exc.detail
    return "accepted", principal.subject


async def assert_answered_as_without_the_memo(keys: JWKSCache, token: str, variants: dict[str, str]) -> None:
    """Once `token` is accepted, every variant gets from the memo's verifier what a verifier without it answers."""
    remembering = make_verifier(keys)
    assert (await remembering.verify(token)).subject == "user-123"
    assert len(remembering.signatures) == 1
    for name, variant in variants.items():
        remembering.cache = make_verifier(keys).cache  # no remembered answers, only the signature memo
        without_memo = make_verifier(keys, cache_entries=0)
        assert await outcome(remembering, variant) == await outcome(without_memo, variant), name


def variants(token: str) -> dict[str, str]:
    """The same header and payload under other signature segments: every way a signature can differ."""
    segment = token.rpartition(".")[2]
    signature = unb64(segment)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    last = "A" if segment[-1] != "A" else "Q"
    return {
        "one bit flipped": with_signature(token, b64(flipped)),
        "six characters replaced": with_signature(token, segment[:20] + "abcdef" + segment[26:]),
        "one byte shorter": with_signature(token, b64(signature[1:])),
        "one zero byte longer": with_signature(token, b64(b"\0" + signature)),
        "empty": with_signature(token, ""),
        "padded, the same bytes": with_signature(token, segment + "=" * (-len(segment) % 4)),
        "non-canonical last character": with_signature(token, segment[:-1] + last),
        "not base64url": with_signature(token, segment[:10] + "*" + segment[11:]),
        "the original": token,
    }


async def test_every_signature_variant_gets_the_answer_the_whole_check_gives(keys, signer):
    token = signer.token()
    await assert_answered_as_without_the_memo(keys, token, variants(token))


async def test_a_replayed_payload_with_other_signature_bytes_is_refused_without_an_rsa_operation(
    keys, signer, rsa_verifications
):
    verifier = make_verifier(keys)
    token = signer.token()
    await verifier.verify(token)
    assert len(rsa_verifications) == 1
    forged = with_signature(token, token.rpartition(".")[2][:20] + "abcdef" + token.rpartition(".")[2][26:])
    error = await outcome(verifier, forged)
    assert error == ("token signature is invalid", "InvalidSignatureError")
    assert len(rsa_verifications) == 1
    # a payload never accepted under a signature never seen: checked in full
    other = signer.token(sub="someone-else", aud="https://elsewhere.example")
    header, payload, _ = other.split(".")
    other_payload = payload[:10] + ("A" if payload[10] != "A" else "B") + payload[11:]
    assert (await outcome(verifier, f"{header}.{other_payload}.{other.split('.')[2]}"))[0] == (
        "token signature is invalid"
    )
    assert len(rsa_verifications) == 2


def payload_variants(token: str, expired: str) -> dict[str, str]:
    """The same signature under other payloads (and one other header): every way a forged payload can differ."""
    header, payload, signature = token.split(".")
    changed = "A" if payload[10] != "A" else "B"
    last = "A" if payload[-1] != "A" else "Q"
    with_payload = functools.partial("{}.{}.{}".format, header)
    other_header = b64(b'{"alg":"RS256","kid":"other"}')
    return {
        "one character changed": with_payload(payload[:10] + changed + payload[11:], signature),
        "six characters replaced": with_payload(payload[:20] + "abcdef" + payload[26:], signature),
        "an expired token's payload": with_payload(expired.split(".")[1], signature),
        "empty": with_payload("", signature),
        "padded, the same bytes": with_payload(payload + "=" * (-len(payload) % 4), signature),
        "non-canonical last character": with_payload(payload[:-1] + last, signature),
        "not base64url": with_payload(payload[:10] + "*" + payload[11:], signature),
        "a dot inside": with_payload(payload[:10] + "." + payload[11:], signature),
        "not ASCII": with_payload(payload[:10] + "\u00e9" + payload[11:], signature),
        "a kid changed in the header": with_payload(payload, signature).replace(header, other_header, 1),
        "the original": token,
    }


async def test_every_payload_variant_gets_the_answer_the_whole_check_gives(keys, signer):
    token = signer.token()
    expired = signer.token(exp=1_600_000_000)
    await assert_answered_as_without_the_memo(keys, token, payload_variants(token, expired))


async def test_an_accepted_signature_over_forged_payloads_is_refused_without_an_rsa_operation(
    keys, signer, rsa_verifications
):
    verifier = make_verifier(keys)
    token = signer.token()
    await verifier.verify(token)
    header, payload, signature = token.split(".")
    forgeries = [f"{header}.{payload[:20]}{index:06d}{payload[26:]}.{signature}" for index in range(50)]
    for forged in forgeries:
        assert await outcome(verifier, forged) == ("token signature is invalid", "InvalidSignatureError")
    assert len(rsa_verifications) == 1
    assert len(verifier.cache) == 1  # the accepted token only: memo refusals are not kept


async def test_what_the_memo_refuses_is_not_kept_by_the_refusal_cache(keys, signer, rsa_verifications):
    verifier = make_verifier(keys)
    token = signer.token()
    await verifier.verify(token)
    segment = token.rpartition(".")[2]
    forgeries = [with_signature(token, segment[:20] + f"{index:06d}" + segment[26:]) for index in range(50)]
    for forged in forgeries:
        assert await outcome(verifier, forged) == ("token signature is invalid", "InvalidSignatureError")
    assert len(verifier.cache) == 1  # the accepted token only
    assert len(rsa_verifications) == 1
    # the same forgery again: refused by the memo again, still without an RSA operation
    assert (await outcome(verifier, forgeries[0]))[0] == "token signature is invalid"
    assert len(rsa_verifications) == 1
    # a refusal from the whole check is remembered as before
    await outcome(verifier, signer.token(aud="https://elsewhere.example"))
    assert len(verifier.cache) == 2


async def test_a_key_set_past_its_ttl_sends_a_replay_to_the_whole_check(
    idp, signer, rsa_verifications, tls_context, monkeypatch
):
    """The memo refuses only while the key set answers (kid, alg) at once; a stale one gives it no verdict."""
    monkeypatch.setattr(httpx, "AsyncClient", functools.partial(httpx.AsyncClient, verify=tls_context))
    now = [1000.0]
    keys = JWKSCache(JWKS_URI, ttl=60, cooldown=0, clock=lambda: now[0])
    try:
        verifier = make_verifier(keys)
        token = signer.token()
        await verifier.verify(token)
        segment = token.rpartition(".")[2]
        bad_signature = ("token signature is invalid", "InvalidSignatureError")
        assert await outcome(verifier, with_signature(token, segment[:20] + "abcdef" + segment[26:])) == bad_signature
        assert len(rsa_verifications) == 1
        now[0] += 61
        assert await outcome(verifier, with_signature(token, segment[:20] + "ghijkl" + segment[26:])) == bad_signature
        assert len(rsa_verifications) == 2  # checked in full
    finally:
        await keys.aclose()


async def test_a_key_replaced_under_the_same_kid_is_checked_in_full(
    keys, idp, signer, second_rsa_private_key, rsa_verifications
):
    verifier = make_verifier(keys)
    claims = {"iss": ISSUER, "sub": "user-123", "aud": SERVER_URL, "exp": 2_000_000_000, "iat": 1_700_000_000}
    old = signer.sign(claims)
    await verifier.verify(old)
    replacement = Signer(second_rsa_private_key, signer.kid, "RS256")
    idp.publish(replacement)  # the IdP swaps the key but keeps the kid
    await keys.refresh()
    header, payload, signature = old.split(".")
    forged = f"{header}.{payload[:20]}abcdef{payload[26:]}.{signature}"  # the old signature over another payload
    assert await outcome(verifier, forged) == ("token signature is invalid", "InvalidSignatureError")
    assert len(rsa_verifications) == 2  # checked in full with the new key
    new = replacement.sign(claims)
    assert new.rpartition(".")[0] == old.rpartition(".")[0]  # the same signing input, other signature bytes
    assert (await verifier.verify(new)).subject == "user-123"
    assert (await outcome(verifier, old))[0] == "token signature is invalid"


@pytest.mark.parametrize("alg", ["PS256", "ES256", "EdDSA"])
async def test_algorithms_with_many_valid_signatures_are_never_remembered(
    keys, idp, rsa_private_key, ec_private_key, ed_private_key, alg
):
    private = {"PS256": rsa_private_key, "ES256": ec_private_key, "EdDSA": ed_private_key}[alg]
    other = Signer(private, f"{alg}-key", alg)
    idp.publish(other)
    verifier = make_verifier(keys)
    claims = {"iss": ISSUER, "sub": "user-123", "aud": SERVER_URL, "exp": 2_000_000_000, "iat": 1_700_000_000}
    first, second = other.sign(claims), other.sign(claims)
    await verifier.verify(first)
    assert len(verifier.signatures) == 0
    if alg != "EdDSA":  # randomised schemes: a second signature of the same input differs and is just as valid
        assert first != second
    assert (await verifier.verify(second)).subject == "user-123"


async def test_only_accepted_tokens_are_remembered_and_never_more_than_the_cache_bound(keys, signer):
    verifier = make_verifier(keys, cache_entries=3)
    await outcome(verifier, signer.token(aud="https://elsewhere.example"))  # good signature, refused
    assert len(verifier.signatures) == 0
    for index in range(5):
        await verifier.verify(signer.token(sub=f"user-{index}"))
    assert len(verifier.signatures) == 3
    nothing = make_verifier(keys, cache_entries=0)
    await nothing.verify(signer.token())
    assert len(nothing.signatures) == 0

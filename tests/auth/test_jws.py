"""auth.jws.decode_segment must accept and refuse exactly what PyJWT's own segment check does."""

from __future__ import annotations

import base64
import random

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError

from auth.jws import canonical_segment, decode_segment, is_canonical_segment, jws_parser, jwt_decoder

ORIGINAL = PyJWS._decode_base64url_segment
RANDOM_CASES = 20_000  # bounded: a few hundred milliseconds


def outcome(decode: object, segment: bytes) -> bytes | str:
    try:
        return decode(segment, "payload")  # type: ignore[operator]
    except DecodeError as exc:
        return f"DecodeError: {exc}"


EDGE_CASES = [
    b"",
    b"=",
    b"==",
    b"===",
    b"A",
    b"AA",
    b"AAA",
    b"AAAA",
    b"AA==",
    b"AA=",
    b"AAA=",
    b"AAAA==",
    b"A===",
    b"AB",  # non-zero bits after the last byte: not canonical
    b"AE",
    b"QQ",
    b"QR",
    b"QUI",
    b"QUJ",
    b"!!!!",
    b"AA!A",
    b"AA+A",  # standard base64, not base64url
    b"AA/A",
    b"AA A",
    b"AA\nA",
    b"A=A=",
    b"AA=A",
    b"\xff\xfe",
    base64.urlsafe_b64encode(bytes(range(256))).rstrip(b"="),
    base64.urlsafe_b64encode(bytes(range(256))),
    b"eyJhbGciOiJSUzI1NiJ9",
    b"eyJhbGciOiJSUzI1NiJ9=",
]


@pytest.mark.parametrize("segment", EDGE_CASES)
def test_edge_cases_match_pyjwt(segment):
    assert outcome(decode_segment, segment) == outcome(ORIGINAL, segment)


def test_random_segments_match_pyjwt():
    rng = random.Random(7)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ .!\x00\xff"
    accepted = 0
    for _ in range(RANDOM_CASES):
        if rng.random() < 0.5:  # real encodings, sometimes padded, sometimes with one byte changed
            segment = base64.urlsafe_b64encode(rng.randbytes(rng.randrange(0, 40)))
            segment = segment if rng.random() < 0.3 else segment.rstrip(b"=")
            if segment and rng.random() < 0.3:
                at = rng.randrange(len(segment))
                segment = segment[:at] + bytes([rng.choice(alphabet)]) + segment[at + 1 :]
        else:
            segment = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        expected = outcome(ORIGINAL, segment)
        assert outcome(decode_segment, segment) == expected, segment
        accepted += not isinstance(expected, str)
    assert 0.2 * RANDOM_CASES < accepted < 0.8 * RANDOM_CASES  # both kinds were exercised


def canonical_by_decoding(segment: bytes) -> bytes | str:
    decoded = outcome(decode_segment, segment)
    return decoded if isinstance(decoded, str) else base64.urlsafe_b64encode(decoded).rstrip(b"=")


def random_segments(count: int) -> list[bytes]:
    rng = random.Random(11)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/!"
    segments = []
    for _ in range(count):
        segment = base64.urlsafe_b64encode(rng.randbytes(rng.randrange(0, 300)))
        segment = segment if rng.random() < 0.2 else segment.rstrip(b"=")
        if segment and rng.random() < 0.4:
            at = rng.randrange(len(segment))
            segment = segment[:at] + bytes([rng.choice(alphabet)]) + segment[at + 1 :]
        segments.append(segment)
    return segments


@pytest.mark.parametrize("segment", EDGE_CASES)
def test_a_canonical_segment_is_the_one_text_of_its_bytes(segment):
    if is_canonical_segment(segment):
        assert canonical_by_decoding(segment) == segment
    assert outcome(canonical_segment, segment) == canonical_by_decoding(segment)


def test_random_segments_canonical_text_matches_decoding():
    fast = 0
    for segment in random_segments(RANDOM_CASES // 2):
        if is_canonical_segment(segment):
            fast += 1
            assert canonical_by_decoding(segment) == segment, segment
        assert outcome(canonical_segment, segment) == canonical_by_decoding(segment), segment
    assert fast > RANDOM_CASES // 10  # the answer without decoding was exercised


def test_every_unpadded_encoding_is_recognised_as_canonical():
    rng = random.Random(5)
    for length in range(1, 300):
        assert is_canonical_segment(base64.urlsafe_b64encode(rng.randbytes(length)).rstrip(b"="))


def test_the_decoder_is_pyjwt_with_only_the_segment_check_replaced():
    assert jwt_decoder._jws is jws_parser
    assert type(jws_parser)._decode_base64url_segment is decode_segment
    key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode({"sub": "x", "aud": "a"}, key, algorithm="ES256", headers={"kid": "k"})
    claims = jwt_decoder.decode(token, key.public_key(), algorithms=["ES256"], audience="a")
    assert claims == {"sub": "x", "aud": "a"}
    assert jws_parser.get_unverified_header(token)["kid"] == "k"
    forged = token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt_decoder.decode(forged, key.public_key(), algorithms=["ES256"], audience="a")
    with pytest.raises(DecodeError):
        jwt_decoder.decode(token[:-2] + "!!", key.public_key(), algorithms=["ES256"], audience="a")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HEADER_CASES = [
    b64(b'{"alg":"RS256","kid":"k1","typ":"JWT"}'),
    b64(b'{"alg":"ES256"}'),
    b64(b'{"alg":"RS256","kid":7}'),  # kid not a string
    b64(b'{"alg":"RS256","crit":["b64"],"b64":false}'),
    b64(b'{"alg":"RS256","crit":["exp"]}'),  # unsupported critical extension
    b64(b'{"alg":"RS256","crit":[]}'),
    b64(b'{"alg":"RS256","crit":"b64"}'),
    b64(b'{"alg":"RS256","b64":false}'),
    b64(b'["alg","RS256"]'),  # not an object
    b64(b'"RS256"'),
    b64(b"null"),
    b64(b'{"alg":"RS256"'),  # cut short
    b64(b"\xff\xfe{}"),
    b64('{"alg":"RS256"}'.encode("utf-16")),  # json.loads detects UTF-16 from the bytes
    b64(b"[" * 100_000 + b"]" * 100_000),  # deep nesting
    b64(b'{"alg":"RS256","kid":"\\ud800"}'),
    b64(b'{"alg":"RS256"}') + "=",
    "eyJhbGciOiJSUzI1NiJ9!",
    "",
    "e",
    "\udc80",
]


def header_outcome(parse: object, segment: str) -> object:
    try:
        return parse(segment)  # type: ignore[operator]
    except Exception as exc:  # the kind and message of every refusal are compared
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("segment", HEADER_CASES)
def test_a_header_alone_parses_as_pyjwt_parses_it_in_a_token(segment):
    expected = header_outcome(lambda text: PyJWS().get_unverified_header(text + ".."), segment)
    assert header_outcome(jws_parser.header_of, segment) == expected


def test_random_headers_parse_as_pyjwt_parses_them():
    rng = random.Random(11)
    pieces = [b'{"alg":"RS256"', b',"kid":"k"', b',"kid":1', b',"crit":["b64"]', b',"b64":false']
    pieces += [b"}", b"]", b'"', b"\\"]
    for _ in range(2000):
        raw = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 6)))
        segment = b64(raw)
        if rng.random() < 0.2:
            at = rng.randrange(len(segment) + 1)
            segment = segment[:at] + rng.choice("A_-=!") + segment[at:]  # no ".": a first segment holds none
        expected = header_outcome(lambda text: PyJWS().get_unverified_header(text + ".."), segment)
        assert header_outcome(jws_parser.header_of, segment) == expected, segment

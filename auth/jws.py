"""PyJWT's decoder with its base64url segment check done in C, and the JOSE header of a token parsed alone.

PyJWT 2.15 rejects junk in a segment (GHSA-hxm8-2xgr-2p9m) by testing every character in a Python loop: about
a third of the cost of refusing a forged token. `decode_segment` applies the same rules (at most two `=`,
padding only to a multiple of 4, no length of 4n+1, the base64url alphabet only, canonical encoding) with
`bytes.translate` and `binascii`; tests/auth/test_jws.py checks it against PyJWT's own on edge cases and
random input. Everything else (header checks, signature, claims) is PyJWT's, unchanged.

`canonical_segment` gives the one unpadded text of a segment's bytes, without decoding when the segment is already
that text (as signers write it): the signature memo compares signatures by it.

`header_of` is PyJWT's `get_unverified_header` for the header segment alone: the same steps and errors, without
splitting and decoding the other two segments (what it costs matters when refusing a flood of unknown kids).
"""

from __future__ import annotations

import binascii
import json
from typing import Any

from jwt import PyJWT
from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError

BASE64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_SEXTET = {byte: value for value, byte in enumerate(BASE64URL_ALPHABET)}


def decode_segment(segment: bytes, name: str) -> bytes:
    """One base64url segment of a compact JWS, decoded; DecodeError wherever PyJWT raises one."""
    if not segment:
        return b""  # as PyJWT decodes it (the verifier parses a header alone as `header..`)
    stripped = segment.rstrip(b"=")
    padding = len(segment) - len(stripped)
    if (
        padding > 2
        or (padding and len(segment) % 4)
        or len(stripped) % 4 == 1
        or stripped.translate(None, BASE64URL_ALPHABET)  # what is left is not base64url
    ):
        raise DecodeError(f"Invalid {name} padding")
    try:
        # base64.urlsafe_b64decode and urlsafe_b64encode, without their Python wrappers: the same C calls
        decoded = binascii.a2b_base64(stripped.translate(_TO_STANDARD) + b"=" * (-len(stripped) % 4))
    except binascii.Error as err:  # not reached after the checks above; kept as PyJWT has it
        raise DecodeError(f"Invalid {name} padding") from err
    if _unpadded_text(decoded) != stripped:
        raise DecodeError(f"Invalid {name} padding")  # non-zero bits after the last byte
    return decoded


def _unpadded_text(data: bytes) -> bytes:
    """The canonical unpadded base64url text of `data`."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=")


def is_canonical_segment(segment: bytes) -> bool:
    """Whether decode_segment accepts `segment` as it is, unpadded: then it is the one text of its bytes, and two
    such segments decode to the same bytes exactly when they are equal. False is no verdict: decode to know."""
    remainder = len(segment) % 4
    if not segment or remainder == 1 or segment.translate(None, BASE64URL_ALPHABET):  # `=` is not in it either
        return False
    # the bits the last character carries beyond the last whole byte must be zero
    return not remainder or not _SEXTET[segment[-1]] & (0x0F if remainder == 2 else 0x03)


def canonical_segment(segment: bytes, name: str) -> bytes:
    """The unpadded canonical text of what `segment` decodes to (decode_segment's DecodeError if it does not)."""
    if is_canonical_segment(segment):
        return segment
    return _unpadded_text(decode_segment(segment, name))


class FastSegmentJWS(PyJWS):
    _decode_base64url_segment = staticmethod(decode_segment)

    def header_of(self, segment: str) -> dict[str, Any]:
        """The JOSE header in a token's first segment (the text before its first "."), unverified: what
        get_unverified_header(segment + "..") returns or raises (tests/auth/test_jws.py compares the two)."""
        header_data = decode_segment(segment.encode("utf-8"), "header")
        try:
            header: dict[str, Any] = json.loads(header_data)
        except (ValueError, RecursionError) as e:
            raise DecodeError(f"Invalid header string: {e}") from e
        if not isinstance(header, dict):
            raise DecodeError("Invalid header string: must be a json object")
        self._validate_headers(header)
        return header


jws_parser = FastSegmentJWS()
jwt_decoder = PyJWT()
jwt_decoder._jws = jws_parser  # how PyJWT pairs its own module-level decoder with its JWS parser

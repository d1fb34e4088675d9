"""Every patch of a third-party library's private names, in one place, for the versions pinned in requirements.txt.

Each is kept only because `make bench`'s floor needs it (docs/performance.md gives the measured effect);
tests/web/test_compat.py fails when a pinned version changes, so that each is checked again, then kept or
dropped.

- PyJWT: its base64url segment check (GHSA-hxm8-2xgr-2p9m) tests every character in a Python loop, which is
  most of the cost of refusing a forged token. `decode_segment` applies the same rules (at most two `=`,
  padding only to a multiple of 4, no length of 4n+1, the base64url alphabet only, canonical encoding) with
  `bytes.translate` and `binascii`; `jws` is a PyJWS whose segment decoder is this one. Everything else
  (header checks, signature, claims) is PyJWT's.
- MCP SDK: its per-request `ServerRunner` caches two bound methods of itself in `functools.cached_property`
  attributes, a reference cycle that keeps each call's objects until the cyclic collector runs.
  `break_runner_cycles` makes them plain properties (only while the SDK defines them as cached properties).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from functools import cached_property
from operator import attrgetter
from typing import Any

from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError
from mcp.server.runner import ServerRunner

# The versions these patches were written and checked against (requirements.txt pins the same).
PATCHED_VERSIONS = {"pyjwt": "2.15.1", "mcp": "2.3.0"}

BASE64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_SEXTET = {byte: value for value, byte in enumerate(BASE64URL_ALPHABET)}


def decode_segment(segment: bytes, name: str) -> bytes:
    """One base64url segment of a compact JWS, decoded; DecodeError wherever PyJWT raises one."""
    if not segment:
        return b""
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
        decoded = binascii.a2b_base64(stripped.translate(_TO_STANDARD) + b"=" * (-len(stripped) % 4))
    except binascii.Error as err:  # not reached after the checks above; kept as PyJWT has it
        raise DecodeError(f"Invalid {name} padding") from err
    if binascii.b2a_base64(decoded, newline=False).translate(_TO_URLSAFE).rstrip(b"=") != stripped:
        raise DecodeError(f"Invalid {name} padding")  # non-zero bits after the last byte
    return decoded


def is_canonical_segment(segment: bytes) -> bool:
    """Whether `segment` is the one unpadded base64url text of the bytes it decodes to (as signers write it)."""
    remainder = len(segment) % 4
    if not segment or remainder == 1 or segment.translate(None, BASE64URL_ALPHABET):  # `=` is not in it either
        return False
    # the bits the last character carries beyond the last whole byte must be zero
    return not remainder or not _SEXTET[segment[-1]] & (0x0F if remainder == 2 else 0x03)


class _FastSegmentJWS(PyJWS):
    _decode_base64url_segment = staticmethod(decode_segment)


jws = _FastSegmentJWS()

# cached property of ServerRunner -> the method it caches, bound
_RUNNER_HANDLERS = {"on_request": "_on_request", "on_notify": "_on_notify"}


def uncached_handlers(cls: type, handlers: dict[str, str]) -> list[str]:
    """Replace each `cached_property` that caches a bound method of `cls` by a property; the names replaced."""
    replaced = []
    for name, method in handlers.items():
        current = cls.__dict__.get(name)
        if isinstance(current, cached_property) and callable(getattr(cls, method, None)):
            getter: Callable[[Any], Any] = attrgetter(method)
            setattr(cls, name, property(getter, doc=f"`self.{method}`, bound afresh on each access"))
            replaced.append(name)
    return replaced


def break_runner_cycles() -> list[str]:
    """Apply the fix to the SDK's ServerRunner (idempotent); the attributes it changed this time."""
    return uncached_handlers(ServerRunner, _RUNNER_HANDLERS)

"""Every AuthError is answered the same way: its status, the one refusal body, and its RFC 6750 challenge."""

from __future__ import annotations

import json

import pytest

from auth.challenge import ChallengeResponder
from auth.errors import (
    AuthError,
    InsufficientScope,
    InvalidDpopProof,
    InvalidToken,
    KeySetUnavailable,
    MissingToken,
    Reason,
    UseDpopNonce,
)


class Recorded:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def __call__(self, message: dict) -> None:
        self.messages.append(message)


async def answer(responder: ChallengeResponder, exc: AuthError) -> tuple[int, dict[bytes, bytes], dict]:
    sent = Recorded()
    await responder(exc, sent)  # type: ignore[arg-type]
    start, body = sent.messages
    return start["status"], dict(start["headers"]), json.loads(body["body"])


ERRORS: list[AuthError] = [
    *(InvalidToken(reason) for reason in Reason if reason.name.startswith(("BAD", "KEY_", "EXPIRED", "CLAIMS"))),
    MissingToken(),
    InsufficientScope(("a",)),
    InsufficientScope(("b", "c")),
    KeySetUnavailable(),
]


@pytest.mark.parametrize("exc", ERRORS, ids=lambda exc: f"{type(exc).__name__}-{exc.reason.name}")
async def test_each_error_gets_its_status_body_and_challenge(exc):
    responder = ChallengeResponder(resource_metadata_url="https://rs.example/.well-known/prm", scopes=["a", "b"])
    status, headers, body = await answer(responder, exc)
    assert status == exc.status
    assert body == {"error": exc.error or "unauthorized", "error_description": exc.description}
    assert headers[b"content-length"] == str(len(json.dumps(body))).encode()
    if isinstance(exc, KeySetUnavailable):
        assert headers[b"retry-after"] == b"10"
        assert b"www-authenticate" not in headers
        return
    challenge = headers[b"www-authenticate"].decode()
    assert challenge.startswith("Bearer ")
    assert 'resource_metadata="https://rs.example/.well-known/prm"' in challenge
    assert (f'error_description="{exc.description}"' in challenge) != isinstance(exc, MissingToken)
    if isinstance(exc, InsufficientScope):
        assert f'scope="{" ".join(exc.required)}"' in challenge
    else:
        assert 'scope="a b"' in challenge


async def test_required_scopes_are_named_with_the_idp_prefix():
    responder = ChallengeResponder(resource_metadata_url="https://rs/prm", scopes=["x/a"], scope_prefix="x/")
    _, headers, body = await answer(responder, InsufficientScope(("a",)))
    assert 'scope="x/a"' in headers[b"www-authenticate"].decode()
    assert body["error_description"] == "required scope: a"


# --- DPoP (RFC 9449 section 7.1) -------------------------------------------------------------------

PRM = "https://rs/prm"
ALGS = ("ES256", "EdDSA")


def challenges_of(responder: ChallengeResponder, exc: AuthError, scheme: str | None) -> list[str]:
    return [value.decode() for name, value in responder.headers(exc, scheme) if name == b"www-authenticate"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bearer", "scheme", "expected"),
    [
        # allowed mode, no token: both challenges
        (True, None, ['Bearer resource_metadata="https://rs/prm", scope="a"', 'DPoP algs="ES256 EdDSA"']),
        # required mode: DPoP alone, with what the Bearer one would have said
        (False, None, ['DPoP algs="ES256 EdDSA", resource_metadata="https://rs/prm", scope="a"']),
    ],
)
def test_the_no_token_challenges_per_mode(bearer, scheme, expected):
    responder = ChallengeResponder(resource_metadata_url=PRM, scopes=["a"], dpop_algorithms=ALGS, bearer=bearer)
    assert challenges_of(responder, MissingToken(), scheme) == expected


def test_a_dpop_request_gets_the_dpop_challenge_with_the_error_and_a_nonce_refusal_a_fresh_nonce():
    responder = ChallengeResponder(resource_metadata_url=PRM, scopes=["a"], dpop_algorithms=ALGS)
    [challenge] = challenges_of(responder, InvalidDpopProof(Reason.DPOP_SIGNATURE), "dpop")
    assert challenge == (
        'DPoP algs="ES256 EdDSA", error="invalid_dpop_proof", error_description="DPoP proof signature is invalid", '
        'resource_metadata="https://rs/prm", scope="a"'
    )
    headers = dict(responder.headers(UseDpopNonce("n-1"), "dpop"))
    assert headers[b"dpop-nonce"] == b"n-1"
    assert b'error="use_dpop_nonce"' in headers[b"www-authenticate"]


def test_a_bearer_refusal_in_allowed_mode_keeps_its_bearer_error_and_offers_dpop():
    responder = ChallengeResponder(resource_metadata_url=PRM, scopes=["a"], dpop_algorithms=ALGS)
    bearer, dpop = challenges_of(responder, InvalidToken(Reason.EXPIRED), "bearer")
    assert bearer.startswith('Bearer error="invalid_token", error_description="token has expired"')
    assert dpop == 'DPoP algs="ES256 EdDSA"'

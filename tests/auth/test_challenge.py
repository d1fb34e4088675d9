"""Every AuthError is answered the same way: its status, the one refusal body, and its RFC 6750 challenge."""

from __future__ import annotations

import json

import pytest

from auth.challenge import ChallengeResponder
from auth.errors import AuthError, InsufficientScope, InvalidToken, KeySetUnavailable, MissingToken, Reason


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

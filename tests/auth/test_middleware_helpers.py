"""The bearer middleware's helpers: the SDK view built once per verification, the refusal-log budget, and the
prepared challenge answers."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from starlette.testclient import TestClient

from auth.challenge import MAX_PREPARED_ANSWERS, ChallengeResponder
from auth.errors import AuthError, InsufficientScope, InvalidToken, KeySetUnavailable, MissingToken
from auth.middleware import REFUSAL_LOG_BURST, CallerViews, LogBudget, RecentCallers, _Caller
from auth.principal import Principal
from tests.support import BASE_URL, ISSUER, SERVER_URL, legacy_headers, make_settings, rpc_body
from web.app import build_app


def principal(subject: str = "user-123") -> Principal:
    return Principal(
        subject=subject,
        client_id="client-abc",
        issuer=ISSUER,
        audience=(SERVER_URL,),
        scopes=frozenset({"b", "a"}),
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        claims={"sub": subject, "iss": ISSUER},
    )


def test_a_view_is_built_once_per_verified_principal():
    views = CallerViews(SERVER_URL, max_entries=10)
    who = principal()
    user, credentials = views.of(who, "token-1")
    assert views.of(who, "token-1") == (user, credentials)
    access = user.access_token
    assert (access.token, access.subject, access.client_id, access.scopes) == (
        "token-1",
        "user-123",
        "client-abc",
        ["a", "b"],
    )
    assert access.resource == SERVER_URL and credentials.scopes == ["a", "b"]


def test_a_new_verification_gets_a_new_view_even_when_equal():
    views = CallerViews(SERVER_URL, max_entries=10)
    first, second = principal(), principal()
    assert first == second  # equal identities, but two verifications (two tokens)
    assert views.of(first, "token-1")[0].access_token.token == "token-1"
    assert views.of(second, "token-2")[0].access_token.token == "token-2"


def test_views_are_bounded():
    views = CallerViews(SERVER_URL, max_entries=3)
    kept = [principal(f"user-{index}") for index in range(10)]
    for index, who in enumerate(kept):
        views.of(who, f"token-{index}")
    assert len(views) == 3
    assert len(CallerViews(SERVER_URL, max_entries=0)) == 0


def test_recent_callers_are_bounded_oldest_first():
    views = CallerViews(SERVER_URL, max_entries=10)
    recent = RecentCallers(max_entries=2)
    callers = []
    for index in range(3):
        who = principal(f"user-{index}")
        callers.append(_Caller(b"d%d" % index, who, *views.of(who, f"token-{index}")))
        recent.remember(b"Bearer token-%d" % index, callers[-1])
    assert len(recent) == 2
    assert recent.get(b"Bearer token-0") is None
    assert recent.get(b"Bearer token-2") is callers[2]
    recent.forget(b"Bearer token-2")
    assert recent.get(b"Bearer token-2") is None
    off = RecentCallers(max_entries=0)
    off.remember(b"Bearer token-1", callers[1])
    assert len(off) == 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_log_budget_allows_a_burst_then_a_steady_rate_and_counts_the_rest():
    clock = Clock()
    budget = LogBudget(burst=3, per_second=2, clock=clock)
    assert [budget.allow() for _ in range(5)] == [True, True, True, False, False]
    clock.now += 0.5  # one more line's worth
    assert budget.allow()
    assert budget.note() == " (2 more refusals not logged)"
    assert budget.note() == ""
    assert not budget.allow()


def test_a_flood_of_bad_tokens_is_refused_in_full_but_logged_in_part(idp, rotated_signer, caplog):
    caplog.set_level(logging.INFO, logger="auth.middleware")
    body = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
    floods = REFUSAL_LOG_BURST + 10
    with TestClient(build_app(make_settings()), base_url=BASE_URL) as client:
        statuses = [
            client.post("/mcp", json=body, headers=legacy_headers(rotated_signer.token(jti=str(index)))).status_code
            for index in range(floods)
        ]
    assert statuses == [401] * floods
    lines = [record.getMessage() for record in caplog.records if record.name == "auth.middleware"]
    assert REFUSAL_LOG_BURST <= len(lines) < floods
    assert all(line.startswith("token refused: token signing key is unknown: ") for line in lines)


class Recorded:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def __call__(self, message: dict) -> None:
        self.messages.append(message)


async def answer(responder: ChallengeResponder, exc: AuthError) -> tuple[int, dict[bytes, bytes], dict]:
    sent = Recorded()
    await responder(exc, {"type": "http", "state": {}}, None, sent)  # type: ignore[arg-type]
    start, body = sent.messages
    return start["status"], dict(start["headers"]), json.loads(body["body"])


async def test_prepared_answers_match_each_error_and_stay_correct_past_their_bound():
    responder = ChallengeResponder(resource_metadata_url="https://rs.example/.well-known/prm", scopes=["a", "b"])
    errors: list[AuthError] = [InvalidToken(f"reason {index}") for index in range(MAX_PREPARED_ANSWERS + 20)]
    errors += [MissingToken(), InsufficientScope(("a",)), InsufficientScope(("b",)), KeySetUnavailable("down")]
    for _ in range(2):  # built, then reused (or rebuilt past the bound): the same answer either way
        for exc in errors:
            status, headers, body = await answer(responder, exc)
            assert status == exc.status
            assert body == {"error": exc.error or "unauthorized", "error_description": exc.description}
            assert headers[b"content-length"] == str(len(json.dumps(body))).encode()
            if isinstance(exc, KeySetUnavailable):
                assert headers[b"retry-after"] == b"10"
            else:
                challenge = headers[b"www-authenticate"].decode()
                assert (f'error_description="{exc.description}"' in challenge) != isinstance(exc, MissingToken)
    assert len(responder._prepared) == MAX_PREPARED_ANSWERS

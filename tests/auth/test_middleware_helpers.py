"""The bearer middleware's helpers: the SDK view built once per verification, and the refusal-log budget."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from starlette.testclient import TestClient

from auth.middleware import REFUSAL_LOG_BURST, CallerViews, LogBudget
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

"""The bearer middleware's own behaviour: its rate-limited refusal log line."""

from __future__ import annotations

import logging

from starlette.testclient import TestClient

from auth.middleware import REFUSAL_LOG_BURST, LogBudget
from tests.support import BASE_URL, Clock, legacy_headers, make_settings, rpc_body
from web.app import build_app


def test_log_budget_allows_a_burst_then_a_steady_rate_and_counts_the_rest():
    clock = Clock()
    budget = LogBudget(burst=3, per_second=2, clock=clock)
    assert [budget.allow() for _ in range(5)] == [True, True, True, False, False]
    clock.advance(0.5)  # one more line's worth
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


def test_a_refusal_without_more_to_say_is_logged_once_not_twice(idp, caplog):
    caplog.set_level(logging.INFO, logger="auth.middleware")
    body = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
    with TestClient(build_app(make_settings(oauth_max_token_bytes=1024)), base_url=BASE_URL) as client:
        assert client.post("/mcp", json=body, headers=legacy_headers("a" * 2000)).status_code == 401
    lines = [record.getMessage() for record in caplog.records if record.name == "auth.middleware"]
    assert lines == ["token refused: token is too large"]

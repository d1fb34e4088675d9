"""Several issuers through the real app: both accepted, cross-signed refused, metadata, readiness, metrics, log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from settings import load_settings
from tests.support import (
    BASE_URL,
    DISCOVERY_URL,
    ISSUER,
    ISSUER_B,
    JWKS_B,
    JWKS_URI,
    MCP_HEADERS,
    SERVER_URL,
    DpopKey,
    Signer,
    bearer,
    dpop_headers,
    make_claims,
    rpc_body,
)
from tests.web.test_metrics import METRICS_TOKEN, SCRAPE, parse_exposition, value, wait_until
from web.app import build_app

GET_ME = rpc_body("tools/call", {"name": "get_me", "arguments": {}})


def build(tmp_path: Path, more_b: str = "", more_a: str = ""):
    text = (
        f'[[issuer]]\nissuer = "{ISSUER}"\njwks_uri = "{JWKS_URI}"\n{more_a}\n'
        f'[[issuer]]\nissuer = "{ISSUER_B}"\njwks_uri = "{JWKS_B}"\naudience = ["api://mcp"]\n{more_b}'
    )
    (tmp_path / "issuers.toml").write_text(text, encoding="utf-8")
    settings = load_settings(
        oauth_issuers_file=str(tmp_path / "issuers.toml"),
        mcp_server_url=SERVER_URL,
        metrics_token=METRICS_TOKEN,
        _env_file=None,
    )
    return build_app(settings)


@pytest.fixture
def client(tmp_path: Path, idps: respx.MockRouter) -> Iterator[TestClient]:
    with TestClient(build(tmp_path), base_url=BASE_URL) as test_client:
        yield test_client


def get_me(client: TestClient, token: str) -> httpx.Response:
    return client.post("/mcp", json=GET_ME, headers={**MCP_HEADERS, **bearer(token)})


def test_both_issuers_tokens_reach_the_tools(client, signer, signer_b):
    a = get_me(client, signer.token(sub="alice"))
    b = get_me(client, signer_b.token(iss=ISSUER_B, aud="api://mcp", sub="bob"))
    assert (a.status_code, b.status_code) == (200, 200)
    assert a.json()["result"]["structuredContent"]["issuer"] == ISSUER
    assert b.json()["result"]["structuredContent"]["issuer"] == ISSUER_B


def test_each_issuers_own_audience_applies(client, signer, signer_b):
    assert get_me(client, signer_b.token(iss=ISSUER_B)).status_code == 401  # aud is A's default, not B's
    assert get_me(client, signer.token(aud="api://mcp")).status_code == 401


def test_a_cross_signed_token_and_an_unknown_issuer_are_401(client, idps, signer, signer_b):
    wait_until(lambda: idps["a"].call_count == 1 and idps["b"].call_count == 1)  # the start-up fetches
    for token in (signer_b.token(iss=ISSUER), signer.token(iss="https://evil.example.com/")):
        response = get_me(client, token)
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert idps["b"].call_count == 1  # B's keys played no part


def test_the_resource_metadata_lists_every_issuer_and_the_redirect_the_first(client):
    metadata = client.get("/.well-known/oauth-protected-resource/mcp").json()
    assert metadata["authorization_servers"] == [ISSUER, ISSUER_B]
    redirect = client.get("/.well-known/oauth-authorization-server", follow_redirects=False)
    assert redirect.status_code == 302 and redirect.headers["location"] == DISCOVERY_URL


def test_outcomes_and_key_sets_are_labelled_by_issuer(client, idps, signer, signer_b):
    wait_until(lambda: idps["a"].call_count == 1 and idps["b"].call_count == 1)
    assert get_me(client, signer.token()).status_code == 200
    assert get_me(client, signer_b.token(iss=ISSUER_B, aud="api://mcp")).status_code == 200
    assert get_me(client, signer_b.token(iss=ISSUER_B)).status_code == 401
    assert get_me(client, signer.token(iss="https://evil.example.com/")).status_code == 401
    assert get_me(client, "not-a-jwt").status_code == 401
    samples = parse_exposition(client.get("/metrics", headers=SCRAPE).text)
    auth = "mcp_auth_outcomes_total"
    assert value(samples, auth, outcome="ok", issuer=ISSUER) == 1
    assert value(samples, auth, outcome="ok", issuer=ISSUER_B) == 1
    assert value(samples, auth, outcome="invalid_token", issuer=ISSUER_B) == 1
    assert value(samples, auth, outcome="invalid_token", issuer="other") == 1
    assert value(samples, auth, outcome="invalid_token", issuer="none") == 1
    issuers = {dict(labels).get("issuer") for name, labels in samples if name == auth}
    assert issuers <= {ISSUER, ISSUER_B, "other", "none"}
    for issuer in (ISSUER, ISSUER_B):
        assert value(samples, "mcp_jwks_ready", issuer=issuer) == 1
        assert value(samples, "mcp_jwks_fetches_total", issuer=issuer) == 1


def test_the_access_line_names_the_issuer(client, signer_b, caplog):
    caplog.set_level(logging.INFO, logger="access")
    assert get_me(client, signer_b.token(iss=ISSUER_B, aud="api://mcp")).status_code == 200
    [record] = [record for record in caplog.records if record.name == "access" and record.path == "/mcp"]
    assert record.issuer == ISSUER_B and f"issuer={ISSUER_B}" in record.getMessage()


def test_one_idp_down_at_start_keeps_the_server_unready_but_the_others_tokens_work(tmp_path, idps, signer, signer_b):
    idps["b"].mock(return_value=httpx.Response(503))
    app = build(tmp_path, "jwks_refresh_cooldown_seconds = 0\n")  # each probe may ask B again
    with TestClient(app, base_url=BASE_URL) as client:
        wait_until(lambda: idps["a"].call_count >= 1 and app.state.components.router.key_sets[ISSUER_B].failure_count)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == f"signing keys not fetched yet ({ISSUER_B})"
        assert get_me(client, signer.token()).status_code == 200
        idps["b"].mock(return_value=httpx.Response(200, json={"keys": [signer_b.jwk()]}))
        wait_until(lambda: client.get("/readyz").status_code == 200)


# --- several issuers with DPoP and with introspection ---------------------------------------------------------


def test_a_dpop_bound_token_from_the_second_issuer_needs_its_proof(client, signer_b, ec_private_key):
    key = DpopKey(ec_private_key, "ES256")
    token = signer_b.token(iss=ISSUER_B, aud="api://mcp", cnf={"jkt": key.thumbprint})
    accepted = client.post("/mcp", json=GET_ME, headers=dpop_headers(token, key.proof(token=token)))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["result"]["structuredContent"]["issuer"] == ISSUER_B
    refused = get_me(client, token)
    assert refused.status_code == 401
    assert refused.json()["error_description"] == "token is bound to a key and cannot be used as a bearer token"


INTROSPECT_A = "https://idp.example.com/oauth2/introspect"
INTROSPECT_B = "https://login.partner.example.org/introspect"


def introspects(endpoint: str) -> str:
    return (
        f'introspection_endpoint = "{endpoint}"\nintrospection_client_id = "mcp"\nintrospection_client_secret = "s"\n'
    )


@pytest.fixture
def answers(idps: respx.MockRouter) -> dict[str, dict[str, Any]]:
    """Each IdP's introspection answers by token (inactive when unknown); an IdP whose entry is "down" is a 503."""
    per_idp: dict[str, dict[str, Any]] = {INTROSPECT_A: {}, INTROSPECT_B: {}}

    def answer(request: httpx.Request) -> httpx.Response:
        known = per_idp[str(request.url)]
        if known.get("down"):
            return httpx.Response(503)
        token = parse_qs(request.content.decode())["token"][0]
        return httpx.Response(200, json=known.get(token, {"active": False}))

    for endpoint in per_idp:
        idps.post(endpoint).mock(side_effect=answer)
    return per_idp


@pytest.fixture
def both_introspect(tmp_path: Path, answers: dict[str, dict[str, Any]]) -> Iterator[TestClient]:
    app = build(tmp_path, introspects(INTROSPECT_B), more_a=introspects(INTROSPECT_A))
    with TestClient(app, base_url=BASE_URL) as test_client:
        yield test_client


def introspected_at(idps: respx.MockRouter) -> list[str]:
    return [str(call.request.url) for call in idps.calls if call.request.method == "POST"]


def test_an_opaque_token_active_at_the_second_issuer_only_is_accepted_and_labelled_so(
    both_introspect, idps, answers, caplog
):
    answers[INTROSPECT_B]["opaque-b"] = {"active": True, **make_claims(aud="api://mcp", drop=("iss",))}
    caplog.set_level(logging.INFO, logger="access")
    response = get_me(both_introspect, "opaque-b")
    assert response.status_code == 200, response.text
    assert response.json()["result"]["structuredContent"]["issuer"] == ISSUER_B  # no iss: the configured one
    assert introspected_at(idps) == [INTROSPECT_A, INTROSPECT_B]  # file order: A answered inactive first
    [record] = [record for record in caplog.records if record.name == "access" and record.path == "/mcp"]
    assert record.issuer == ISSUER_B
    samples = parse_exposition(both_introspect.get("/metrics", headers=SCRAPE).text)
    assert value(samples, "mcp_auth_outcomes_total", outcome="ok", issuer=ISSUER_B) == 1


def test_a_dpop_bound_opaque_token_of_the_second_issuer_needs_its_proof(both_introspect, answers, ec_private_key):
    key = DpopKey(ec_private_key, "ES256")
    bound = make_claims(iss=ISSUER_B, aud="api://mcp", cnf={"jkt": key.thumbprint})
    answers[INTROSPECT_B]["opaque-bound"] = {"active": True, "token_type": "DPoP", **bound}
    headers = dpop_headers("opaque-bound", key.proof(token="opaque-bound"))
    assert both_introspect.post("/mcp", json=GET_ME, headers=headers).status_code == 200
    assert get_me(both_introspect, "opaque-bound").status_code == 401


def test_an_opaque_token_both_issuers_call_inactive_is_401(both_introspect, answers):
    response = get_me(both_introspect, "opaque-unknown")
    assert response.status_code == 401
    assert response.json()["error_description"] == "token is not active"


def test_the_first_issuer_down_and_the_second_inactive_is_a_503(both_introspect, idps, answers):
    answers[INTROSPECT_A]["down"] = True
    response = get_me(both_introspect, "opaque-unknown")
    assert response.status_code == 503, response.text
    assert introspected_at(idps) == [INTROSPECT_A, INTROSPECT_B]
    assert response.headers["retry-after"].isdigit()


# --- any token, any issuer claim: a 401 or a 200, never a 5xx ----------------------------------------------------

ISS_VALUES = st.sampled_from([ISSUER, ISSUER_B, ISSUER.rstrip("/"), "", None, 7, [ISSUER], {"iss": ISSUER}]) | st.text(
    max_size=30
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(iss=ISS_VALUES, by_b=st.booleans(), aud=st.sampled_from([SERVER_URL, "api://mcp"]))
def test_any_issuer_claim_from_either_key_is_answered_without_a_5xx(client, signer, signer_b, iss, by_b, aud):
    key = signer_b if by_b else signer
    payload = make_claims(iss=iss, aud=aud, drop=("iss",) if iss is None else ())
    token = jwt.PyJWS().encode(json.dumps(payload).encode(), key.private_key, "RS256", {"kid": key.kid})
    status = get_me(client, token).status_code
    issuer_of_key = ISSUER_B if by_b else ISSUER
    audience_of_key = "api://mcp" if by_b else SERVER_URL
    assert status == (200 if (iss, aud) == (issuer_of_key, audience_of_key) else 401)


def test_one_issuers_refresh_cooldown_never_delays_the_others_rotation(
    tmp_path, idps, signer, signer_b, ec_private_key
):
    """A's unknown kid starts A's refresh cooldown (10 s by default); B (cooldown 0) rotates right after and its
    new key's token is accepted at once: each issuer has its own key-set cache and cooldown."""
    unknown_to_a = Signer(ec_private_key, "not-in-a", "ES256")
    rotated_b = Signer(ec_private_key, "b-new", "ES256")
    with TestClient(build(tmp_path, "jwks_refresh_cooldown_seconds = 0\n"), base_url=BASE_URL) as client:
        assert get_me(client, signer_b.token(iss=ISSUER_B, aud="api://mcp")).status_code == 200
        assert get_me(client, unknown_to_a.token()).status_code == 401  # A fetched again and now cools down
        a_fetches = idps.routes["a"].call_count
        idps.routes["b"].mock(return_value=httpx.Response(200, json={"keys": [signer_b.jwk(), rotated_b.jwk()]}))
        assert get_me(client, rotated_b.token(iss=ISSUER_B, aud="api://mcp")).status_code == 200
        assert get_me(client, unknown_to_a.token()).status_code == 401  # A's cooldown holds for A alone
        assert idps.routes["a"].call_count == a_fetches

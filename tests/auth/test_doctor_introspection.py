"""The doctor explains an opaque token through the IdP's introspection endpoint, step by step."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.auth.test_doctor import diagnose, failures, verdict
from tests.support import CLIENT_ID, DISCOVERY_URL, ISSUER, JWKS_URI, FakeIdP, Signer, make_claims, make_settings

INTROSPECTION_URL = "https://idp.example.com/oauth2/introspect"
SECRET = "doctor-secret-value"
TOKEN = "opaque-token-0123456789abcdefghij"


def introspecting(**overrides):
    values = {
        "oauth_introspection_endpoint": INTROSPECTION_URL,
        "oauth_introspection_client_id": "mcp-rs",
        "oauth_introspection_client_secret": SECRET,
        **overrides,
    }
    return make_settings(**values)


def answer(idp: FakeIdP, response: httpx.Response) -> None:
    idp.router.post(INTROSPECTION_URL).mock(return_value=response)


async def test_an_active_opaque_token_is_explained_and_accepted(idp: FakeIdP) -> None:
    answer(idp, httpx.Response(200, json={"active": True, **make_claims(scope="read:notes")}))
    code, report = await diagnose(introspecting(), TOKEN)
    assert code == 0, report
    assert f"[info] endpoint {INTROSPECTION_URL}; client 'mcp-rs' (client_secret_basic)" in report
    assert "[ok] active: True" in report
    assert f"[ok] issuer '{ISSUER}' is accepted" in report
    assert "[ok] is not a refresh token (token_type None)" in report
    assert verdict(report) == f"[ok] VERDICT: accepted: subject 'user-123', client '{CLIENT_ID}', user"
    assert SECRET not in report


async def test_each_failing_rule_is_named(idp: FakeIdP) -> None:
    expired = make_claims(exp=int(time.time()) - 600, aud="https://other.example.com/mcp", token_type="refresh_token")
    answer(idp, httpx.Response(200, json={"active": True, **expired}))
    code, report = await diagnose(introspecting(), TOKEN)
    assert code == 1
    failed = failures(report)
    assert any(line.startswith("[FAIL] expires ") for line in failed)
    assert "[FAIL] is not a refresh token (token_type 'refresh_token')" in failed
    assert any(line.startswith("[FAIL] audience 'https://other.example.com/mcp' is accepted") for line in failed)
    assert verdict(report) == "[FAIL] VERDICT: refused with 401: token has expired"


async def test_an_inactive_token_is_refused(idp: FakeIdP) -> None:
    answer(idp, httpx.Response(200, json={"active": False}))
    code, report = await diagnose(introspecting(), TOKEN)
    assert code == 1
    assert "[FAIL] active: False" in report
    assert verdict(report) == "[FAIL] VERDICT: refused with 401: token is not active"


@pytest.mark.parametrize(("status", "hint"), [(401, "OAUTH_INTROSPECTION_CLIENT_ID"), (500, "503 with Retry-After")])
async def test_an_endpoint_that_does_not_answer_is_explained(idp: FakeIdP, status: int, hint: str) -> None:
    answer(idp, httpx.Response(status, json={"error": "invalid_client"}))
    code, report = await diagnose(introspecting(), TOKEN)
    assert code == 1
    assert f"[FAIL] the endpoint answers: introspection: POST {INTROSPECTION_URL} answered HTTP {status}" in report
    assert hint in report
    assert SECRET not in report


async def test_the_endpoint_from_discovery_or_why_there_is_none(idp: FakeIdP) -> None:
    code, report = await diagnose(introspecting(oauth_introspection_endpoint=None), TOKEN)
    assert code == 1
    assert f"[FAIL] introspection endpoint: {DISCOVERY_URL} has no introspection_endpoint" in report
    assert "-> set OAUTH_INTROSPECTION_ENDPOINT" in report
    idp.discovery_route.mock(
        return_value=httpx.Response(
            200, json={"issuer": ISSUER, "jwks_uri": JWKS_URI, "introspection_endpoint": INTROSPECTION_URL}
        )
    )
    answer(idp, httpx.Response(200, json={"active": False}))
    _, report = await diagnose(introspecting(oauth_introspection_endpoint=None), TOKEN)
    assert f"[info] endpoint {INTROSPECTION_URL}" in report


async def test_with_introspect_jwts_a_jwt_is_checked_locally_then_at_the_idp(idp: FakeIdP, signer: Signer) -> None:
    answer(idp, httpx.Response(200, json={"active": False}))
    token = signer.token()
    _, report = await diagnose(introspecting(oauth_introspect_jwts=True), token)
    assert report.count("VERDICT") == 2
    assert "[ok] is a signed JWT (header.payload.signature)" in report
    assert "[ok] VERDICT: accepted" in report
    assert "[FAIL] VERDICT: refused with 401: token is not active" in report


async def test_a_jwt_signed_with_an_unpublished_key_is_explained_through_introspection(
    idp: FakeIdP, rotated_signer: Signer
) -> None:
    answer(idp, httpx.Response(200, json={"active": True, **make_claims(scope="read:notes")}))
    code, report = await diagnose(introspecting(), rotated_signer.token())
    assert "[info] not decided locally (token signing key is unknown): the IdP's introspection answer decides" in report
    assert "Token introspection (RFC 7662" in report
    assert verdict(report) == f"[ok] VERDICT: accepted: subject 'user-123', client '{CLIENT_ID}', user"
    assert code == 0  # the unknown kid is no problem: the server asks the IdP too

"""No token or Authorization header shape gives a 5xx: property-based, through the whole app over real HTTP.

Tokens are signed with the test IdP's real key, so every claim and header value reaches every claim check,
the refusal explanation in the log, get_me and the scope gate; the doctor is run over the same space.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import respx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from auth.tooling.doctor import Doctor
from tests.support import BASE_URL, MCP_HEADERS, FakeIdP, Signer, make_claims, make_settings, rpc_body
from web.app import build_app

GET_ME = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
CLAIM_NAMES = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "scope",
    "scp",
    "permissions",
    "roles",
    "azp",
    "client_id",
    "cid",
    "appid",
    "token_use",
    "tid",
    "oid",
    "gty",
    "idtyp",
    "cnf",
    "nonce",
    "at_hash",
    "custom",  # a claim no rule reads: carried in the Principal's claims, never shown
]
HEADER_NAMES = ["alg", "kid", "typ", "crit", "b64", "jku", "x5u", "jwk", "nonce"]
BOUNDED = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)

# Any JSON value, odd numbers and strings included (lone surrogates are written as JSON escapes below).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["\ud800", "a\udfffb", "x" * 3000, "mcp:read", "https://mcp.example.com/mcp"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(signer: Signer, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A compact JWS over any JSON (what jwt.encode would refuse to write), signed with the IdP's real key."""
    signing_input = (
        b64(json.dumps(header, ensure_ascii=True).encode()) + "." + b64(json.dumps(claims, ensure_ascii=True).encode())
    )
    signature = signer.private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64(signature)


@pytest.fixture(scope="module")
def world(rsa_private_key: Any) -> Iterator[tuple[TestClient, Signer]]:
    signer = Signer(rsa_private_key, "rsa-1", "RS256")
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        FakeIdP(router).publish(signer)
        app = build_app(make_settings(oauth_required_scopes=[]))
        with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as client:
            yield client, signer


@pytest.fixture(scope="module")
def rsa_private_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def call(client: TestClient, authorization: str | bytes) -> Any:
    headers = {**MCP_HEADERS, "Authorization": authorization}
    return client.post("/mcp", json=GET_ME, headers=headers)


def assert_answered(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code == 401:
        assert response.headers["www-authenticate"].startswith("Bearer ")
        assert set(response.json()) == {"error", "error_description"}
    elif response.status_code == 200:
        result = response.json()["result"]
        assert not result.get("isError"), result  # get_me answers with its structured result
        assert result["structuredContent"]["user_id"]


@BOUNDED
@given(changes=st.dictionaries(st.sampled_from(CLAIM_NAMES), json_values, max_size=4))
@example(changes={"aud": [[1]]})  # the 500 of issue 19: an unhashable aud in the refusal explanation
@example(changes={"aud": [{"a": 1}], "nonce": None})
@example(changes={"sub": "\ud800"})  # a lone surrogate: refused at verification
@example(changes={"jti": "a\udfffb", "scope": "mcp:read \ud800"})
@example(changes={"exp": 10**40})
@example(changes={"exp": 1.5e308, "iat": -1})
@example(changes={"cnf": {"jkt": "abc"}})
@example(changes={"custom": "\ud800", "name": ["\udfff"]})  # claims no rule reads: carried, never shown
@example(changes={"iss": ["https://idp.example.com/"]})
def test_any_claims_in_a_correctly_signed_token_get_a_4xx_or_a_structured_answer(
    world: tuple[TestClient, Signer], changes: dict[str, Any]
) -> None:
    client, signer = world
    claims = {**make_claims(), **changes}
    assert_answered(call(client, "Bearer " + signed(signer, {"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}, claims)))


@BOUNDED
@given(changes=st.dictionaries(st.sampled_from(HEADER_NAMES), json_values, max_size=3))
@example(changes={"kid": ["rsa-1"]})
@example(changes={"crit": ["b64"], "b64": False})
@example(changes={"alg": None})
@example(changes={"typ": {"a": 1}})
def test_any_jose_header_gets_a_4xx_or_a_structured_answer(
    world: tuple[TestClient, Signer], changes: dict[str, Any]
) -> None:
    client, signer = world
    header = {"alg": "RS256", "kid": "rsa-1", **changes}
    assert_answered(call(client, "Bearer " + signed(signer, header, make_claims())))


@BOUNDED
@given(value=st.binary(max_size=200).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b"").strip()))
@example(value=b"Bearer")
@example(value=b"Bearer a.b.c")
@example(value=b"bearer \xff\xfe.x.y")
@example(value=b"Basic dXNlcjpwYXNz")
@example(value=b"DPoP a.b.c")
def test_any_authorization_header_gets_a_4xx(world: tuple[TestClient, Signer], value: bytes) -> None:
    client, _ = world
    response = call(client, value)
    assert 400 <= response.status_code < 500
    if response.status_code == 401:  # DPoP allowed (the default): the DPoP challenge when DPoP was used
        assert response.headers["www-authenticate"].startswith(("Bearer ", "DPoP "))


def test_a_key_bound_token_sent_as_bearer_is_refused_and_the_log_says_why(
    client: TestClient, signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    """A fresh app: the refusal log line is rate-limited per app."""
    for cnf, why in (
        ({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}, "RFC 9449"),
        ({"x5t#S256": "x"}, "RFC 8705"),
    ):
        caplog.clear()
        with caplog.at_level("INFO"):
            response = call(client, "Bearer " + signer.token(cnf=cnf))
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert "bound to a key" in response.json()["error_description"]
        assert why in caplog.text


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(CLAIM_NAMES), json_values, max_size=3))
@example(changes={"aud": [[1]]})
@example(changes={"sub": "\ud800", "exp": "soon"})
async def test_the_doctor_explains_any_claims_without_failing(rsa_private_key: Any, changes: dict[str, Any]) -> None:
    signer = Signer(rsa_private_key, "rsa-1", "RS256")
    lines: list[str] = []
    token = signed(signer, {"alg": "RS256", "kid": "rsa-1"}, {**make_claims(), **changes})
    with respx.mock(assert_all_called=False) as router:
        idp = FakeIdP(router)
        idp.publish(signer)
        code = await Doctor(make_settings(), lines.append).run(token)
    assert code in (0, 1)
    assert any("VERDICT" in line for line in lines)

"""No introspection answer gives a 5xx other than the 503 with Retry-After: property-based, through the whole app.

Whatever the endpoint sends (any JSON, an active answer with any claim values, any bytes, any status), an opaque
token gets 200, 401, 403 or that 503."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from auth.tooling.doctor import Doctor
from tests.properties.test_any_token import BOUNDED, CLAIM_NAMES, GET_ME, json_values
from tests.support import BASE_URL, MCP_HEADERS, FakeIdP, make_claims, make_settings
from web.app import build_app

INTROSPECTION_URL = "https://idp.example.com/oauth2/introspect"
_counter = itertools.count()


class Endpoint:
    """The introspection endpoint's next answer, set by each example."""

    response = httpx.Response(200, json={"active": False})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        return self.response


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[TestClient, Endpoint]]:
    endpoint = Endpoint()
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        FakeIdP(router)
        router.post(INTROSPECTION_URL).mock(side_effect=endpoint)
        config = make_settings(
            oauth_introspection_endpoint=INTROSPECTION_URL,
            oauth_introspection_client_id="rs",
            oauth_introspection_client_secret="secret",
            oauth_required_scopes=["mcp:read"],
        )
        with TestClient(build_app(config), base_url=BASE_URL, raise_server_exceptions=False) as client:
            yield client, endpoint


def call(world: tuple[TestClient, Endpoint], response: httpx.Response) -> httpx.Response:
    client, endpoint = world
    endpoint.response = response
    token = f"opaque-{next(_counter)}"  # a fresh token: no cached answer
    return client.post("/mcp", json=GET_ME, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"})


def assert_answered(response: httpx.Response) -> None:
    assert response.status_code in (200, 401, 403, 503), response.text
    if response.status_code == 503:
        assert response.headers["retry-after"].isdigit()
    elif response.status_code in (401, 403):
        assert response.headers["www-authenticate"].startswith("Bearer ")
    else:
        assert response.json()["result"]["structuredContent"]["user_id"]


def as_json(value: Any) -> httpx.Response:
    return httpx.Response(200, content=json.dumps(value).encode(), headers={"content-type": "application/json"})


@BOUNDED
@given(answer=json_values)
@example(answer={"active": True})
@example(answer={"active": 1})
@example(answer=None)
def test_any_json_answer_gets_a_4xx_a_503_or_a_structured_answer(world, answer: Any) -> None:
    assert_answered(call(world, as_json(answer)))


@BOUNDED
@given(
    changes=st.dictionaries(
        st.sampled_from([*CLAIM_NAMES, "token_type", "username", "active"]), json_values, max_size=4
    )
)
@example(changes={"scope": "mcp:read"})
@example(changes={"token_type": "refresh_token", "scope": "mcp:read"})
@example(changes={"iss": None, "scope": "mcp:read"})
@example(changes={"exp": 10**40})
@example(changes={"aud": [[1]]})
@example(changes={"sub": "\ud800"})
def test_any_claims_in_an_active_answer_get_a_4xx_or_a_structured_answer(world, changes: dict[str, Any]) -> None:
    assert_answered(call(world, as_json({"active": True, **make_claims(), **changes})))


@BOUNDED
@given(status=st.integers(min_value=100, max_value=599), body=st.binary(max_size=64))
@example(status=200, body=b'{"active": true')
@example(status=204, body=b"")
def test_any_status_and_body_get_a_4xx_or_a_503(world, status: int, body: bytes) -> None:
    assert_answered(call(world, httpx.Response(status, content=body)))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=json_values | st.dictionaries(st.sampled_from([*CLAIM_NAMES, "active"]), json_values, max_size=4))
@example(answer={"active": True, "exp": "soon"})
@example(answer={"active": True, "aud": [[1]], "sub": "\ud800"})
async def test_the_doctor_explains_any_answer_without_failing(answer: Any) -> None:
    lines: list[str] = []
    with respx.mock(assert_all_called=False) as router:
        FakeIdP(router)
        router.post(INTROSPECTION_URL).mock(return_value=as_json(answer))
        config = make_settings(
            oauth_introspection_endpoint=INTROSPECTION_URL,
            oauth_introspection_client_id="rs",
            oauth_introspection_client_secret="secret",
        )
        code = await Doctor(config, lines.append).run("opaque-token-for-the-doctor")
    assert code in (0, 1)
    assert any("VERDICT" in line for line in lines) or any("endpoint answers" in line for line in lines)
    assert not any("opaque-token-for-the-doctor" in line for line in lines)

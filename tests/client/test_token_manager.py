"""TokenManager against a token endpoint mocked with respx: cache, margin, single-flight, retries, IdP dialects."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import httpx
import pytest
import respx

from client import (
    DiscoveryError,
    InvalidClientError,
    InvalidScopeError,
    RetryPolicy,
    SyncTokenManager,
    TokenConfigError,
    TokenEndpointError,
    TokenError,
    TokenManager,
    TokenRejectedError,
    TokenResponseError,
)
from client.http_retry import retry_after_seconds
from client.token_manager import refresh_margin
from tests.support import Clock

TOKEN_URL = "https://idp.example.com/oauth/token"
CLIENT_ID = "client-abc"
SECRET = "s3cr3t-VALUE-9f8e7d"
TENANT_ISSUER = "https://idp.example.com/tenant/"
OIDC_URL = "https://idp.example.com/tenant/.well-known/openid-configuration"
RFC8414_URL = "https://idp.example.com/.well-known/oauth-authorization-server/tenant"
DISCOVERED_TOKEN_URL = "https://idp.example.com/tenant/oauth2/token"


class RecordedSleeps:
    """Stands in for asyncio.sleep: records each wait and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def token_response(token: str = "tok-1", expires_in: Any = 300, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"access_token": token, "token_type": "Bearer", **extra}
    if expires_in is not None:
        body["expires_in"] = expires_in
    return httpx.Response(200, json=body)


def oauth_error(status: int, error: str, description: str = "") -> httpx.Response:
    body = {"error": error, **({"error_description": description} if description else {})}
    return httpx.Response(status, json=body)


def form_of(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.content.decode(), keep_blank_values=True)


def unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'at+jwt'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.fixture
def idp() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sleeps() -> RecordedSleeps:
    return RecordedSleeps()


@pytest.fixture
def make_manager(clock: Clock, sleeps: RecordedSleeps) -> Any:
    def make(**overrides: Any) -> TokenManager:
        options: dict[str, Any] = {
            "token_url": TOKEN_URL,
            "clock": clock,
            "sleep": sleeps,
            "retry": RetryPolicy(jitter=lambda: 0.5),
        }
        options.update(overrides)
        return TokenManager(CLIENT_ID, SECRET, **options)

    return make


# --- caching and the refresh margin -------------------------------------------------------------


async def test_a_five_minute_token_is_fetched_once_across_many_calls(idp, make_manager, clock) -> None:
    route = idp.post(TOKEN_URL).mock(side_effect=[token_response("tok-1", 300), token_response("tok-2", 300)])
    manager = make_manager()

    tokens = []
    for _ in range(100):
        tokens.append(await manager.get_token())
        clock.advance(2.6)  # 260 s in all: still outside the 30 s margin of a 300 s token

    assert set(tokens) == {"tok-1"}
    assert route.call_count == 1


async def test_a_token_is_replaced_once_it_is_within_the_margin(idp, make_manager, clock) -> None:
    route = idp.post(TOKEN_URL).mock(side_effect=[token_response("tok-1", 300), token_response("tok-2", 300)])
    manager = make_manager()

    assert await manager.get_token() == "tok-1"
    clock.advance(269)
    assert await manager.get_token() == "tok-1"
    clock.advance(2)  # 271 s: inside the last 30 s (10% of 300 s)
    assert await manager.get_token() == "tok-2"
    assert await manager.get_token() == "tok-2"
    assert route.call_count == 2


async def test_a_long_lived_token_is_replaced_60_seconds_before_expiry(idp, make_manager, clock) -> None:
    idp.post(TOKEN_URL).mock(side_effect=[token_response("tok-1", 3600), token_response("tok-2", 3600)])
    manager = make_manager()

    assert await manager.get_token() == "tok-1"
    clock.advance(3539)
    assert await manager.get_token() == "tok-1"
    clock.advance(2)
    assert await manager.get_token() == "tok-2"


def test_the_margin_is_60_seconds_or_a_tenth_of_a_short_lifetime() -> None:
    assert refresh_margin(3600) == 60
    assert refresh_margin(300) == 30
    assert refresh_margin(60) == 6


async def test_expires_in_given_as_a_string_is_honoured(idp, make_manager, clock) -> None:
    route = idp.post(TOKEN_URL).mock(side_effect=[token_response("tok-1", "3600"), token_response("tok-2")])
    manager = make_manager()

    await manager.get_token()
    clock.advance(3000)
    assert await manager.get_token() == "tok-1"
    assert route.call_count == 1


async def test_an_opaque_token_without_expires_in_is_kept_for_the_default_five_minutes(idp, make_manager, clock):
    route = idp.post(TOKEN_URL).mock(side_effect=[token_response("opaque-1", None), token_response("opaque-2", None)])
    manager = make_manager()

    assert await manager.get_token() == "opaque-1"
    clock.advance(260)
    assert await manager.get_token() == "opaque-1"
    clock.advance(20)
    assert await manager.get_token() == "opaque-2"
    assert route.call_count == 2


async def test_a_jwt_without_expires_in_is_kept_until_near_its_exp(idp, make_manager, clock) -> None:
    first = unsigned_jwt({"sub": CLIENT_ID, "exp": int(time.time()) + 1000})
    idp.post(TOKEN_URL).mock(side_effect=[token_response(first, None), token_response("tok-2")])
    manager = make_manager()

    assert await manager.get_token() == first
    clock.advance(900)  # far beyond the 300 s default: the token's own exp decides
    assert await manager.get_token() == first
    clock.advance(70)  # within 60 s of exp
    assert await manager.get_token() == "tok-2"


async def test_invalidate_drops_only_the_token_it_names(idp, make_manager) -> None:
    route = idp.post(TOKEN_URL).mock(side_effect=[token_response("tok-1"), token_response("tok-2")])
    manager = make_manager()
    assert await manager.get_token() == "tok-1"

    await manager.invalidate("some-older-token")
    assert await manager.get_token() == "tok-1"
    await manager.invalidate("tok-1")
    assert await manager.get_token() == "tok-2"
    assert route.call_count == 2


async def test_force_refresh_fetches_a_new_token(idp, make_manager) -> None:
    idp.post(TOKEN_URL).mock(side_effect=[token_response("tok-1"), token_response("tok-2")])
    manager = make_manager()

    assert await manager.get_token() == "tok-1"
    assert await manager.get_token(force_refresh=True) == "tok-2"
    assert await manager.get_token() == "tok-2"


# --- single-flight --------------------------------------------------------------------------------


async def test_one_hundred_concurrent_callers_share_one_request(idp, make_manager) -> None:
    async def slow_token(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)  # every caller arrives while the request is in flight
        return token_response("shared")

    route = idp.post(TOKEN_URL).mock(side_effect=slow_token)
    manager = make_manager()

    tokens = await asyncio.gather(*(manager.get_token() for _ in range(100)))

    assert tokens == ["shared"] * 100
    assert route.call_count == 1


async def test_one_hundred_concurrent_callers_share_one_failure(idp, make_manager) -> None:
    async def refused(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return oauth_error(401, "invalid_client")

    route = idp.post(TOKEN_URL).mock(side_effect=refused)
    manager = make_manager()

    results = await asyncio.gather(*(manager.get_token() for _ in range(100)), return_exceptions=True)

    assert all(isinstance(result, InvalidClientError) for result in results)
    assert route.call_count == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_request(idp, make_manager) -> None:
    release = asyncio.Event()

    async def held(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return token_response("shared")

    route = idp.post(TOKEN_URL).mock(side_effect=held)
    manager = make_manager()
    impatient = asyncio.create_task(manager.get_token())
    patient = asyncio.create_task(manager.get_token())
    await asyncio.sleep(0.01)

    impatient.cancel()
    release.set()

    assert await patient == "shared"
    assert impatient.cancelled()
    assert route.call_count == 1


# --- retries --------------------------------------------------------------------------------------


async def test_503_twice_then_success_is_retried_with_growing_backoff(idp, make_manager, sleeps) -> None:
    route = idp.post(TOKEN_URL).mock(
        side_effect=[httpx.Response(503), httpx.Response(503), token_response("after-outage")]
    )
    manager = make_manager()

    assert await manager.get_token() == "after-outage"
    assert route.call_count == 3
    # base 0.5 s, doubled per retry, "equal jitter" at its midpoint: 0.375 s then 0.75 s
    assert sleeps.delays == [0.375, 0.75]


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("connection refused"), httpx.ReadTimeout("read timed out"), httpx.RemoteProtocolError("eof")],
    ids=["connect-error", "read-timeout", "protocol-error"],
)
async def test_network_failures_are_retried(idp, make_manager, sleeps, failure) -> None:
    route = idp.post(TOKEN_URL).mock(side_effect=[failure, token_response("back")])
    manager = make_manager()

    assert await manager.get_token() == "back"
    assert route.call_count == 2
    assert len(sleeps.delays) == 1


async def test_a_hanging_token_endpoint_is_bounded_by_the_timeout(idp, make_manager, sleeps) -> None:
    started: list[float] = []

    async def hang(request: httpx.Request) -> httpx.Response:
        started.append(time.monotonic())
        await asyncio.sleep(30)
        return token_response("too-late")

    idp.post(TOKEN_URL).mock(side_effect=hang)
    manager = make_manager(timeout=0.05, retry=RetryPolicy(max_attempts=2, jitter=lambda: 0.5))

    began = time.monotonic()
    with pytest.raises(TokenEndpointError, match=r"did not answer within 0\.05 s; gave up after 2 attempts"):
        await manager.get_token()
    assert len(started) == 2
    assert time.monotonic() - began < 5


async def test_a_lasting_outage_gives_up_after_max_attempts(idp, make_manager, sleeps) -> None:
    route = idp.post(TOKEN_URL).mock(return_value=httpx.Response(503))
    manager = make_manager(retry=RetryPolicy(max_attempts=4, base_delay=1, max_delay=3, jitter=lambda: 1.0))

    with pytest.raises(TokenEndpointError, match="answered HTTP 503; gave up after 4 attempts") as caught:
        await manager.get_token()
    assert caught.value.status == 503
    assert route.call_count == 4
    assert sleeps.delays == [1, 2, 3]  # doubling, capped at max_delay


def test_backoff_stays_within_its_bounds_whatever_the_jitter() -> None:
    for jitter in (0.0, 0.3, 0.999):
        policy = RetryPolicy(base_delay=0.5, max_delay=8, jitter=lambda value=jitter: value)
        delays = [policy.backoff(retry) for retry in range(1, 30)]
        assert all(0.25 <= delay <= 8 for delay in delays)
        assert delays == sorted(delays)


async def test_429_waits_as_long_as_retry_after_says(idp, make_manager, sleeps) -> None:
    route = idp.post(TOKEN_URL).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "7"}), token_response("after-throttle")]
    )
    manager = make_manager()

    assert await manager.get_token() == "after-throttle"
    assert route.call_count == 2
    assert sleeps.delays == [7.0]


async def test_429_asking_for_longer_than_the_bound_fails_at_once(idp, make_manager, sleeps) -> None:
    route = idp.post(TOKEN_URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "120"}))
    manager = make_manager()

    with pytest.raises(TokenEndpointError, match="retry after 120 s, longer than the 30 s") as caught:
        await manager.get_token()
    assert caught.value.status == 429
    assert route.call_count == 1
    assert sleeps.delays == []


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("12", now) == 12
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=5), usegmt=True), now) == 5
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=5), usegmt=True), now) == 0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (401, "invalid_client", InvalidClientError),
        (400, "invalid_client", InvalidClientError),
        (400, "invalid_grant", InvalidClientError),
        (400, "unauthorized_client", InvalidClientError),
        (400, "invalid_scope", InvalidScopeError),
        (400, "invalid_target", InvalidScopeError),
        (400, "invalid_request", TokenRejectedError),
    ],
)
async def test_a_refused_request_is_not_retried(idp, make_manager, sleeps, status, error, expected) -> None:
    route = idp.post(TOKEN_URL).mock(return_value=oauth_error(status, error, "nope"))
    manager = make_manager()

    with pytest.raises(expected) as caught:
        await manager.get_token()
    assert type(caught.value) is expected
    assert caught.value.error == error
    assert caught.value.status == status
    assert f"{error} (nope)" in str(caught.value)
    assert route.call_count == 1
    assert sleeps.delays == []


async def test_a_bare_401_is_a_rejected_client(idp, make_manager) -> None:
    route = idp.post(TOKEN_URL).mock(return_value=httpx.Response(401, text="Unauthorized"))
    manager = make_manager()

    with pytest.raises(InvalidClientError, match=f"rejected client '{CLIENT_ID}': HTTP 401"):
        await manager.get_token()
    assert route.call_count == 1


async def test_a_wrong_token_url_is_reported_not_retried(idp, make_manager) -> None:
    route = idp.post(TOKEN_URL).mock(return_value=httpx.Response(404, text="Not Found"))
    manager = make_manager()

    with pytest.raises(TokenEndpointError, match="answered HTTP 404") as caught:
        await manager.get_token()
    assert caught.value.status == 404
    assert route.call_count == 1


async def test_a_redirect_is_not_followed_with_the_secret(idp, make_manager) -> None:
    idp.post(TOKEN_URL).mock(return_value=httpx.Response(307, headers={"Location": "https://elsewhere.example/t"}))
    elsewhere = idp.post("https://elsewhere.example/t").mock(return_value=token_response())
    manager = make_manager()

    with pytest.raises(TokenEndpointError, match="answered HTTP 307"):
        await manager.get_token()
    assert elsewhere.call_count == 0


# --- what the request looks like for each IdP -------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected_form"),
    [
        pytest.param(
            {"audience": "https://api.example.com"},
            {"grant_type": ["client_credentials"], "audience": ["https://api.example.com"]},
            id="auth0-audience",
        ),
        pytest.param(
            {"scope": ["read:notes", "write:notes"]},
            {"grant_type": ["client_credentials"], "scope": ["read:notes write:notes"]},
            id="okta-scope-list",
        ),
        pytest.param(
            {"scope": "api://11111111-2222-3333-4444-555555555555/.default"},
            {"grant_type": ["client_credentials"], "scope": ["api://11111111-2222-3333-4444-555555555555/.default"]},
            id="entra-default-scope-no-resource",
        ),
        pytest.param(
            {"scope": "https://mcp.example.com/notes.read https://mcp.example.com/notes.write"},
            {
                "grant_type": ["client_credentials"],
                "scope": ["https://mcp.example.com/notes.read https://mcp.example.com/notes.write"],
            },
            id="cognito-custom-scopes",
        ),
        pytest.param(
            {"resource": "https://mcp.example.com/mcp"},
            {"grant_type": ["client_credentials"], "resource": ["https://mcp.example.com/mcp"]},
            id="rfc8707-resource",
        ),
        pytest.param(
            {"resource": ["https://a.example.com/mcp", "https://b.example.com/mcp"]},
            {
                "grant_type": ["client_credentials"],
                "resource": ["https://a.example.com/mcp", "https://b.example.com/mcp"],
            },
            id="rfc8707-two-resources",
        ),
        pytest.param(
            {"audience": "https://api.example.com", "extra_params": {"organization": "org_123"}},
            {
                "grant_type": ["client_credentials"],
                "audience": ["https://api.example.com"],
                "organization": ["org_123"],
            },
            id="extra-params",
        ),
    ],
)
async def test_each_idp_gets_the_parameters_it_needs_and_no_others(idp, make_manager, options, expected_form):
    route = idp.post(TOKEN_URL).mock(return_value=token_response())
    manager = make_manager(**options)

    await manager.get_token()

    request = route.calls.last.request
    assert form_of(request) == expected_form
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"


async def test_client_secret_basic_form_urlencodes_id_and_secret_before_base64(idp, make_manager) -> None:
    route = idp.post(TOKEN_URL).mock(return_value=token_response())
    manager = TokenManager("my client:1", "p@ss:w/rd+ü&=%", token_url=TOKEN_URL)

    await manager.get_token()

    request = route.calls.last.request
    scheme, _, encoded = request.headers["Authorization"].partition(" ")
    decoded = base64.b64decode(encoded).decode("ascii")
    assert scheme == "Basic"
    assert decoded == "my+client%3A1:p%40ss%3Aw%2Frd%2B%C3%BC%26%3D%25"
    client_id, _, secret = decoded.partition(":")
    assert (unquote_plus(client_id), unquote_plus(secret)) == ("my client:1", "p@ss:w/rd+ü&=%")
    assert "client_secret" not in form_of(request)
    assert "client_id" not in form_of(request)


async def test_client_secret_post_puts_the_credentials_in_the_form(idp, make_manager) -> None:
    route = idp.post(TOKEN_URL).mock(return_value=token_response())
    manager = make_manager(auth_method="client_secret_post", scope="read:notes")

    await manager.get_token()

    request = route.calls.last.request
    assert "Authorization" not in request.headers
    assert form_of(request) == {
        "grant_type": ["client_credentials"],
        "scope": ["read:notes"],
        "client_id": [CLIENT_ID],
        "client_secret": [SECRET],
    }


# --- discovery ------------------------------------------------------------------------------------


def metadata(issuer: str = TENANT_ISSUER, token_endpoint: str = DISCOVERED_TOKEN_URL) -> httpx.Response:
    return httpx.Response(200, json={"issuer": issuer, "token_endpoint": token_endpoint})


async def test_the_token_endpoint_is_discovered_from_openid_configuration(idp, make_manager, clock) -> None:
    discovery = idp.get(OIDC_URL).mock(return_value=metadata())
    token = idp.post(DISCOVERED_TOKEN_URL).mock(side_effect=[token_response("tok-1"), token_response("tok-2")])
    manager = make_manager(token_url=None, issuer=TENANT_ISSUER)
    assert manager.token_url is None

    assert await manager.get_token() == "tok-1"
    clock.advance(3600)
    assert await manager.get_token() == "tok-2"

    assert manager.token_url == DISCOVERED_TOKEN_URL
    assert discovery.call_count == 1  # found once, remembered
    assert token.call_count == 2


async def test_discovery_falls_back_to_rfc8414_with_the_path_after_the_well_known_segment(idp, make_manager):
    oidc = idp.get(OIDC_URL).mock(return_value=httpx.Response(404))
    rfc8414 = idp.get(RFC8414_URL).mock(return_value=metadata())
    idp.post(DISCOVERED_TOKEN_URL).mock(return_value=token_response("via-rfc8414"))
    manager = make_manager(token_url=None, issuer=TENANT_ISSUER)

    assert await manager.get_token() == "via-rfc8414"
    assert oidc.call_count == 1
    assert rfc8414.call_count == 1


async def test_discovery_refuses_a_document_for_another_issuer(idp, make_manager) -> None:
    idp.get(OIDC_URL).mock(return_value=metadata(issuer=TENANT_ISSUER.rstrip("/")))
    idp.get(RFC8414_URL).mock(return_value=httpx.Response(404))
    token = idp.post(DISCOVERED_TOKEN_URL).mock(return_value=token_response())
    manager = make_manager(token_url=None, issuer=TENANT_ISSUER)

    with pytest.raises(DiscoveryError, match=re.escape("names issuer 'https://idp.example.com/tenant', not")) as caught:
        await manager.get_token()
    assert "must match exactly" in str(caught.value)
    assert token.call_count == 0


async def test_discovery_refuses_a_plain_http_token_endpoint_on_a_remote_host(idp, make_manager) -> None:
    idp.get(OIDC_URL).mock(return_value=metadata(token_endpoint="http://idp.example.com/token"))
    manager = make_manager(token_url=None, issuer=TENANT_ISSUER)

    with pytest.raises(DiscoveryError, match="no usable token_endpoint: expected https://"):
        await manager.get_token()


async def test_an_unreachable_issuer_is_a_discovery_error(idp, make_manager) -> None:
    idp.get(OIDC_URL).mock(side_effect=httpx.ConnectError("refused"))
    manager = make_manager(token_url=None, issuer=TENANT_ISSUER, retry=RetryPolicy(max_attempts=2))

    with pytest.raises(DiscoveryError, match="unreachable"):
        await manager.get_token()


# --- unusable answers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(200, text="<html>login</html>"), "not a JSON object"),
        (httpx.Response(200, json={"token_type": "Bearer", "expires_in": 300}), "without an access_token"),
        (httpx.Response(200, json={"access_token": "", "token_type": "Bearer"}), "without an access_token"),
        (httpx.Response(200, json={"access_token": "tok with space"}), "not allowed in an HTTP header"),
        (httpx.Response(200, json={"access_token": "tok-1", "token_type": "mac"}), "only Bearer tokens"),
        (httpx.Response(200, json={"access_token": "tok-1", "expires_in": "soon"}), "expires_in must be"),
        (httpx.Response(200, json={"access_token": "tok-1", "expires_in": -5}), "expires_in must be"),
    ],
    ids=["html", "no-token", "empty-token", "bad-characters", "mac-token", "text-expiry", "negative-expiry"],
)
async def test_an_unusable_answer_is_a_token_response_error(idp, make_manager, response, message) -> None:
    idp.post(TOKEN_URL).mock(return_value=response)
    manager = make_manager()

    with pytest.raises(TokenResponseError, match=message) as caught:
        await manager.get_token()
    assert "tok-1" not in str(caught.value)
    assert "tok with space" not in str(caught.value)


# --- secrets stay secret ------------------------------------------------------------------------------


async def test_no_error_message_or_log_line_contains_the_secret_or_the_token(idp, make_manager, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []

    idp.post(TOKEN_URL).mock(return_value=oauth_error(401, "invalid_client", f"bad secret {SECRET} for client"))
    with pytest.raises(TokenError) as caught:
        await make_manager().get_token()
    messages.append(str(caught.value))

    idp.post(TOKEN_URL).mock(side_effect=httpx.ConnectError(f"proxy said {SECRET}"))
    with pytest.raises(TokenError) as caught:
        await make_manager(retry=RetryPolicy(max_attempts=2)).get_token()
    messages.append(str(caught.value))

    idp.post(TOKEN_URL).mock(return_value=token_response("the-issued-token", token_type="N_A"))
    with pytest.raises(TokenError) as caught:
        await make_manager().get_token()
    messages.append(str(caught.value))

    idp.post(TOKEN_URL).mock(side_effect=[httpx.Response(503), token_response("the-issued-token")])
    assert await make_manager().get_token() == "the-issued-token"

    assert "***" in messages[0]
    assert "***" in messages[1]
    for text in [*messages, caplog.text]:
        assert SECRET not in text
        assert "the-issued-token" not in text
    assert "retrying" in caplog.text  # the logs were captured, and say something


async def test_repr_and_str_never_show_the_secret_or_the_token(idp, make_manager) -> None:
    idp.post(TOKEN_URL).mock(return_value=token_response("the-issued-token"))
    manager = make_manager()
    await manager.get_token()
    sync = SyncTokenManager(make_manager())

    shown = [repr(manager), str(manager), repr(vars(manager)), repr(sync), str(sync)]

    assert CLIENT_ID in repr(manager)
    for text in shown:
        assert SECRET not in text
        assert "the-issued-token" not in text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"token_url": None}, "expected token_url, or issuer"),
        ({"token_url": "http://idp.example.com/token"}, "plain http is allowed only on loopback"),
        ({"token_url": "https://user:pw@idp.example.com/token"}, "no credentials inside the URL"),
        ({"token_url": None, "issuer": "https://idp.example.com/?tenant=1"}, "issuer: expected no query"),
        ({"auth_method": "private_key_jwt"}, "auth_method"),
        ({"scope": ["read notes"]}, "scope: expected scope names without spaces"),
        ({"resource": "not a uri"}, "resource: expected an absolute URI"),
        ({"extra_params": {"client_secret": "x"}}, "'client_secret' is set by the TokenManager"),
        ({"extra_params": {"grant_type": "password"}}, "'grant_type' is set by the TokenManager"),
    ],
)
def test_bad_configuration_fails_in_the_constructor(make_manager, options, message) -> None:
    with pytest.raises(TokenConfigError, match=message) as caught:
        make_manager(**options)
    assert SECRET not in str(caught.value)


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(TokenConfigError, match="client_secret: missing"):
        TokenManager(CLIENT_ID, "", token_url=TOKEN_URL)


def test_plain_http_is_accepted_on_loopback() -> None:
    manager = TokenManager(CLIENT_ID, SECRET, token_url="http://127.0.0.1:8000/dev-issuer/token")
    assert manager.token_url == "http://127.0.0.1:8000/dev-issuer/token"


# --- the sync face ----------------------------------------------------------------------------------


def test_the_sync_face_works_from_a_plain_function(idp) -> None:
    route = idp.post(TOKEN_URL).mock(side_effect=[token_response("sync-1"), token_response("sync-2")])

    with SyncTokenManager(TokenManager(CLIENT_ID, SECRET, token_url=TOKEN_URL)) as tokens:
        assert tokens.get_token() == "sync-1"
        assert tokens.get_token() == "sync-1"
        tokens.invalidate("sync-1")
        assert tokens.get_token() == "sync-2"
    assert route.call_count == 2
    with pytest.raises(RuntimeError, match="closed"):
        tokens.get_token()


def test_the_sync_face_raises_the_token_errors(idp) -> None:
    idp.post(TOKEN_URL).mock(return_value=oauth_error(401, "invalid_client"))

    with (
        SyncTokenManager(TokenManager(CLIENT_ID, SECRET, token_url=TOKEN_URL)) as tokens,
        pytest.raises(InvalidClientError),
    ):
        tokens.get_token()


async def test_the_sync_face_works_even_inside_a_running_event_loop(idp) -> None:
    idp.post(TOKEN_URL).mock(return_value=token_response("from-a-thread"))

    with SyncTokenManager(TokenManager(CLIENT_ID, SECRET, token_url=TOKEN_URL)) as tokens:
        assert tokens.get_token() == "from-a-thread"

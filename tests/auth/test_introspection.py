"""The Introspector on its own: one call per token at a time, what its cache holds and for how long."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from auth.errors import IntrospectionUnavailable, InvalidToken, Reason
from auth.introspection import Introspector, basic_credentials
from auth.token_rules import TokenRules
from tests.support import ISSUER, SERVER_URL, Clock, make_claims

INTROSPECTION_URL = "https://idp.example.com/oauth2/introspect"
NOW = 1_800_000_000.0


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def router() -> AsyncIterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:
        yield mock


@pytest.fixture
async def introspector(clock: Clock) -> AsyncIterator[Introspector]:
    rules = TokenRules.create(issuers=(ISSUER,), audiences=(SERVER_URL,), clock=clock)
    found = Introspector(
        INTROSPECTION_URL,
        rules,
        issuer=ISSUER,
        client_id="rs",
        client_secret="secret",
        timeout=1,
        cache_seconds=60,
        refusal_cache_seconds=5,
        cache_entries=20,
        clock=clock,
    )
    yield found
    await found.aclose()


def active(**overrides: Any) -> dict[str, Any]:
    return {"active": True, **make_claims(**{"iat": int(NOW), "exp": int(NOW) + 600, **overrides})}


def token_of(request: httpx.Request) -> str:
    return parse_qs(request.content.decode())["token"][0]


async def test_concurrent_requests_with_one_token_make_one_call(router, introspector):
    release = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json=active())

    route = router.post(INTROSPECTION_URL).mock(side_effect=answer)
    waiting = [asyncio.create_task(introspector.verify("opaque-1")) for _ in range(20)]
    await asyncio.sleep(0.05)
    release.set()
    principals = await asyncio.gather(*waiting)
    assert route.call_count == 1
    assert {principal.subject for principal in principals} == {"user-123"}


async def test_a_failed_call_is_shared_by_its_waiters_but_never_poisons_the_next(router, introspector):
    release = asyncio.Event()
    answers = [httpx.Response(502), httpx.Response(200, json=active())]

    async def answer(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return answers.pop(0)

    route = router.post(INTROSPECTION_URL).mock(side_effect=answer)
    waiting = [asyncio.create_task(introspector.verify("opaque-1")) for _ in range(5)]
    await asyncio.sleep(0.05)
    release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(result, IntrospectionUnavailable) for result in results)
    assert (await introspector.verify("opaque-1")).subject == "user-123"
    assert route.call_count == 2


async def test_a_waiter_that_goes_away_does_not_cancel_the_call_for_the_others(router, introspector):
    release = asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json=active())

    route = router.post(INTROSPECTION_URL).mock(side_effect=answer)
    first = asyncio.create_task(introspector.verify("opaque-1"))
    second = asyncio.create_task(introspector.verify("opaque-1"))
    await asyncio.sleep(0.05)
    first.cancel()
    release.set()
    assert (await second).subject == "user-123"
    assert route.call_count == 1


async def test_an_active_answer_is_held_until_exp_or_the_cache_time(router, introspector, clock):
    answers = {"short": active(exp=int(NOW) + 20), "long": active()}
    route = router.post(INTROSPECTION_URL).mock(
        side_effect=lambda request: httpx.Response(200, json=answers[token_of(request)])
    )
    await introspector.verify("short")
    await introspector.verify("long")
    clock.advance(19)
    await introspector.verify("short")
    await introspector.verify("long")
    assert route.call_count == 2
    clock.advance(2)  # past the short token's exp: asked again (and still accepted within the 30 s leeway)
    await introspector.verify("short")
    await introspector.verify("long")
    assert route.call_count == 3
    clock.advance(30)  # past exp and leeway: refused by the rules
    with pytest.raises(InvalidToken) as refused:
        await introspector.verify("short")
    assert refused.value.reason is Reason.EXPIRED
    await introspector.verify("long")
    assert route.call_count == 4
    clock.advance(10)  # 61 s after the first answer: the cache time is over
    await introspector.verify("long")
    assert route.call_count == 5


async def test_an_inactive_answer_is_held_for_the_refusal_time_only(router, introspector, clock):
    route = router.post(INTROSPECTION_URL).mock(return_value=httpx.Response(200, json={"active": False}))
    for _ in range(3):
        with pytest.raises(InvalidToken) as refused:
            await introspector.verify("revoked")
        assert refused.value.reason is Reason.INACTIVE
    assert route.call_count == 1
    clock.advance(6)
    with pytest.raises(InvalidToken):
        await introspector.verify("revoked")
    assert route.call_count == 2


async def test_the_cache_is_bounded_and_keyed_by_the_tokens_hash(router, introspector):
    router.post(INTROSPECTION_URL).mock(return_value=httpx.Response(200, json=active()))
    tokens = [secrets.token_urlsafe(16) for _ in range(50)]
    for token in tokens:
        await introspector.verify(token)
    assert len(introspector.cache) == 20
    held = introspector.cache._entries  # what the cache holds, not how it is used
    keys = {key for entries in held.values() for key in entries}
    assert hashlib.sha256(tokens[-1].encode()).digest() in keys
    assert not any(isinstance(key, str) for key in keys)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(500),
        httpx.Response(401, json={"error": "invalid_client"}),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, content=b"{" * 100_000),
    ],
)
async def test_no_usable_answer_is_unavailable(router, introspector, response):
    router.post(INTROSPECTION_URL).mock(return_value=response)
    with pytest.raises(IntrospectionUnavailable):
        await introspector.verify("opaque-1")
    assert len(introspector.cache) == 0


def test_basic_credentials_are_form_encoded_before_base64():
    assert basic_credentials("a b:c", "p+w/d") == "Basic " + "YStiJTNBYzpwJTJCdyUyRmQ="

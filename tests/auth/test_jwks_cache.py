"""The JWKS cache: TTL, rotation, cooldown, single-flight, outages, unusable keys and bounded fetches."""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm
from jwt.utils import base64url_encode

from auth.errors import InvalidToken, KeySetUnavailable
from auth.http_fetch import MAX_DOCUMENT_BYTES, FetchError, fetch_json_object
from auth.jwk import MAX_KEYS, parse_jwk, parse_jwks
from auth.jwks_cache import JWKSCache
from tests.support import JWKS_URI, SERVER_URL, Clock, FakeIdP, Signer

TTL = 600.0
COOLDOWN = 10.0
MAX_STALE = 3600.0


# Building a TLS context costs ~50 ms per httpx client; the mocked IdP never uses it, so share one.
TLS = ssl.create_default_context()


@pytest.fixture(autouse=True)
def _shared_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpx, "AsyncClient", functools.partial(httpx.AsyncClient, verify=TLS))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_cache(clock: Clock) -> AsyncIterator[Callable[..., JWKSCache]]:
    caches: list[JWKSCache] = []

    def make(jwks_uri: Any = JWKS_URI, **options: Any) -> JWKSCache:
        options = {"ttl": TTL, "cooldown": COOLDOWN, "max_stale": MAX_STALE, "timeout": 2.0, "clock": clock, **options}
        cache = JWKSCache(jwks_uri, **options)
        caches.append(cache)
        return cache

    yield make
    for cache in caches:
        await cache.aclose()


@pytest.fixture
async def cache(idp: FakeIdP, make_cache: Callable[..., JWKSCache]) -> JWKSCache:
    """A cache that has fetched the IdP's set (holding `signer`) once, at the clock's current time."""
    keys = make_cache()
    await keys.get_key("rsa-1", "RS256")
    assert idp.jwks_fetches == 1
    return keys


async def eventually(predicate: Callable[[], bool], *, within: float = 2.0) -> None:
    """Let background tasks run until `predicate` holds; bounded in time."""
    deadline = time.perf_counter() + within
    while not predicate():
        if time.perf_counter() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.001)  # one more turn of the loop: the finished fetch's done-callbacks run


def verifies(key: Any, signer: Signer) -> bool:
    claims = jwt.decode(signer.token(), key.key, algorithms=[signer.alg], audience=SERVER_URL)
    return claims["sub"] == "user-123"


def hanging(seconds: float = 30.0) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    async def respond(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(seconds)
        return httpx.Response(200, json={"keys": []})

    return respond


def serve(idp: FakeIdP, **response: Any) -> None:
    idp.jwks_route.mock(side_effect=None, return_value=httpx.Response(**response))


def restore(idp: FakeIdP) -> None:
    idp.jwks_route.mock(side_effect=idp._jwks)


# --- TTL -----------------------------------------------------------------------------------------


async def test_within_ttl_no_refetch(idp, cache, clock, signer):
    clock.advance(TTL - 1)
    for _ in range(5):
        key = await cache.get_key("rsa-1", "RS256")
    assert verifies(key, signer)
    assert idp.jwks_fetches == 1
    assert cache.age == TTL - 1


async def test_after_ttl_stale_key_answered_while_single_background_refresh_runs(idp, cache, clock, rotated_signer):
    idp.publish(rotated_signer)  # the IdP has rotated: rsa-1 is gone upstream
    clock.advance(TTL)
    keys = await asyncio.gather(*(cache.get_key("rsa-1", "RS256") for _ in range(10)))
    assert all(key.kid == "rsa-1" for key in keys)  # answered from the stale set
    await eventually(lambda: cache.age == 0)
    assert idp.jwks_fetches == 2
    with pytest.raises(InvalidToken, match="unknown"):
        await cache.get_key("rsa-1", "RS256")
    assert (await cache.get_key("rsa-2", "RS256")).kid == "rsa-2"
    assert idp.jwks_fetches == 2


async def test_ttl_refresh_works_with_a_clock_starting_at_zero(idp, make_cache):
    clock = Clock(now=0.0)
    cache = make_cache(clock=clock)
    await cache.get_key("rsa-1", "RS256")
    clock.advance(TTL)
    await cache.get_key("rsa-1", "RS256")
    await eventually(lambda: cache.fetch_count == 2 and cache.age == 0)
    assert idp.jwks_fetches == 2


# --- rotation ------------------------------------------------------------------------------------


async def test_unknown_kid_refetches_and_is_found(idp, cache, clock, signer, rotated_signer):
    idp.publish(signer, rotated_signer)
    clock.advance(COOLDOWN)
    key = await cache.get_key("rsa-2", "RS256")
    assert verifies(key, rotated_signer)
    assert idp.jwks_fetches == 2
    assert verifies(await cache.get_key("rsa-1", "RS256"), signer)
    assert idp.jwks_fetches == 2


async def test_key_removed_upstream_disappears_after_refresh(idp, cache, clock, rotated_signer):
    idp.publish(rotated_signer)
    clock.advance(COOLDOWN)
    await cache.get_key("rsa-2", "RS256")  # the refetch for the new kid also drops the old one
    with pytest.raises(InvalidToken, match="unknown"):
        await cache.get_key("rsa-1", "RS256")
    assert idp.jwks_fetches == 2


# --- cooldown ------------------------------------------------------------------------------------


async def test_unknown_kids_fetch_at_most_once_per_cooldown(idp, cache, clock):
    with pytest.raises(InvalidToken):
        await cache.get_key("nope-0", "RS256")
    assert idp.jwks_fetches == 1  # the initial fetch started the cooldown

    clock.advance(COOLDOWN)
    for i in range(50):
        with pytest.raises(InvalidToken, match="unknown"):
            await cache.get_key(f"random-{i}", "RS256")
        clock.advance((COOLDOWN - 0.5) / 50)
    assert idp.jwks_fetches == 2

    clock.advance(0.5)
    with pytest.raises(InvalidToken):
        await cache.get_key("random-again", "RS256")
    assert idp.jwks_fetches == 3
    assert cache.fetch_count == 3
    assert cache.failure_count == 0


async def test_default_cooldown_is_ten_seconds(idp, clock):
    cache = JWKSCache(JWKS_URI, clock=clock)
    try:
        await cache.get_key("rsa-1", "RS256")
        clock.advance(9.9)
        with pytest.raises(InvalidToken):
            await cache.get_key("unknown", "RS256")
        assert idp.jwks_fetches == 1
        clock.advance(0.1)
        with pytest.raises(InvalidToken):
            await cache.get_key("unknown", "RS256")
        assert idp.jwks_fetches == 2
    finally:
        await cache.aclose()


# --- single-flight -------------------------------------------------------------------------------


async def test_concurrent_unknown_kid_lookups_share_one_fetch(idp, cache, clock, signer, rotated_signer):
    idp.publish(signer, rotated_signer)
    clock.advance(COOLDOWN)
    keys = await asyncio.gather(*(cache.get_key("rsa-2", "RS256") for _ in range(100)))
    assert {key.kid for key in keys} == {"rsa-2"}
    assert idp.jwks_fetches == 2


async def test_concurrent_lookups_on_a_cold_cache_share_one_fetch(idp, make_cache):
    cache = make_cache()
    results = await asyncio.gather(
        *(cache.get_key("rsa-1" if i % 2 else f"unknown-{i}", "RS256") for i in range(100)),
        return_exceptions=True,
    )
    assert idp.jwks_fetches == 1
    assert sum(isinstance(r, InvalidToken) for r in results) == 50
    assert all(r.kid == "rsa-1" for r in results if not isinstance(r, Exception))


async def test_a_cancelled_waiter_does_not_cancel_the_shared_fetch(idp, cache, clock, signer, rotated_signer):
    idp.publish(signer, rotated_signer)

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return idp._jwks(request)

    idp.jwks_route.mock(side_effect=slow)
    clock.advance(COOLDOWN)
    first = asyncio.create_task(cache.get_key("rsa-2", "RS256"))
    second = asyncio.create_task(cache.get_key("rsa-2", "RS256"))
    await asyncio.sleep(0.01)
    first.cancel()
    assert (await second).kid == "rsa-2"
    assert first.cancelled()
    assert idp.jwks_fetches == 2
    assert cache.failure_count == 0


# --- outage --------------------------------------------------------------------------------------

OUTAGES = {
    "http-500": {"return_value": httpx.Response(500, text="oops")},
    "connection-error": {"side_effect": httpx.ConnectError("refused")},
    "timeout": {"side_effect": hanging()},
}


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES.keys())
async def test_outage_keeps_last_good_set_until_max_stale_then_recovers(
    idp, make_cache, clock, signer, rotated_signer, outage
):
    cache = make_cache(timeout=0.1)
    await cache.get_key("rsa-1", "RS256")
    idp.jwks_route.mock(**{"side_effect": None, **outage})

    clock.advance(TTL)  # stale: background refresh fails, the known key is still served
    assert verifies(await cache.get_key("rsa-1", "RS256"), signer)
    await eventually(lambda: cache.failure_count == 1)
    assert cache.ready

    clock.advance(COOLDOWN)  # unknown kid: the refetch fails, the set is kept
    with pytest.raises(InvalidToken, match="unknown"):
        await cache.get_key("rsa-2", "RS256")
    assert cache.failure_count == 2
    assert verifies(await cache.get_key("rsa-1", "RS256"), signer)

    clock.now = 1000.0 + TTL + MAX_STALE - 0.5  # last moment of grace
    assert cache.ready
    assert (await cache.get_key("rsa-1", "RS256")).kid == "rsa-1"
    await eventually(lambda: cache.failure_count == 3)

    clock.advance(COOLDOWN)  # past ttl + max_stale: nothing usable is held any more
    assert not cache.ready
    with pytest.raises(KeySetUnavailable) as raised:
        await cache.get_key("rsa-1", "RS256")
    assert raised.value.status == 503
    assert cache.failure_count == 4
    assert cache.fetch_count == 5  # respx records a call only once answered, so count on our side

    idp.publish(signer, rotated_signer)  # the IdP comes back
    restore(idp)
    clock.advance(COOLDOWN)
    assert verifies(await cache.get_key("rsa-2", "RS256"), rotated_signer)
    assert cache.ready
    assert cache.age == 0
    assert cache.failure_count == 4
    assert cache.fetch_count == 6


async def test_known_keys_are_not_blocked_by_a_hanging_fetch(idp, make_cache, clock, signer):
    cache = make_cache(timeout=0.3)
    await cache.get_key("rsa-1", "RS256")
    idp.jwks_route.mock(side_effect=hanging())
    clock.advance(COOLDOWN)
    started = time.perf_counter()
    unknown = asyncio.create_task(cache.get_key("rsa-2", "RS256"))
    await asyncio.sleep(0.01)
    assert not unknown.done()  # the unknown kid waits for the fetch in flight

    for _ in range(20):
        t0 = time.perf_counter()
        key = await cache.get_key("rsa-1", "RS256")
        assert time.perf_counter() - t0 < 0.1
    assert verifies(key, signer)

    clock.advance(TTL)  # even a stale known key is answered at once, joining no fetch
    t0 = time.perf_counter()
    assert (await cache.get_key("rsa-1", "RS256")).kid == "rsa-1"
    assert time.perf_counter() - t0 < 0.1
    assert not unknown.done()

    with pytest.raises(InvalidToken):
        await unknown
    elapsed = time.perf_counter() - started
    assert 0.25 < elapsed < 2.0
    assert cache.fetch_count == 2  # the stale lookup joined the hanging fetch instead of starting one
    assert cache.failure_count == 1


async def test_no_set_ever_fetched_is_unavailable_without_a_refetch_storm(idp, make_cache, clock, signer):
    serve(idp, status_code=500)
    cache = make_cache()
    assert not cache.ready
    for _ in range(20):
        with pytest.raises(KeySetUnavailable):
            await cache.get_key("rsa-1", "RS256")
        clock.advance((COOLDOWN - 0.5) / 20)
    assert idp.jwks_fetches == 1
    assert cache.failure_count == 1
    assert cache.age is None
    assert not cache.ready

    clock.advance(0.5)
    with pytest.raises(KeySetUnavailable):
        await cache.get_key("rsa-1", "RS256")
    assert idp.jwks_fetches == 2

    restore(idp)
    clock.advance(COOLDOWN)
    assert verifies(await cache.get_key("rsa-1", "RS256"), signer)
    assert cache.ready
    assert (cache.fetch_count, cache.failure_count) == (3, 2)


async def test_concurrent_lookups_during_a_cold_outage_share_one_fetch(idp, make_cache):
    idp.jwks_route.mock(side_effect=httpx.ConnectError("refused"))
    cache = make_cache()
    results = await asyncio.gather(*(cache.get_key("rsa-1", "RS256") for _ in range(100)), return_exceptions=True)
    assert all(isinstance(r, KeySetUnavailable) for r in results)
    assert idp.jwks_fetches == 1


# --- garbage JWKS --------------------------------------------------------------------------------


def _unusable_only(signer: Signer) -> dict[str, Any]:
    return {"keys": [{"kty": "oct", "kid": "hs", "k": "c2VjcmV0"}, signer.jwk(use="enc"), "not-a-key"]}


GARBAGE = {
    "not-json": lambda signer: {"content": b"<html>maintenance</html>"},
    "json-array": lambda signer: {"json": [signer.jwk()]},
    "no-keys": lambda signer: {"json": {"jwks": [signer.jwk()]}},
    "keys-not-a-list": lambda signer: {"json": {"keys": {"rsa-2": signer.jwk()}}},
    "keys-null": lambda signer: {"json": {"keys": None}},
    "empty-keys": lambda signer: {"json": {"keys": []}},
    "all-unusable": lambda signer: {"json": _unusable_only(signer)},
}


@pytest.mark.parametrize("body", GARBAGE.values(), ids=GARBAGE.keys())
async def test_garbage_jwks_is_a_failed_fetch_and_the_last_good_set_is_kept(
    idp, cache, clock, signer, rotated_signer, body
):
    serve(idp, status_code=200, **body(rotated_signer))
    clock.advance(COOLDOWN)
    with pytest.raises(InvalidToken, match="unknown"):
        await cache.get_key("rsa-2", "RS256")
    assert (cache.fetch_count, cache.failure_count) == (2, 1)
    assert verifies(await cache.get_key("rsa-1", "RS256"), signer)
    assert cache.ready


@pytest.mark.parametrize("body", GARBAGE.values(), ids=GARBAGE.keys())
async def test_garbage_jwks_on_a_cold_cache_is_unavailable(idp, make_cache, signer, body):
    serve(idp, status_code=200, **body(signer))
    cache = make_cache()
    with pytest.raises(KeySetUnavailable):
        await cache.get_key("rsa-1", "RS256")
    assert (cache.fetch_count, cache.failure_count) == (1, 1)
    assert not cache.ready


@pytest.fixture(scope="module")
def small_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


@pytest.fixture
def unusable_entries(signer, small_rsa_key) -> dict[str, Any]:
    """One JWKS entry for each reason a key must be skipped."""
    good = signer.jwk()
    private = RSAAlgorithm.to_jwk(signer.private_key, as_dict=True)
    private.pop("key_ops", None)  # so only the private members ("d", ...) disqualify it
    secp256k1 = Signer(ec.generate_private_key(ec.SECP256K1()), "k1", "ES256").jwk()
    x25519_raw = x25519.X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x25519_key = {"kty": "OKP", "crv": "X25519", "x": base64url_encode(x25519_raw).decode()}
    return {
        "oct-hs-secret": {"kty": "oct", "kid": "oct", "k": "c2VjcmV0LXNlY3JldA", "alg": "HS256"},
        "rsa-1024": Signer(small_rsa_key, "small", "RS256").jwk(),
        "private-member-d": {**private, "kid": "private", "use": "sig"},
        "use-enc": {**good, "kid": "enc", "use": "enc"},
        "alg-hs256": {**good, "kid": "hs256", "alg": "HS256"},
        "alg-rsa-oaep": {**good, "kid": "oaep", "alg": "RSA-OAEP"},
        "alg-none": {**good, "kid": "none", "alg": "none"},
        "key-ops-encrypt": {**good, "kid": "ops", "key_ops": ["encrypt"]},
        "key-ops-not-list": {**good, "kid": "ops2", "key_ops": "verify"},
        "unknown-kty": {"kty": "XYZ", "kid": "xyz", "x": "AAAA"},
        "missing-kty": {"kid": "nokty", "n": good["n"], "e": good["e"]},
        "ec-secp256k1": secp256k1,
        "okp-x25519": {**x25519_key, "kid": "x25519", "use": "sig"},
        "bad-base64-n": {**good, "kid": "badn", "n": "!!!not base64!!!"},
        "bad-base64-e": {**good, "kid": "bade", "e": "***"},
        "n-not-a-string": {**good, "kid": "nint", "n": 12345},
        "ec-missing-y": {"kty": "EC", "kid": "noy", "crv": "P-256", "x": "AAAA"},
        "kid-int": {**good, "kid": 7},
        "kid-list": {**good, "kid": ["rsa-1"]},
        "non-dict-str": "rsa-1",
        "non-dict-int": 42,
        "non-dict-null": None,
        "non-dict-list": [good],
    }


def test_each_unusable_entry_is_refused(unusable_entries):
    accepted = [name for name, entry in unusable_entries.items() if parse_jwk(entry) is not None]
    assert accepted == []


def test_usable_entries_parse(signer, ec_signer, ed_signer):
    for s in (signer, ec_signer, ed_signer):
        key = parse_jwk(s.jwk(alg=s.alg))
        assert key is not None
        assert (key.kid, key.alg) == (s.kid, s.alg)
    assert parse_jwk({**signer.jwk(), "key_ops": ["verify"]}) is not None
    no_use = signer.jwk()
    del no_use["use"]
    assert parse_jwk(no_use) is not None


async def test_unusable_entries_are_skipped_and_usable_ones_kept(
    idp, make_cache, signer, ec_signer, ed_signer, unusable_entries
):
    idp.keys = [*unusable_entries.values(), signer.jwk(), ec_signer.jwk(), ed_signer.jwk()]
    cache = make_cache()
    assert verifies(await cache.get_key("rsa-1", "RS256"), signer)
    assert verifies(await cache.get_key("ec-1", "ES256"), ec_signer)
    assert verifies(await cache.get_key("ed-1", "EdDSA"), ed_signer)
    for kid in ("oct", "small", "private", "enc", "hs256", "oaep", "ops", "xyz", "k1", "x25519", "badn", "noy"):
        with pytest.raises(InvalidToken, match="unknown"):
            await cache.get_key(kid, "RS256")
    assert (cache.fetch_count, cache.failure_count) == (1, 0)


def test_only_the_first_max_keys_entries_are_read(signer):
    entries = [{**signer.jwk(), "kid": f"k{i}"} for i in range(MAX_KEYS + 5)]
    keys = parse_jwks({"keys": entries})
    assert [key.kid for key in keys] == [f"k{i}" for i in range(MAX_KEYS)]


async def test_oversized_jwks_is_refused(idp, cache, clock, signer, rotated_signer):
    document = {"keys": [signer.jwk(), rotated_signer.jwk()], "padding": "x" * MAX_DOCUMENT_BYTES}
    serve(idp, status_code=200, json=document)
    clock.advance(COOLDOWN)
    with pytest.raises(InvalidToken, match="unknown"):
        await cache.get_key("rsa-2", "RS256")
    assert cache.failure_count == 1
    assert idp.jwks_route.calls.last.response.headers["content-length"].isdigit()


async def test_oversized_chunked_jwks_without_content_length_is_refused(idp, cache, clock, signer, rotated_signer):
    body = json.dumps({"keys": [signer.jwk(), rotated_signer.jwk()], "padding": "x" * MAX_DOCUMENT_BYTES}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    idp.jwks_route.mock(side_effect=lambda request: httpx.Response(200, content=chunks()))
    clock.advance(COOLDOWN)
    with pytest.raises(InvalidToken, match="unknown"):
        await cache.get_key("rsa-2", "RS256")
    assert cache.failure_count == 1
    assert "content-length" not in idp.jwks_route.calls.last.response.headers


async def test_redirect_is_not_followed(idp, cache, clock, rotated_signer):
    elsewhere = idp.router.get("https://evil.example.net/jwks.json").mock(
        return_value=httpx.Response(200, json={"keys": [rotated_signer.jwk()]})
    )
    serve(idp, status_code=302, headers={"Location": "https://evil.example.net/jwks.json"})
    clock.advance(COOLDOWN)
    with pytest.raises(InvalidToken, match="unknown"):
        await cache.get_key("rsa-2", "RS256")
    assert not elsewhere.called
    assert cache.failure_count == 1


# --- key / algorithm fit -------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "HS256", "none"])
async def test_rsa_key_is_not_returned_for_other_algorithms(idp, cache, alg):
    with pytest.raises(InvalidToken, match="algorithm does not match"):
        await cache.get_key("rsa-1", alg)
    assert idp.jwks_fetches == 1


async def test_ec_p256_key_is_not_returned_for_es384(idp, make_cache, ec_signer, clock):
    idp.publish(ec_signer)
    cache = make_cache()
    assert verifies(await cache.get_key("ec-1", "ES256"), ec_signer)
    clock.advance(COOLDOWN)  # even with the cooldown over, a known kid does not refetch
    for alg in ("ES384", "ES512", "RS256", "EdDSA"):
        with pytest.raises(InvalidToken, match="algorithm does not match"):
            await cache.get_key("ec-1", alg)
    assert idp.jwks_fetches == 1


async def test_jwk_alg_pins_the_algorithm(idp, make_cache, signer, rotated_signer):
    idp.keys = [signer.jwk(alg="RS256"), rotated_signer.jwk()]
    cache = make_cache()
    assert (await cache.get_key("rsa-1", "RS256")).kid == "rsa-1"
    with pytest.raises(InvalidToken, match="algorithm does not match"):
        await cache.get_key("rsa-1", "PS256")
    ps_signer = Signer(rotated_signer.private_key, "rsa-2", "PS256")
    assert verifies(await cache.get_key("rsa-2", "PS256"), ps_signer)  # no alg member: any RSA alg fits


async def test_ed25519_key_fits_only_eddsa(idp, make_cache, ed_signer):
    idp.publish(ed_signer)
    cache = make_cache()
    assert verifies(await cache.get_key("ed-1", "EdDSA"), ed_signer)
    with pytest.raises(InvalidToken, match="algorithm does not match"):
        await cache.get_key("ed-1", "RS256")


async def test_keys_sharing_a_kid_are_chosen_by_algorithm(idp, make_cache, signer, ec_signer):
    idp.keys = [{**signer.jwk(), "kid": "shared"}, {**ec_signer.jwk(), "kid": "shared"}]
    cache = make_cache()
    assert (await cache.get_key("shared", "RS256")).kty == "RSA"
    assert (await cache.get_key("shared", "ES256")).kty == "EC"


async def test_token_without_kid_uses_the_single_fitting_key(idp, make_cache, signer, ec_signer):
    idp.publish(signer, ec_signer)
    cache = make_cache()
    assert verifies(await cache.get_key(None, "ES256"), ec_signer)
    assert verifies(await cache.get_key(None, "RS256"), signer)
    with pytest.raises(InvalidToken):
        await cache.get_key(None, "ES384")


async def test_token_without_kid_and_ambiguous_keys_is_refused(idp, make_cache, signer, rotated_signer):
    idp.publish(signer, rotated_signer)
    cache = make_cache()
    with pytest.raises(InvalidToken):
        await cache.get_key(None, "RS256")
    assert idp.jwks_fetches == 1


async def test_jwk_without_kid_serves_kidless_tokens_only(idp, make_cache, signer):
    kidless = Signer(signer.private_key, None, "RS256")
    idp.publish(kidless)
    cache = make_cache()
    assert verifies(await cache.get_key(None, "RS256"), kidless)
    with pytest.raises(InvalidToken, match="unknown"):
        await cache.get_key("rsa-1", "RS256")


# --- fresh_key: get_key's answer without awaiting ----------------------------------------------------------


async def test_fresh_key_is_get_keys_answer_or_none(idp, make_cache, signer, rotated_signer, ec_signer, ed_signer):
    idp.keys = [
        signer.jwk(alg="RS256"),
        rotated_signer.jwk(),
        ec_signer.jwk(),
        ed_signer.jwk(),
        {**ec_signer.jwk(), "kid": "rsa-2"},
    ]
    cache = make_cache()
    assert cache.fresh_key("rsa-1", "RS256") is None  # no key set yet: get_key must fetch
    await cache.refresh()
    for kid in ("rsa-1", "rsa-2", "ec-1", "ed-1", None, "nope"):
        for alg in ("RS256", "PS256", "ES256", "ES384", "EdDSA", "HS256", "RSfoo"):
            for _ in range(2):  # the second time from what the first remembered
                fresh = cache.fresh_key(kid, alg)
                try:
                    expected = await cache.get_key(kid, alg)
                except InvalidToken:
                    expected = None
                assert fresh is expected, (kid, alg)
    assert idp.jwks_fetches == 1


async def test_fresh_key_leaves_stale_sets_and_removed_keys_to_get_key(idp, cache, clock, signer, rotated_signer):
    key = cache.fresh_key("rsa-1", "RS256")
    assert key is not None and verifies(key, signer)
    clock.advance(TTL)
    assert cache.fresh_key("rsa-1", "RS256") is None  # stale: get_key decides, and starts the refresh
    idp.publish(rotated_signer)
    await cache.get_key("rsa-1", "RS256")
    await eventually(lambda: cache.age == 0)
    assert cache.fresh_key("rsa-1", "RS256") is None  # gone with the new key set
    assert verifies(cache.fresh_key("rsa-2", "RS256"), rotated_signer)


async def test_fresh_key_remembers_a_bounded_number_of_lookups(cache):
    for index in range(3000):
        assert cache.fresh_key("rsa-1", f"RS{index}") is not None  # any "RS..." fits an RSA key without alg
    assert len(cache._found) == 1024


# --- ready / age / counters / prefetch -----------------------------------------------------------


async def test_ready_age_counters_and_prefetch(idp, make_cache, clock):
    cache = make_cache()
    assert (cache.ready, cache.age, cache.fetch_count, cache.failure_count) == (False, None, 0, 0)

    cache.prefetch()
    await eventually(lambda: cache.ready)
    assert (cache.age, cache.fetch_count, cache.failure_count) == (0, 1, 0)
    clock.advance(5)
    assert cache.age == 5

    cache.prefetch()  # within the cooldown: nothing happens
    await asyncio.sleep(0.01)
    assert idp.jwks_fetches == 1

    clock.advance(COOLDOWN)
    cache.prefetch()
    await eventually(lambda: cache.age == 0)
    assert (cache.fetch_count, idp.jwks_fetches) == (2, 2)

    clock.advance(TTL + MAX_STALE - 1)
    assert cache.ready
    clock.advance(1)
    assert not cache.ready


async def test_prefetch_failure_is_counted_and_never_raises(idp, make_cache):
    serve(idp, status_code=503)
    cache = make_cache()
    cache.prefetch()
    await eventually(lambda: cache.failure_count == 1)
    assert not cache.ready
    await cache.refresh()  # refresh never raises either
    assert (cache.fetch_count, cache.failure_count) == (2, 2)


async def test_unexpected_error_in_the_uri_source_is_a_counted_failure(idp, make_cache):
    async def broken_source(client: httpx.AsyncClient) -> str:
        raise RuntimeError("bug")

    cache = make_cache(broken_source)
    with pytest.raises(KeySetUnavailable):
        await cache.get_key("rsa-1", "RS256")
    assert (cache.fetch_count, cache.failure_count) == (1, 1)


async def test_aclose_cancels_a_fetch_in_flight(idp, make_cache):
    idp.jwks_route.mock(side_effect=hanging())
    cache = make_cache()
    cache.prefetch()
    await asyncio.sleep(0.01)
    await asyncio.wait_for(cache.aclose(), 1.0)
    await asyncio.sleep(0)
    assert not cache.ready


# --- bounded fetch (auth/http_fetch.py) ----------------------------------------------------------

URL = "https://idp.example.com/doc.json"


@pytest.fixture
async def http() -> AsyncIterator[tuple[respx.MockRouter, httpx.AsyncClient]]:
    with respx.mock(assert_all_called=False) as router:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            yield router, client


async def test_fetch_returns_a_json_object_and_asks_for_json(http):
    router, client = http
    route = router.get(URL).mock(return_value=httpx.Response(200, json={"a": 1}))
    assert await fetch_json_object(client, URL, timeout=1) == {"a": 1}
    assert route.calls.last.request.headers["accept"] == "application/json"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(404), "answered HTTP 404"),
        (httpx.Response(301, headers={"Location": "https://x.example/"}), "redirects are not followed"),
        (httpx.Response(200, content=b"{nope"), "not JSON"),
        (httpx.Response(200, content=b"[" * 100_000), "not JSON"),
        (httpx.Response(200, json=[1, 2]), "expected a JSON object"),
        (httpx.Response(200, json="text"), "expected a JSON object"),
    ],
    ids=["404", "redirect", "malformed", "too-deep", "array", "string"],
)
async def test_fetch_refuses(http, response, message):
    router, client = http
    router.get(URL).mock(return_value=response)
    with pytest.raises(FetchError, match=message) as raised:
        await fetch_json_object(client, URL, timeout=1)
    assert URL in str(raised.value)


async def test_fetch_size_cap_boundary(http):
    router, client = http
    body = json.dumps({"k": "x" * 100}).encode()
    router.get(URL).mock(return_value=httpx.Response(200, content=body))
    assert await fetch_json_object(client, URL, timeout=1, max_bytes=len(body))
    with pytest.raises(FetchError, match="larger than"):
        await fetch_json_object(client, URL, timeout=1, max_bytes=len(body) - 1)


async def test_fetch_size_cap_without_content_length(http):
    router, client = http

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 100
        yield b"{}"

    router.get(URL).mock(side_effect=lambda request: httpx.Response(200, content=chunks()))
    assert await fetch_json_object(client, URL, timeout=1, max_bytes=1002) == {}
    with pytest.raises(FetchError, match="larger than 1001 bytes"):
        await fetch_json_object(client, URL, timeout=1, max_bytes=1001)


async def test_fetch_times_out_on_a_hanging_response(http):
    router, client = http
    router.get(URL).mock(side_effect=hanging())
    started = time.perf_counter()
    with pytest.raises(FetchError, match=r"timed out after 0\.2s"):
        await fetch_json_object(client, URL, timeout=0.2)
    assert time.perf_counter() - started < 1.0


async def test_fetch_connection_error(http):
    router, client = http
    router.get(URL).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(FetchError, match="failed: ConnectError"):
        await fetch_json_object(client, URL, timeout=1)

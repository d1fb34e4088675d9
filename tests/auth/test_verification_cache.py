"""The verification cache: a remembered answer never lets in a token the verifier would refuse now."""

from __future__ import annotations

import asyncio
import functools
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from auth.errors import InvalidToken, Reason
from auth.jwk import VerificationKey
from auth.jwks_cache import JWKSCache
from auth.jwt_verifier import JwtVerifier
from auth.principal import Principal
from auth.verification_cache import REFUSALS_PER_ACCEPTED, REFUSED_TOKEN_CHARS, VerificationCache
from tests.support import ISSUER, JWKS_URI, SERVER_URL, Clock, CollidingText, expiring_soon, make_verifier

EXPIRES = 10_000.0  # the test principal's exp, on the test clock


def principal(subject: str = "user-123", expires: float = EXPIRES) -> Principal:
    return Principal(
        subject=subject,
        client_id="client-abc",
        issuer=ISSUER,
        audience=(SERVER_URL,),
        scopes=frozenset({"read"}),
        expires_at=datetime.fromtimestamp(expires, tz=UTC),
    )


@pytest.fixture
def key(signer) -> VerificationKey:
    public = signer.private_key.public_key()
    return VerificationKey(kid=signer.kid, kty="RSA", crv=None, alg="RS256", key=public)


class FakeKeys:
    """A key set whose keys are `current` (ids of the keys still published; every key when None). `mark` is what
    unknown_kid_mark answers (None: a refresh may start now); a kid stays unknown while the mark is the same."""

    def __init__(self, current: set[int] | None = None) -> None:
        self.current = current
        self.mark: object | None = object()

    def is_current(self, key: VerificationKey) -> bool:
        return self.current is None or id(key) in self.current

    def fresh_key(self, kid: str | None, alg: str) -> VerificationKey | None:
        return None  # no answer at once: the cache never refuses a signature without the real key set

    def unknown_kid_mark(self) -> object | None:
        return self.mark

    def kid_still_unknown(self, mark: object) -> bool:
        return mark is self.mark


def make_cache(
    clock: Clock, *, current: set[int] | None = None, keys: FakeKeys | None = None, **options: float
) -> VerificationCache:
    """A cache whose key set is `keys`, or one whose keys are `current` (every key when None)."""
    return VerificationCache(
        keys=keys or FakeKeys(current),
        clock=clock,
        **options,  # type: ignore[arg-type]
    )


# --- unit: VerificationCache with a hand-moved clock ------------------------------------------------------
def test_an_accepted_token_is_remembered_until_its_exp_and_not_a_moment_longer(key):
    clock = Clock()
    cache = make_cache(clock, max_age=1e9)
    token = "a.b.c"
    who = principal()
    cache.accept(token, who, key)
    clock.now = EXPIRES - 0.001
    assert cache.lookup(token) is who
    clock.now = EXPIRES
    assert cache.lookup(token) is None
    assert len(cache) == 0  # and it is forgotten, not kept for later


def test_an_accepted_token_is_remembered_at_most_max_age(key):
    clock = Clock()
    cache = make_cache(clock, max_age=300)
    token = "a.b.c"
    cache.accept(token, principal(), key)
    clock.now += 299.9
    assert cache.lookup(token) is not None
    clock.now += 0.1
    assert cache.lookup(token) is None


def test_an_accepted_token_stops_working_when_its_key_leaves_the_key_set(key):
    current = {id(key)}
    cache = make_cache(Clock(), current=current)
    token = "a.b.c"
    cache.accept(token, principal(), key)
    assert cache.lookup(token) is not None
    current.clear()  # a refresh no longer holds this very key
    assert cache.lookup(token) is None
    current.add(id(key))  # ... nor does it come back by itself: it was dropped
    assert cache.lookup(token) is None


def test_the_key_is_the_whole_token(key):
    cache = make_cache(Clock())
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl"
    cache.accept(token, principal(), key)
    for other in (token[:-1] + "A", "X" + token[1:], token + "x", token[:-1]):
        assert cache.lookup(other) is None
    assert cache.lookup(token) is not None


def test_tokens_whose_hashes_collide_are_still_told_apart(key):
    cache = make_cache(Clock())
    who = principal()
    cache.accept(CollidingText("a.b.c"), who, key)
    cache.refuse(CollidingText("a.b.x"), InvalidToken(Reason.BAD_SIGNATURE))
    assert cache.lookup(CollidingText("a.b.d")) is None  # same hash, other text: a miss, never another's answer
    assert cache.lookup(CollidingText("a.b.c")) is who
    assert isinstance(cache.lookup(CollidingText("a.b.x")), InvalidToken)


def test_refusals_of_long_tokens_are_not_remembered(key):
    cache = make_cache(Clock())
    longest = "a." + "b" * (REFUSED_TOKEN_CHARS - 4) + ".c"
    assert len(longest) == REFUSED_TOKEN_CHARS
    cache.refuse(longest, InvalidToken(Reason.BAD_SIGNATURE))
    cache.refuse(longest + "c", InvalidToken(Reason.BAD_SIGNATURE))
    assert isinstance(cache.lookup(longest), InvalidToken)
    assert cache.lookup(longest + "c") is None  # checked afresh each time: refusals hold bounded text
    assert len(cache) == 1
    long_valid = "a." + "b" * REFUSED_TOKEN_CHARS + ".c"  # an accepted token of any length is remembered
    cache.accept(long_valid, principal(), key)
    assert cache.lookup(long_valid) is not None


def test_accepted_entries_are_bounded_and_the_least_recently_used_goes_first(key):
    cache = make_cache(Clock(), max_entries=3)
    tokens = [f"token-{index}" for index in range(4)]
    for token in tokens[:3]:
        cache.accept(token, principal(), key)
    assert cache.lookup(tokens[0]) is not None  # now the most recently used
    cache.accept(tokens[3], principal(), key)
    assert len(cache) == 3
    assert cache.lookup(tokens[1]) is None
    assert all(cache.lookup(token) is not None for token in (tokens[0], tokens[2], tokens[3]))


def test_zero_entries_remembers_nothing(key):
    cache = make_cache(Clock(), max_entries=0)
    token = "a.b.c"
    cache.accept(token, principal(), key)
    cache.refuse(token, InvalidToken(Reason.BAD_SIGNATURE))
    assert cache.lookup(token) is None
    assert len(cache) == 0


def test_a_refusal_is_remembered_only_briefly():
    clock = Clock()
    cache = make_cache(clock, refusal_seconds=5)
    token = "a.b.c"
    cache.refuse(token, InvalidToken(Reason.BAD_SIGNATURE, detail="InvalidSignatureError"))
    remembered = cache.lookup(token)
    assert isinstance(remembered, InvalidToken)
    assert (remembered.description, remembered.detail) == ("token signature is invalid", "InvalidSignatureError")
    clock.now += 4.9
    assert isinstance(cache.lookup(token), InvalidToken)
    clock.now += 0.1
    assert cache.lookup(token) is None


def test_an_unknown_key_is_not_remembered_when_a_refresh_may_start():
    keys = FakeKeys()
    keys.mark = None
    cache = make_cache(Clock(), keys=keys, refusal_seconds=5)
    token = "a.b.c"
    cache.refuse(token, InvalidToken(Reason.KEY_UNKNOWN))
    assert cache.lookup(token) is None
    assert len(cache) == 0


def test_an_unknown_key_is_remembered_only_while_the_same_key_set_holds():
    clock, keys = Clock(), FakeKeys()
    cache = make_cache(clock, keys=keys, refusal_seconds=5)
    token = "a.b.c"
    cache.refuse(token, InvalidToken(Reason.KEY_UNKNOWN, detail="no JWKS key matches the token's kid"))
    remembered = cache.lookup(token)
    assert isinstance(remembered, InvalidToken)
    assert (remembered.description, remembered.detail) == (
        "token signing key is unknown",
        "no JWKS key matches the token's kid",
    )
    keys.mark = object()  # a new key set (or a refresh allowed again): the kid may be known now
    assert cache.lookup(token) is None
    assert len(cache) == 0  # forgotten, not kept for later
    cache.refuse(token, InvalidToken(Reason.KEY_UNKNOWN))
    clock.now += 5  # and never longer than any refusal
    assert cache.lookup(token) is None


def test_refusal_seconds_zero_remembers_no_refusal():
    cache = make_cache(Clock(), refusal_seconds=0)
    token = "a.b.c"
    cache.refuse(token, InvalidToken(Reason.BAD_SIGNATURE))
    assert cache.lookup(token) is None


def test_a_flood_of_refusals_cannot_push_valid_tokens_out(key):
    cache = make_cache(Clock(), max_entries=100)
    valid = [f"valid-{index}" for index in range(100)]
    for token in valid:
        cache.accept(token, principal(), key)
    for index in range(10_000):
        cache.refuse(f"bad-{index}", InvalidToken(Reason.BAD_SIGNATURE))
    assert all(cache.lookup(token) is not None for token in valid)
    assert len(cache) == 100 + 100 // REFUSALS_PER_ACCEPTED


def test_a_returned_refusal_is_a_fresh_exception_each_time():
    cache = make_cache(Clock())
    token = "a.b.c"
    cache.refuse(token, InvalidToken(Reason.BAD_SIGNATURE))
    first, second = cache.lookup(token), cache.lookup(token)
    assert isinstance(first, InvalidToken) and isinstance(second, InvalidToken)
    assert first is not second


# --- through the verifier: real keys, a JWKS served by respx, real signed tokens ------------------
@pytest.fixture
def verifier(keys) -> JwtVerifier:
    return make_verifier(keys, leeway=0)


async def refusal(verifier: JwtVerifier, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    return caught.value


async def test_a_cached_token_is_refused_once_it_expires(verifier, signer):
    exp = expiring_soon()
    token = signer.token(exp=exp, iat=exp - 60)
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first  # remembered
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)
    assert (await refusal(verifier, token)).description == "token has expired"


async def test_a_cached_token_is_refused_once_its_key_is_rotated_out(verifier, keys, idp, signer, rotated_signer):
    token = signer.token()
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first
    assert verifier.cache.hits == 1
    idp.publish(rotated_signer)  # the IdP drops rsa-1
    await keys.refresh()
    assert (await refusal(verifier, token)).description == "token signing key is unknown"
    # "key unknown" is not remembered when a refresh may start (no cooldown here): once the key is back, the same
    # token is checked again and accepted.
    idp.publish(signer, rotated_signer)
    await keys.refresh()
    assert (await verifier.verify(token)).subject == "user-123"


@pytest.fixture
async def slow_keys(idp, tls_context, monkeypatch):
    """A key set with a 30 s refresh cooldown on a hand-moved clock, fetched once."""
    monkeypatch.setattr(httpx, "AsyncClient", functools.partial(httpx.AsyncClient, verify=tls_context))
    clock = Clock()
    cache = JWKSCache(JWKS_URI, cooldown=30, clock=clock)
    await cache.refresh()
    yield cache, clock
    await cache.aclose()


async def test_an_unknown_kid_is_answered_from_memory_only_while_no_refresh_could_bring_it(
    slow_keys, idp, signer, rotated_signer
):
    keys, clock = slow_keys
    verifier = make_verifier(keys)
    token = rotated_signer.token()  # rsa-2: not published yet
    fetches = idp.jwks_fetches
    first = await refusal(verifier, token)
    assert first.description == "token signing key is unknown"
    hits = verifier.cache.hits
    second = await refusal(verifier, token)  # within the cooldown, same key set: the verifier would say the same
    assert verifier.cache.hits == hits + 1
    assert (second.description, second.detail) == (first.description, first.detail)
    assert idp.jwks_fetches == fetches
    idp.publish(signer, rotated_signer)
    clock.now += 30  # the cooldown is over: a refresh may bring the kid, so the refusal no longer holds
    assert (await verifier.verify(token)).subject == "user-123"
    assert idp.jwks_fetches == fetches + 1


async def test_an_unknown_kid_is_checked_again_as_soon_as_the_key_set_changes(slow_keys, idp, signer, rotated_signer):
    keys, _ = slow_keys
    verifier = make_verifier(keys)
    token = rotated_signer.token()
    await refusal(verifier, token)
    assert isinstance(verifier.cache.lookup(token), InvalidToken)  # remembered
    idp.publish(signer, rotated_signer)
    await keys.refresh()  # a refresh (a TTL revalidation, say) inside the cooldown
    assert (await verifier.verify(token)).subject == "user-123"


async def test_an_unchanged_key_keeps_its_tokens_across_a_refresh(verifier, keys, idp, signer, rotated_signer):
    token = signer.token()
    first = await verifier.verify(token)
    idp.publish(signer, rotated_signer)  # rsa-1 stays, rsa-2 is added
    await keys.refresh()
    assert await verifier.verify(token) is first


async def test_one_changed_signature_character_is_never_an_acceptance(verifier, signer):
    """Other signature bytes over an accepted RS256 token's content: refused from the cache (PKCS#1 v1.5 admits one
    signature per key and message), and the accepted token itself still passes."""
    token = signer.token()
    await verifier.verify(token)
    header, payload, signature = token.split(".")
    flipped = "A" if signature[10] != "A" else "B"
    forged = f"{header}.{payload}.{signature[:10]}{flipped}{signature[11:]}"
    hits = verifier.cache.hits
    assert (await refusal(verifier, forged)).reason is Reason.BAD_SIGNATURE
    assert verifier.cache.hits == hits + 1
    assert (await verifier.verify(token)).subject == "user-123"


async def test_a_cached_refusal_answers_the_same_as_the_verifier(verifier, rotated_signer, idp):
    forged = rotated_signer.sign({"iss": ISSUER}, headers={"kid": "rsa-1"})  # rsa-1 is published, not this key
    first = await refusal(verifier, forged)
    hits = verifier.cache.hits
    second = await refusal(verifier, forged)
    assert verifier.cache.hits == hits + 1
    assert (second.description, second.detail) == (first.description, first.detail)


async def test_the_cache_holds_at_most_its_bound(keys, signer):
    verifier = make_verifier(keys, cache_entries=5)
    tokens = [signer.token(sub=f"user-{index}") for index in range(12)]
    for token in tokens:
        await verifier.verify(token)
    assert len(verifier.cache) == 5
    misses = verifier.cache.misses
    await verifier.verify(tokens[0])  # long gone: verified again
    assert verifier.cache.misses == misses + 1


async def test_principal_expiry_bounds_the_entry_even_with_a_long_max_age(keys, signer):
    verifier = make_verifier(keys, cache_seconds=3600, leeway=0)
    exp = expiring_soon()
    token = signer.token(exp=exp, iat=exp - 60)
    who = await verifier.verify(token)
    assert who.expires_at == datetime.fromtimestamp(exp, tz=UTC)
    assert who.expires_at - datetime.now(UTC) <= timedelta(seconds=2)  # exp, not the hour of cache_seconds
    await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)
    assert (await refusal(verifier, token)).description == "token has expired"

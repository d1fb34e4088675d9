"""The IdP's signing keys: fetched with httpx, cached with a TTL, refreshed single-flight, kept through outages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import httpx
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from auth.errors import InvalidToken, KeySetUnavailable, Reason
from auth.http_fetch import FetchError, fetch_json_object
from auth.jwk import VerificationKey, parse_jwks

logger = logging.getLogger(__name__)

_MAX_FOUND = 1024  # (kid, alg) lookups remembered per key set: far more than an IdP's keys and our algorithms


class JWKSCache:
    """Signing keys by `kid`. Known keys are answered from memory; the network is touched only when
    the set is older than its TTL (in the background), or for an unknown `kid` at most once per cooldown."""

    def __init__(
        self,
        jwks_uri: str | Callable[[httpx.AsyncClient], Awaitable[str]],
        *,
        ttl: float = 600,
        cooldown: float = 10,
        max_stale: float = 6 * 3600,
        timeout: float = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._jwks_uri = jwks_uri
        self._ttl = ttl
        self._cooldown = cooldown
        self._max_stale = max_stale
        self._timeout = timeout
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._keys: dict[str | None, tuple[VerificationKey, ...]] = {}
        # id() of every held key object: a membership test per cached verification. An id cannot be reused while
        # the object lives, and whoever asks `is_current` holds the key it asks about.
        self._held_ids: frozenset[int] = frozenset()
        # (kid, alg) -> what _find gave under the current key set (only keys found; emptied when the set changes)
        self._found: dict[tuple[str | None, str], VerificationKey] = {}
        self._fetched_at: float | None = None
        self._last_attempt: float | None = None
        self._inflight: asyncio.Future[None] | None = None
        self.fetch_count = 0
        self.failure_count = 0

    # --- lifecycle -----------------------------------------------------------------------------
    async def aclose(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def ready(self) -> bool:
        """True once a key set has been fetched and is still within its stale bound."""
        return self._usable(self._clock())

    @property
    def age(self) -> float | None:
        return None if self._fetched_at is None else self._clock() - self._fetched_at

    @property
    def key_count(self) -> int:
        return sum(len(keys) for keys in self._keys.values())

    def unknown_kid_mark(self) -> object | None:
        """What a refusal for an unknown kid (or no fitting key) depends on: this very key set, while it is usable
        and no fetch may start (none in flight, the cooldown since the last attempt not over). get_key answers such
        a kid the same way for as long as kid_still_unknown(mark) holds. None when a fetch may start now."""
        now = self._clock()
        if not self._usable(now) or self._may_fetch(now):
            return None
        return self._keys

    def kid_still_unknown(self, mark: object) -> bool:
        """Whether get_key would still refuse a kid it refused under `mark` (see unknown_kid_mark): the same key set
        object (every fetch that succeeds replaces it), still usable, and still no fetch allowed."""
        return mark is self.unknown_kid_mark()

    def is_current(self, key: VerificationKey) -> bool:
        """Whether this very key is still in the key set (refreshes keep unchanged keys as the same objects)."""
        return id(key) in self._held_ids

    def has_kid(self, kid: object) -> bool:
        return isinstance(kid, str | None) and kid in self._keys

    def describe(self) -> list[str]:
        """One line per held key, for diagnostics: kid, type, curve or size, algorithm."""
        lines = []
        for kid, keys in self._keys.items():
            for key in keys:
                size = f"{key.key.key_size} bits" if isinstance(key.key, RSAPublicKey) else key.crv
                lines.append(f"{kid!r}: {key.kty} {size}, alg {key.alg or 'any fitting'}")
        return lines

    # --- lookups -------------------------------------------------------------------------------
    def fresh_key(self, kid: str | None, alg: str) -> VerificationKey | None:
        """What get_key would return at once, for a key set within its TTL: no refresh to start, nothing to wait
        for. None when get_key must decide (stale or no key set, a kid not found, a key that does not fit)."""
        fetched_at = self._fetched_at
        if fetched_at is None or self._clock() - fetched_at >= self._ttl:
            return None
        found = self._found.get((kid, alg))
        if found is None:
            found = self._find(kid, alg)
            if found is not None and len(self._found) < _MAX_FOUND:
                self._found[(kid, alg)] = found
        return found

    async def get_key(self, kid: str | None, alg: str) -> VerificationKey:
        now = self._clock()
        if not self._usable(now):
            if self._may_fetch(now):
                await self.refresh()
            if not self._usable(self._clock()):
                raise KeySetUnavailable()
        elif self._fetched_at is not None and now - self._fetched_at >= self._ttl and self._may_fetch(now):
            self._start_refresh()  # stale but usable: revalidate without making anyone wait

        found = self._find(kid, alg)
        if found is None and kid not in self._keys and self._may_fetch(self._clock()):
            await self.refresh()
            found = self._find(kid, alg)
        if found is None:
            if kid in self._keys:
                raise InvalidToken(Reason.KEY_MISMATCH, detail=f"alg {alg} does not fit kid")
            raise InvalidToken(Reason.KEY_UNKNOWN, detail="no JWKS key matches the token's kid")
        return found

    def _find(self, kid: str | None, alg: str) -> VerificationKey | None:
        if kid is None:
            # Without a kid, only an unambiguous key will do.
            fitting = [key for keys in self._keys.values() for key in keys if key.fits(alg)]
            return fitting[0] if len(fitting) == 1 else None
        return next((key for key in self._keys.get(kid, ()) if key.fits(alg)), None)

    def _usable(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self._ttl + self._max_stale

    def _may_fetch(self, now: float) -> bool:
        if self._inflight is not None:
            return True  # joining the fetch in flight costs the IdP nothing
        return self._last_attempt is None or now - self._last_attempt >= self._cooldown

    # --- fetching ------------------------------------------------------------------------------
    def prefetch(self) -> None:
        """Start a fetch in the background unless one ran within the cooldown."""
        if self._may_fetch(self._clock()):
            self._start_refresh()

    async def refresh(self) -> None:
        """Fetch the key set now, or join the fetch already in flight. Never raises."""
        # shield: a caller that goes away must not cancel the fetch others are waiting for
        await asyncio.shield(self._start_refresh())

    def _start_refresh(self) -> asyncio.Future[None]:
        if self._inflight is None:
            self._last_attempt = self._clock()
            task = asyncio.ensure_future(self._fetch())
            self._inflight = task
            task.add_done_callback(self._fetch_done)
        return self._inflight

    def _fetch_done(self, task: asyncio.Future[None]) -> None:
        self._inflight = None
        if not task.cancelled() and task.exception() is not None:  # pragma: no cover - _fetch catches all
            logger.error("JWKS refresh crashed: %s", type(task.exception()).__name__)

    async def _fetch(self) -> None:
        self.fetch_count += 1
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, timeout=self._timeout)
        try:
            uri = self._jwks_uri
            if not isinstance(uri, str):
                uri = await uri(self._client)
            keys = parse_jwks(await fetch_json_object(self._client, uri, timeout=self._timeout))
        except FetchError as exc:
            self.failure_count += 1
            held = "keeping the last good key set" if self._fetched_at is not None else "no key set held yet"
            logger.warning("JWKS refresh failed (%s): %s", held, exc)
            return
        except Exception as exc:  # noqa: BLE001 - a refresh must never bring a request down
            self.failure_count += 1
            logger.error("JWKS refresh failed unexpectedly: %s", type(exc).__name__)
            return
        by_kid: dict[str | None, list[VerificationKey]] = {}
        for key in keys:
            # An unchanged key stays the same object, so verifications remembered for it stay valid.
            held = next((old for old in self._keys.get(key.kid, ()) if old == key), key)
            by_kid.setdefault(key.kid, []).append(held)
        self._keys = {kid: tuple(group) for kid, group in by_kid.items()}
        self._found = {}
        self._held_ids = frozenset(id(key) for group in by_kid.values() for key in group)
        self._fetched_at = self._clock()
        logger.info("JWKS refreshed: %d usable key(s)", len(keys))

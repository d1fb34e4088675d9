"""Asks the IdP about a token only it can check (RFC 7662 introspection) and holds its recent answers.

An active answer passes the same token rules (auth.token_rules) as a JWT's claims, so the caller is the same
Principal whichever way the token was checked. Security rules:
- the cache is keyed by the token's SHA-256, never its text: the text is held only while its call is in flight;
- an accepted answer is remembered until the token's `exp` or `cache_seconds`, whichever comes first; an inactive
  or refused one for `refusal_seconds`; an outage never (the next request asks again);
- concurrent requests with one token make one call (single-flight); the call runs on its own, so a caller that
  goes away neither cancels it for the others nor leaves a failure behind for later calls;
- no answer (timeout, HTTP error, not a JSON object, discovery failing) is IntrospectionUnavailable: a 503 with
  Retry-After within `timeout`, never a 500 and never an acceptance.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx

from auth.claims import TokenClaims
from auth.discovery import DiscoveredJWKSUri
from auth.errors import AuthError, IntrospectionUnavailable, InvalidToken, Reason
from auth.http_fetch import FetchError, fetch_json_object
from auth.principal import Principal
from auth.token_rules import TokenRules
from settings import IntrospectionAuthMethod

EndpointSource = Callable[[httpx.AsyncClient], Awaitable[str]]
MAX_ANSWER_BYTES = 64 * 1024
REFUSALS_PER_ACCEPTED = 10  # a flood of bad tokens holds at most a tenth of the entries


def token_key(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def basic_credentials(client_id: str, client_secret: str) -> str:
    """RFC 6749 section 2.3.1: each part form-urlencoded, then `id:secret` in base64."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


@dataclass(frozen=True, slots=True)
class _Refused:
    reason: Reason
    detail: str


class AnswerCache:
    """Recent outcomes by token hash: principals (least recently used goes first) and, bounded apart, refusals."""

    def __init__(self, *, max_entries: int, clock: Callable[[], float]) -> None:
        self._max = {Principal: max_entries, _Refused: max_entries // REFUSALS_PER_ACCEPTED}
        self._entries: dict[type, OrderedDict[bytes, tuple[Principal | _Refused, float]]] = {
            Principal: OrderedDict(),
            _Refused: OrderedDict(),
        }
        self._clock = clock

    def lookup(self, key: bytes) -> Principal | _Refused | None:
        now = self._clock()
        for entries in self._entries.values():
            held = entries.get(key)
            if held is None:
                continue
            outcome, until = held
            if until <= now:
                del entries[key]
                return None
            entries.move_to_end(key)
            return outcome
        return None

    def remember(self, key: bytes, outcome: Principal | _Refused, until: float) -> None:
        entries, limit = self._entries[type(outcome)], self._max[type(outcome)]
        if limit <= 0 or until <= self._clock():
            return
        entries[key] = (outcome, until)
        entries.move_to_end(key)
        while len(entries) > limit:
            entries.popitem(last=False)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())


class Introspector:
    """One IdP's introspection endpoint, asked with this server's client credentials."""

    def __init__(
        self,
        endpoint: str | EndpointSource,
        rules: TokenRules,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        auth_method: IntrospectionAuthMethod = "client_secret_basic",
        timeout: float = 5.0,
        cache_seconds: float = 60,
        refusal_cache_seconds: float = 5,
        cache_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._endpoint = endpoint
        self.rules = rules
        self.issuer = issuer
        self._client_id = client_id
        self._client_secret = client_secret
        self.auth_method = auth_method
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._refusal_seconds = refusal_cache_seconds
        self._clock = clock
        self.cache = AnswerCache(max_entries=cache_entries, clock=clock)
        self._in_flight: dict[bytes, asyncio.Task[Principal]] = {}
        self._client: httpx.AsyncClient | None = None
        self.calls = 0  # introspection requests sent: for tests and the bench

    def __repr__(self) -> str:  # never the secret
        return f"Introspector(issuer={self.issuer!r}, client_id={self._client_id!r}, auth={self.auth_method})"

    async def verify(self, token: str) -> Principal:
        """The caller an active answer names; InvalidToken when inactive or refused by the rules,
        IntrospectionUnavailable when the IdP gives no answer."""
        key = token_key(token)
        outcome = self.cache.lookup(key)
        if isinstance(outcome, Principal):
            return outcome
        if outcome is not None:
            raise InvalidToken(outcome.reason, detail=outcome.detail)
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(self._introspect(key, token))
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        return await asyncio.shield(task)

    def _landed(self, key: bytes, task: asyncio.Task[Principal]) -> None:
        if self._in_flight.get(key) is task:
            del self._in_flight[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone away

    async def _introspect(self, key: bytes, token: str) -> Principal:
        answer = await self.ask(token)
        now = self._clock()
        try:
            principal = self.principal_of(answer)
        except InvalidToken as exc:
            self.cache.remember(key, _Refused(exc.reason, exc.detail), now + self._refusal_seconds)
            raise
        until = min(principal.expires_at.timestamp(), now + self._cache_seconds)
        self.cache.remember(key, principal, until)
        return principal

    def principal_of(self, answer: Mapping[str, Any]) -> Principal:
        """The caller an introspection answer names, by the same rules as a JWT's claims."""
        if answer.get("active") is not True:
            detail = "the IdP's introspection answered active=false: revoked, expired, unknown or another IdP's token"
            raise InvalidToken(Reason.INACTIVE, detail=detail)
        try:
            return self.rules.check(TokenClaims.from_introspection(answer, self.issuer))
        except AuthError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever JSON the IdP sends: a 401, never a 500
            raise InvalidToken(Reason.CLAIMS_MALFORMED, detail=f"introspection answer: {type(exc).__name__}") from None

    async def ask(self, token: str) -> dict[str, Any]:
        """The IdP's answer about `token` as sent (a JSON object); IntrospectionUnavailable when there is none
        within the timeout."""
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, timeout=self._timeout)
        form = {"token": token, "token_type_hint": "access_token"}
        headers: dict[str, str] = {}
        if self.auth_method == "client_secret_post":
            form |= {"client_id": self._client_id, "client_secret": self._client_secret}
        else:
            headers["Authorization"] = basic_credentials(self._client_id, self._client_secret)
        self.calls += 1
        try:
            async with asyncio.timeout(self._timeout):  # discovery and the call share one budget
                endpoint = await self.endpoint()
                return await fetch_json_object(
                    self._client,
                    endpoint,
                    timeout=self._timeout,
                    max_bytes=MAX_ANSWER_BYTES,
                    form=form,
                    headers=headers,
                )
        except TimeoutError:
            raise IntrospectionUnavailable(f"introspection timed out after {self._timeout:g}s") from None
        except FetchError as exc:
            raise IntrospectionUnavailable(f"introspection: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - whatever the HTTP stack raises: a 503, never a 500
            raise IntrospectionUnavailable(f"introspection failed: {type(exc).__name__}") from None

    async def endpoint(self) -> str:
        if isinstance(self._endpoint, str):
            return self._endpoint
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False, timeout=self._timeout)
        return await self._endpoint(self._client)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def discovered_endpoint(issuer: str, well_known_url: str | None, *, timeout: float) -> EndpointSource:
    """`introspection_endpoint` from the issuer's discovery document, fetched on first use."""
    return DiscoveredJWKSUri(issuer, well_known_url, timeout=timeout, name="introspection_endpoint")

"""TokenManager: client-credentials access tokens from any IdP, cached, refreshed early, fetched once at a time."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import get_args

import httpx
from pydantic import SecretStr

from client.discovery import discover_token_endpoint, endpoint_problem
from client.dpop import DPoPKey, NonceMemory, usable_nonce
from client.errors import TokenConfigError, TokenRejectedError
from client.http_retry import Answer, RetryPolicy, Sleep, exchange
from client.token_request import AuthMethod, basic_credentials, parse_token, rejection, token_form

logger = logging.getLogger(__name__)

MAX_REFRESH_MARGIN = 60.0  # seconds before expiry a long-lived token is replaced
REFRESH_MARGIN_RATIO = 0.1  # ... or this share of a short-lived token's lifetime, whichever is smaller


def refresh_margin(lifetime: float) -> float:
    """How long before expiry a token is replaced: 60 s, or 10% of a shorter lifetime (30 s for 5 minutes)."""
    return min(MAX_REFRESH_MARGIN, lifetime * REFRESH_MARGIN_RATIO)


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    obtained_at: float  # the clock when the request was sent: expiry is never overestimated
    lifetime: float

    @property
    def refresh_at(self) -> float:
        return self.obtained_at + self.lifetime - refresh_margin(self.lifetime)


class TokenManager:
    """Gets, caches and refreshes an OAuth 2.0 client-credentials access token.

    `await get_token()` returns a cached token until it is within `refresh_margin` of expiry; then one
    request (shared by every concurrent caller) fetches the next. Transient failures are retried with
    bounded backoff; a rejected client is not. The secret never appears in repr, errors or logs.

    With `dpop` (a DPoPKey) every token request carries a proof of that key, so the IdP binds the token to
    it (RFC 9449); the answer must then say `token_type: DPoP`. An IdP's `use_dpop_nonce` is retried once.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str | SecretStr,
        *,
        token_url: str | None = None,
        issuer: str | None = None,
        auth_method: AuthMethod = "client_secret_basic",
        scope: str | Sequence[str] | None = None,
        audience: str | None = None,
        resource: str | Sequence[str] | None = None,
        extra_params: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http_client: httpx.AsyncClient | None = None,
        dpop: DPoPKey | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        secret = client_secret.get_secret_value() if isinstance(client_secret, SecretStr) else client_secret
        if not client_id:
            raise TokenConfigError("client_id: missing")
        if not secret:
            raise TokenConfigError("client_secret: missing")
        if auth_method not in get_args(AuthMethod):
            raise TokenConfigError(
                f"auth_method: expected client_secret_basic or client_secret_post, got {auth_method!r}"
            )
        if not token_url and not issuer:
            raise TokenConfigError("expected token_url, or issuer to discover the token endpoint from")
        for name, url, allow_query in (("token_url", token_url, True), ("issuer", issuer, False)):
            problem = endpoint_problem(url, allow_query=allow_query) if url else None
            if problem:
                raise TokenConfigError(f"{name}: {problem}, got {url!r}")
        if not timeout > 0:
            raise TokenConfigError("timeout: expected a positive number of seconds")
        if dpop is not None and not isinstance(dpop, DPoPKey):
            raise TokenConfigError(f"dpop: expected a DPoPKey, got {type(dpop).__name__}")

        self.client_id = client_id
        self.issuer = issuer
        self.auth_method: AuthMethod = auth_method
        self._secret = SecretStr(secret)
        self._token_url = token_url or None
        self._form = token_form(scope=scope, audience=audience, resource=resource, extra_params=extra_params)
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._http_client = http_client
        self.dpop = dpop
        self._nonces = NonceMemory()
        self._clock = clock
        self._sleep = sleep
        self._token: _Token | None = None
        self._refreshing: asyncio.Task[_Token] | None = None

    def __repr__(self) -> str:
        where = f"token_url={self._token_url!r}" if self._token_url else f"issuer={self.issuer!r}"
        bound = f", dpop={self.dpop!r}" if self.dpop is not None else ""
        return f"TokenManager(client_id={self.client_id!r}, {where}, auth_method={self.auth_method!r}{bound})"

    @property
    def token_url(self) -> str | None:
        """The token endpoint: as configured, or once discovered; None before discovery."""
        return self._token_url

    # --- public API ----------------------------------------------------------------------------
    async def get_token(self, *, force_refresh: bool = False) -> str:
        """A valid access token; fetched when there is none, it is near expiry, or `force_refresh`."""
        if not force_refresh and self._token is not None and self._clock() < self._token.refresh_at:
            return self._token.value
        task = self._refreshing
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._refresh())
            self._refreshing = task
            task.add_done_callback(self._refresh_done)
        # Shielded: one caller giving up must not cancel the fetch the others are waiting for.
        token = await asyncio.shield(task)
        return token.value

    async def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token so the next get_token fetches a new one.

        With `token`, only if that is still the cached one: after a 401, many requests may report the
        same stale token, and only the first should cause a refresh.
        """
        current = self._token
        if current is not None and (token is None or hmac.compare_digest(current.value, token)):
            self._token = None

    # --- internals -----------------------------------------------------------------------------
    def _refresh_done(self, task: asyncio.Task[_Token]) -> None:
        if self._refreshing is task:
            self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiter was cancelled

    def _redact(self, text: str) -> str:
        secret = self._secret.get_secret_value()
        return text.replace(secret, "***") if secret else text

    async def _refresh(self) -> _Token:
        if self._http_client is not None:
            return await self._fetch(self._http_client)
        # A client per refresh: refreshes are rare, and nothing stays bound to one event loop.
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
            return await self._fetch(client)

    async def _fetch(self, client: httpx.AsyncClient) -> _Token:
        token_url = self._token_url
        if token_url is None:
            assert self.issuer is not None  # the constructor requires one of them
            token_url = await discover_token_endpoint(
                client, self.issuer, policy=self._retry, sleep=self._sleep, timeout=self._timeout, redact=self._redact
            )
            self._token_url = token_url
        form = dict(self._form)
        headers = {"Accept": "application/json"}
        secret = self._secret.get_secret_value()
        if self.auth_method == "client_secret_basic":
            headers["Authorization"] = basic_credentials(self.client_id, secret)
        else:
            form.update(client_id=self.client_id, client_secret=secret)
        started = self._clock()
        what = f"token endpoint {token_url}"

        def build() -> httpx.Request:
            request = client.build_request("POST", token_url, data=form, headers=headers)
            if self.dpop is not None:  # a new proof per attempt, with the IdP's latest nonce
                request.headers["DPoP"] = self.dpop.proof("POST", token_url, nonce=self._nonces.get(token_url))
            return request

        answer = await self._exchange(client, build, token_url, what)
        if self.dpop is not None and self._asks_for_nonce(answer):
            # RFC 9449 section 8: the IdP wants its nonce in the proof. Once: a second demand is an error.
            logger.info("%s asked for a DPoP nonce; retrying once with it", what)
            answer = await self._exchange(client, build, token_url, what)
            if self._asks_for_nonce(answer):
                raise TokenRejectedError(
                    f"{what} asked for a new DPoP nonce again after a retry with its nonce (use_dpop_nonce); gave up",
                    status=answer.status,
                    error="use_dpop_nonce",
                )
        if not 200 <= answer.status <= 299:
            raise rejection(answer, what, self.client_id, self._redact)
        value, lifetime = parse_token(answer, what, self._redact, dpop=self.dpop is not None)
        token = _Token(value=value, obtained_at=started, lifetime=lifetime)
        self._token = token
        kind = "DPoP-bound access token" if self.dpop is not None else "access token"
        logger.info("%s for client %s from %s, valid %.0f s", kind, self.client_id, token_url, token.lifetime)
        return token

    async def _exchange(
        self, client: httpx.AsyncClient, build: Callable[[], httpx.Request], token_url: str, what: str
    ) -> Answer:
        answer = await exchange(
            client, build, what=what, policy=self._retry, sleep=self._sleep, timeout=self._timeout, redact=self._redact
        )
        if self.dpop is not None:  # any answer may carry the nonce for the next proof (RFC 9449 section 8.2)
            self._nonces.remember(token_url, answer.headers.get("DPoP-Nonce"))
        return answer

    @staticmethod
    def _asks_for_nonce(answer: Answer) -> bool:
        """A 400 `use_dpop_nonce` that came with a usable DPoP-Nonce (without one, a retry cannot help)."""
        if answer.status != 400 or usable_nonce(answer.headers.get("DPoP-Nonce")) is None:
            return False
        return (answer.json_object() or {}).get("error") == "use_dpop_nonce"

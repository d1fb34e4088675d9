"""httpx2.Auth adapters for the TokenManager's tokens: BearerAuth, and DPoPAuth with a fresh proof per request."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Generator

import httpx2

from client.dpop import DPoPKey, NonceMemory, asks_for_nonce
from client.errors import TokenConfigError
from client.token_manager import TokenManager

logger = logging.getLogger(__name__)


class BearerAuth(httpx2.Auth):
    """For `httpx2.AsyncClient(auth=BearerAuth(manager))`, the HTTP client the MCP SDK takes.

    A 401 from the server means the token was rejected (revoked, rotated keys, clock skew): drop that
    token, fetch a new one and send the request again, once. A second 401 is the caller's answer.
    """

    # The body is read up front so the request can be sent a second time after a 401.
    requires_request_body = True

    def __init__(self, manager: TokenManager) -> None:
        if manager.dpop is not None:
            raise TokenConfigError("this TokenManager gets DPoP-bound tokens: use DPoPAuth, not BearerAuth")
        self.manager = manager

    def __repr__(self) -> str:
        return f"BearerAuth({self.manager!r})"

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        if self.requires_request_body:
            await request.aread()
        token = await self.manager.get_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        await self.manager.invalidate(token)
        request.headers["Authorization"] = f"Bearer {await self.manager.get_token()}"
        yield request

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        raise TypeError("BearerAuth needs httpx2.AsyncClient; the TokenManager is asynchronous")
        yield request  # pragma: no cover - makes this a generator, as httpx2 expects


class DPoPAuth(httpx2.Auth):
    """For `httpx2.AsyncClient(auth=DPoPAuth(manager))` with a TokenManager made with `dpop=DPoPKey(...)`.

    Every request carries `Authorization: DPoP <token>` and a new proof (RFC 9449 section 7): its own `jti`,
    the request's method and URL, and `ath`, the token's hash. A 401 `use_dpop_nonce` is answered once with
    the server's nonce, which is remembered per server for the next requests (so is any DPoP-Nonce a response
    carries). Another 401 is treated as BearerAuth does: a new token, once. Nothing else is retried.
    """

    requires_request_body = True

    def __init__(self, manager: TokenManager) -> None:
        if manager.dpop is None:
            raise TokenConfigError("DPoPAuth needs a TokenManager made with dpop=DPoPKey(...)")
        self.manager = manager
        self.key: DPoPKey = manager.dpop
        self.nonces = NonceMemory()

    def __repr__(self) -> str:
        return f"DPoPAuth({self.manager!r})"

    def _sign(self, request: httpx2.Request, token: str) -> httpx2.Request:
        url = str(request.url)
        proof = self.key.proof(request.method, url, access_token=token, nonce=self.nonces.get(url))
        request.headers["Authorization"] = f"DPoP {token}"
        request.headers["DPoP"] = proof
        return request

    def _read(self, request: httpx2.Request, response: httpx2.Response) -> bool:
        """Remember the response's nonce; True if it is a 401 asking for one it supplied (worth one retry)."""
        fresh = self.nonces.remember(str(request.url), response.headers.get("DPoP-Nonce"))
        return response.status_code == 401 and fresh and asks_for_nonce(response.headers.get_list("WWW-Authenticate"))

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        await request.aread()
        token = await self.manager.get_token()
        response = yield self._sign(request, token)
        if self._read(request, response):
            response = yield self._sign(request, token)  # once, with the nonce just received
            if self._read(request, response):
                logger.warning(
                    "the server at %s asked for a new DPoP nonce again after a retry with its nonce; giving up",
                    request.url.copy_with(query=None, fragment=None),
                )
                return
        if response.status_code != 401:
            return
        await self.manager.invalidate(token)
        response = yield self._sign(request, await self.manager.get_token())
        self._read(request, response)

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        raise TypeError("DPoPAuth needs httpx2.AsyncClient; the TokenManager is asynchronous")
        yield request  # pragma: no cover - makes this a generator, as httpx2 expects

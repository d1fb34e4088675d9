"""BearerAuth: an httpx2.Auth that puts the TokenManager's token on every request, refreshing once on a 401."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

import httpx2

from client.token_manager import TokenManager


class BearerAuth(httpx2.Auth):
    """For `httpx2.AsyncClient(auth=BearerAuth(manager))`, the HTTP client the MCP SDK takes.

    A 401 from the server means the token was rejected (revoked, rotated keys, clock skew): drop that
    token, fetch a new one and send the request again, once. A second 401 is the caller's answer.
    """

    # The body is read up front so the request can be sent a second time after a 401.
    requires_request_body = True

    def __init__(self, manager: TokenManager) -> None:
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

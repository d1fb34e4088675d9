"""BearerAuth: the MCP server side is an httpx2.MockTransport (respx cannot see httpx2), the IdP is respx."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, Iterator

import httpx
import httpx2
import pytest
import respx

from client import BearerAuth, TokenManager

TOKEN_URL = "https://idp.example.com/oauth/token"
MCP_URL = "https://mcp.example.com/mcp"
RPC = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}


class FakeMCPServer:
    """Accepts only the tokens in `valid`; remembers what each request carried."""

    def __init__(self, valid: set[str]) -> None:
        self.valid = valid
        self.seen: list[tuple[str | None, bytes]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        authorization = request.headers.get("Authorization")
        self.seen.append((authorization, request.content))
        if authorization and authorization.removeprefix("Bearer ") in self.valid:
            return httpx2.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": {"tools": []}})
        return httpx2.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})

    @property
    def tokens(self) -> list[str | None]:
        return [authorization for authorization, _ in self.seen]


@pytest.fixture
def idp() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


def issue(*tokens: str) -> list[httpx.Response]:
    return [httpx.Response(200, json={"access_token": t, "token_type": "Bearer", "expires_in": 3600}) for t in tokens]


def http_client(
    server: Callable[[httpx2.Request], httpx2.Response | Awaitable[httpx2.Response]], manager: TokenManager
) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.MockTransport(server), auth=BearerAuth(manager))


async def test_every_request_carries_the_managers_token(idp) -> None:
    route = idp.post(TOKEN_URL).mock(side_effect=issue("tok-1"))
    server = FakeMCPServer(valid={"tok-1"})
    manager = TokenManager("client-abc", "secret-xyz", token_url=TOKEN_URL)

    async with http_client(server, manager) as http:
        first = await http.post(MCP_URL, json=RPC)
        second = await http.post(MCP_URL, json=RPC)

    assert (first.status_code, second.status_code) == (200, 200)
    assert server.tokens == ["Bearer tok-1", "Bearer tok-1"]
    assert route.call_count == 1


async def test_a_401_causes_one_refresh_and_one_retry_of_the_same_request(idp) -> None:
    route = idp.post(TOKEN_URL).mock(side_effect=issue("revoked", "fresh"))
    server = FakeMCPServer(valid={"fresh"})
    manager = TokenManager("client-abc", "secret-xyz", token_url=TOKEN_URL)

    async with http_client(server, manager) as http:
        response = await http.post(MCP_URL, json=RPC)

    assert response.status_code == 200
    assert server.tokens == ["Bearer revoked", "Bearer fresh"]
    assert [json.loads(body) for _, body in server.seen] == [RPC, RPC]  # the body was sent again, intact
    assert route.call_count == 2
    assert await manager.get_token() == "fresh"


async def test_a_second_401_is_returned_without_another_attempt(idp) -> None:
    route = idp.post(TOKEN_URL).mock(side_effect=issue("tok-1", "tok-2", "tok-3"))
    server = FakeMCPServer(valid=set())
    manager = TokenManager("client-abc", "secret-xyz", token_url=TOKEN_URL)

    async with http_client(server, manager) as http:
        response = await http.post(MCP_URL, json=RPC)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert server.tokens == ["Bearer tok-1", "Bearer tok-2"]
    assert route.call_count == 2


async def test_a_403_is_not_retried(idp) -> None:
    route = idp.post(TOKEN_URL).mock(side_effect=issue("tok-1", "tok-2"))
    seen: list[httpx2.Request] = []

    def forbidden(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(403, headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'})

    manager = TokenManager("client-abc", "secret-xyz", token_url=TOKEN_URL)
    async with http_client(forbidden, manager) as http:
        response = await http.post(MCP_URL, json=RPC)

    assert response.status_code == 403
    assert len(seen) == 1
    assert route.call_count == 1


async def test_concurrent_401s_for_the_same_stale_token_cause_one_refresh(idp) -> None:
    async def slow_issue(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)
        return issue(f"tok-{route.call_count + 1}")[0]

    route = idp.post(TOKEN_URL).mock(side_effect=slow_issue)
    server = FakeMCPServer(valid={"tok-2"})

    arrivals = itertools.count()

    async def slow_server(request: httpx2.Request) -> httpx2.Response:
        # All twenty leave with the stale token; their 401s come back spread over 0.2 s, most of them
        # after the refresh is done, so a late 401 must not throw away the new token.
        await asyncio.sleep(0.01 * (1 + next(arrivals)))
        return server(request)

    manager = TokenManager("client-abc", "secret-xyz", token_url=TOKEN_URL)
    assert await manager.get_token() == "tok-1"  # cached, and about to be refused

    async with http_client(slow_server, manager) as http:
        responses = await asyncio.gather(*(http.post(MCP_URL, json=RPC) for _ in range(20)))

    assert [response.status_code for response in responses] == [200] * 20
    assert route.call_count == 2  # the first token, then exactly one refresh for all twenty
    assert server.tokens.count("Bearer tok-1") == 20


def test_a_sync_client_is_refused_with_a_clear_message() -> None:
    manager = TokenManager("client-abc", "secret-xyz", token_url=TOKEN_URL)

    with (
        httpx2.Client(transport=httpx2.MockTransport(FakeMCPServer(set())), auth=BearerAuth(manager)) as http,
        pytest.raises(TypeError, match=r"needs httpx2\.AsyncClient"),
    ):
        http.get(MCP_URL)


def test_repr_shows_no_secret() -> None:
    manager = TokenManager("client-abc", "secret-xyz", token_url=TOKEN_URL)
    assert "secret-xyz" not in repr(BearerAuth(manager))

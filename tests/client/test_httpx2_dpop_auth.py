"""DPoPAuth: an httpx2.MockTransport MCP server checks every proof (signature with the embedded jwk, htm, htu,
iat, a new jti, ath, the key's thumbprint against the token's cnf.jkt); the IdP binds tokens to the proof key."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import httpx2
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client import BearerAuth, DPoPAuth, DPoPKey, TokenConfigError, TokenManager
from tests.client.dpop_support import BindingIdP, DPoPServer, check_proof

TOKEN_URL = "https://idp.example.com/oauth/token"
MCP_URL = "https://mcp.example.com/mcp"
RPC = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}


def make_manager(issuer: BindingIdP, key: DPoPKey | None = None) -> TokenManager:
    idp = httpx.AsyncClient(transport=httpx.MockTransport(issuer))  # the IdP side, as respx would serve it
    return TokenManager(
        "client-abc", "secret-xyz", token_url=TOKEN_URL, dpop=key or DPoPKey.generate(), http_client=idp
    )


def http_client(server: Any, manager: TokenManager) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.MockTransport(server), auth=DPoPAuth(manager))


async def test_every_request_carries_the_bound_token_and_a_new_proof() -> None:
    issuer, server = BindingIdP(TOKEN_URL), DPoPServer(MCP_URL)
    manager = make_manager(issuer)

    async with http_client(server, manager) as http:
        responses = [
            await http.post(MCP_URL + "?trace=1", json=RPC),
            await http.get(MCP_URL),
            await http.post(MCP_URL, json=RPC),
        ]

    assert [response.status_code for response in responses] == [200, 200, 200]
    token = issuer.issued[0]
    assert [authorization for authorization, _ in server.seen] == [f"DPoP {token}"] * 3
    assert [claims["htm"] for _, claims in server.seen if claims] == ["POST", "GET", "POST"]
    assert len(set(server.jtis)) == 3
    assert len(issuer.issued) == 1


async def test_use_dpop_nonce_from_the_server_is_retried_once_then_sent_from_the_start() -> None:
    issuer = BindingIdP(TOKEN_URL)
    server = DPoPServer(MCP_URL, nonces=["rs-nonce-1"], demand_nonce=1)
    seen_bodies: list[bytes] = []

    def recording(request: httpx2.Request) -> httpx2.Response:
        seen_bodies.append(request.content)
        return server(request)

    async with http_client(recording, make_manager(issuer)) as http:
        first = await http.post(MCP_URL, json=RPC)
        second = await http.post(MCP_URL, json=RPC)

    assert (first.status_code, second.status_code) == (200, 200)
    assert [claims.get("nonce") for _, claims in server.seen if claims] == [None, "rs-nonce-1", "rs-nonce-1"]
    assert [json.loads(body) for body in seen_bodies] == [RPC] * 3  # the retried body was sent intact
    assert len(issuer.issued) == 1  # a nonce challenge is not a reason for a new token


async def test_a_second_use_dpop_nonce_is_the_callers_answer_not_a_loop(caplog) -> None:
    issuer = BindingIdP(TOKEN_URL)
    server = DPoPServer(MCP_URL, nonces=["n-1", "n-2", "n-3"], demand_nonce=10)

    with caplog.at_level(logging.WARNING):
        async with http_client(server, make_manager(issuer)) as http:
            response = await http.post(MCP_URL, json=RPC)

    assert response.status_code == 401
    assert 'error="use_dpop_nonce"' in response.headers["WWW-Authenticate"]
    assert len(server.seen) == 2
    assert len(issuer.issued) == 1
    assert "asked for a new DPoP nonce again after a retry" in caplog.text


async def test_a_refused_token_is_replaced_once_and_the_new_one_is_bound_too() -> None:
    issuer, server = BindingIdP(TOKEN_URL), DPoPServer(MCP_URL)
    manager = make_manager(issuer)
    server.refuse_tokens.add(await manager.get_token())

    async with http_client(server, manager) as http:
        response = await http.post(MCP_URL, json=RPC)

    assert response.status_code == 200
    assert len(issuer.issued) == 2
    assert [authorization for authorization, _ in server.seen] == [f"DPoP {token}" for token in issuer.issued]


async def test_a_nonce_on_a_successful_response_is_used_next_time() -> None:
    issuer, server = BindingIdP(TOKEN_URL), DPoPServer(MCP_URL)

    def rotating(request: httpx2.Request) -> httpx2.Response:
        response = server(request)
        server.current_nonce = f"rotated-{len(server.seen)}"
        response.headers["DPoP-Nonce"] = server.current_nonce
        return response

    async with http_client(rotating, make_manager(issuer)) as http:
        statuses = [(await http.post(MCP_URL, json=RPC)).status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    assert [claims.get("nonce") for _, claims in server.seen] == [None, "rotated-1", "rotated-2"]


async def test_nonces_are_kept_per_server() -> None:
    issuer = BindingIdP(TOKEN_URL)
    first = DPoPServer(MCP_URL, nonces=["first-only"], demand_nonce=1)
    other_url = "https://other.example.com/mcp"
    other = DPoPServer(other_url)

    def route(request: httpx2.Request) -> httpx2.Response:
        return first(request) if request.url.host == "mcp.example.com" else other(request)

    async with http_client(route, make_manager(issuer)) as http:
        assert (await http.post(MCP_URL, json=RPC)).status_code == 200
        assert (await http.post(other_url, json=RPC)).status_code == 200

    assert [claims.get("nonce") for _, claims in other.seen] == [None]


async def test_logs_and_repr_never_show_the_token_or_a_proof(caplog) -> None:
    issuer = BindingIdP(TOKEN_URL)
    server = DPoPServer(MCP_URL, nonces=["n-1", "n-2"], demand_nonce=2)
    proofs: list[str] = []

    def recording(request: httpx2.Request) -> httpx2.Response:
        proofs.append(request.headers["DPoP"])
        return server(request)

    manager = make_manager(issuer)
    auth = DPoPAuth(manager)
    with caplog.at_level(logging.DEBUG):
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(recording), auth=auth) as http:
            await http.post(MCP_URL, json=RPC)

    assert caplog.text  # the give-up warning at least
    for text in (caplog.text, repr(auth), repr(manager)):
        assert issuer.issued[0] not in text
        assert "secret-xyz" not in text
        assert all(proof not in text for proof in proofs)


def test_bearer_and_dpop_adapters_refuse_the_other_kind_of_manager() -> None:
    dpop_manager = TokenManager("c", "s", token_url=TOKEN_URL, dpop=DPoPKey.generate())
    bearer_manager = TokenManager("c", "s", token_url=TOKEN_URL)

    with pytest.raises(TokenConfigError, match="use DPoPAuth"):
        BearerAuth(dpop_manager)
    with pytest.raises(TokenConfigError, match="needs a TokenManager made with dpop"):
        DPoPAuth(bearer_manager)


def test_a_sync_client_is_refused_with_a_clear_message() -> None:
    manager = TokenManager("c", "s", token_url=TOKEN_URL, dpop=DPoPKey.generate())
    with (
        httpx2.Client(transport=httpx2.MockTransport(DPoPServer(MCP_URL)), auth=DPoPAuth(manager)) as http,
        pytest.raises(TypeError, match=r"needs httpx2\.AsyncClient"),
    ):
        http.get(MCP_URL)


# --- whatever a server answers --------------------------------------------------------------------

header_text = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300),
    st.sampled_from(
        ['DPoP error="use_dpop_nonce"', "DPoP error=use_dpop_nonce", 'Bearer, DPoP error="use_dpop_nonce",']
    ),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    statuses=st.lists(st.sampled_from([200, 400, 401, 403, 500]), min_size=3, max_size=3),
    challenges=st.lists(header_text, min_size=3, max_size=3),
    nonces=st.lists(st.one_of(st.none(), header_text), min_size=3, max_size=3),
)
def test_any_status_challenge_and_nonce_header_ends_after_at_most_three_sends(
    statuses: list[int], challenges: list[str], nonces: list[str | None]
) -> None:
    key = DPoPKey.generate()
    issuer = BindingIdP(TOKEN_URL)
    sent: list[httpx2.Request] = []

    def odd_server(request: httpx2.Request) -> httpx2.Response:
        index = min(len(sent), 2)
        sent.append(request)
        headers = {"WWW-Authenticate": challenges[index]}
        if nonces[index] is not None:
            headers["DPoP-Nonce"] = nonces[index]
        return httpx2.Response(statuses[index], headers=headers)

    async def call() -> httpx2.Response:
        async with http_client(odd_server, make_manager(issuer, key)) as http:
            return await http.post(MCP_URL, json=RPC)

    response = asyncio.run(call())

    assert 1 <= len(sent) <= 3
    assert response.status_code == statuses[len(sent) - 1]
    for request in sent:
        proof = request.headers["DPoP"]
        nonce = jwt.decode(proof, options={"verify_signature": False}).get("nonce")
        check_proof(proof, "POST", MCP_URL, token=request.headers["Authorization"].removeprefix("DPoP "), nonce=nonce)
        assert nonce is None or nonce in nonces

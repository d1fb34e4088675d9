"""TokenManager with a DPoP key against a respx token endpoint that binds tokens to the proof's key (RFC 9449)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from client import DPoPKey, RetryPolicy, TokenConfigError, TokenManager, TokenRejectedError, TokenResponseError
from tests.client.dpop_support import BindingIdP, check_proof, token_jkt

TOKEN_URL = "https://idp.example.com/oauth/token"
CLIENT_ID = "client-abc"
SECRET = "s3cr3t-VALUE-9f8e7d"


class NoSleep:
    async def __call__(self, delay: float) -> None:
        return None


@pytest.fixture
def idp() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


@pytest.fixture(scope="module")
def key() -> DPoPKey:
    return DPoPKey.generate()


def manager_for(key: DPoPKey, **options: Any) -> TokenManager:
    return TokenManager(
        CLIENT_ID,
        SECRET,
        token_url=TOKEN_URL,
        dpop=key,
        sleep=NoSleep(),
        retry=RetryPolicy(jitter=lambda: 0),
        **options,
    )


async def test_the_token_request_carries_a_proof_and_the_token_is_bound_to_the_key(idp, key) -> None:
    issuer = BindingIdP(TOKEN_URL)
    route = idp.post(TOKEN_URL).mock(side_effect=issuer)

    token = await manager_for(key).get_token()

    assert route.call_count == 1
    assert token == issuer.issued[0]
    assert token_jkt(token) == key.thumbprint
    proof = route.calls[0].request.headers["DPoP"]
    _, claims = check_proof(proof, "POST", TOKEN_URL)
    assert "ath" not in claims
    assert route.calls[0].request.headers["Authorization"].startswith("Basic ")  # client authentication as before


async def test_use_dpop_nonce_at_the_idp_is_retried_once_with_the_nonce(idp, key) -> None:
    issuer = BindingIdP(TOKEN_URL, nonces=["idp-nonce-1"], demand_nonce=1)
    route = idp.post(TOKEN_URL).mock(side_effect=issuer)
    manager = manager_for(key)

    token = await manager.get_token()

    assert route.call_count == 2
    assert token_jkt(token) == key.thumbprint
    assert [claims.get("nonce") for claims in issuer.proofs] == [None, "idp-nonce-1"]
    assert issuer.proofs[0]["jti"] != issuer.proofs[1]["jti"]
    # The nonce is remembered for the IdP: the next token request carries it from the start.
    await manager.get_token(force_refresh=True)
    assert route.call_count == 3
    assert issuer.proofs[2]["nonce"] == "idp-nonce-1"


async def test_a_second_use_dpop_nonce_is_a_clear_error_not_a_loop(idp, key) -> None:
    issuer = BindingIdP(TOKEN_URL, nonces=["n-1", "n-2", "n-3"], demand_nonce=5)
    route = idp.post(TOKEN_URL).mock(side_effect=issuer)

    with pytest.raises(TokenRejectedError, match="asked for a new DPoP nonce again after a retry") as caught:
        await manager_for(key).get_token()

    assert route.call_count == 2
    assert caught.value.error == "use_dpop_nonce"
    assert caught.value.status == 400


async def test_use_dpop_nonce_without_a_usable_nonce_is_not_retried(idp, key) -> None:
    route = idp.post(TOKEN_URL).mock(
        return_value=httpx.Response(400, json={"error": "use_dpop_nonce"}, headers={"DPoP-Nonce": "has space"})
    )

    with pytest.raises(TokenRejectedError, match="refused the token request: use_dpop_nonce") as caught:
        await manager_for(key).get_token()

    assert route.call_count == 1
    assert caught.value.error == "use_dpop_nonce"


async def test_a_nonce_sent_with_a_token_is_used_for_the_next_request(idp, key) -> None:
    issuer = BindingIdP(TOKEN_URL)

    def with_nonce(request: httpx.Request) -> httpx.Response:
        response = issuer(request)
        response.headers["DPoP-Nonce"] = f"next-{len(issuer.proofs)}"
        issuer.current_nonce = f"next-{len(issuer.proofs)}"
        return response

    idp.post(TOKEN_URL).mock(side_effect=with_nonce)
    manager = manager_for(key)

    await manager.get_token()
    await manager.get_token(force_refresh=True)

    assert [claims.get("nonce") for claims in issuer.proofs] == [None, "next-1"]


async def test_each_retry_after_a_5xx_gets_a_new_proof(idp, key) -> None:
    issuer = BindingIdP(TOKEN_URL)
    route = idp.post(TOKEN_URL).mock(side_effect=[httpx.Response(503), httpx.Response(502), issuer])

    await manager_for(key).get_token()

    jtis = {check_proof(call.request.headers["DPoP"], "POST", TOKEN_URL)[1]["jti"] for call in route.calls}
    assert len(jtis) == 3


@pytest.mark.parametrize(
    ("token_type", "shown"), [("Bearer", "'Bearer'"), ("bearer", "'bearer'"), (None, "no token_type")]
)
async def test_a_bearer_answer_to_a_dpop_request_is_refused(idp, key, token_type, shown) -> None:
    issuer = BindingIdP(TOKEN_URL)

    def answer(request: httpx.Request) -> httpx.Response:
        body = issuer(request).json()
        if token_type is None:
            del body["token_type"]
        else:
            body["token_type"] = token_type
        return httpx.Response(200, json=body)

    idp.post(TOKEN_URL).mock(side_effect=answer)

    with pytest.raises(TokenResponseError) as caught:
        await manager_for(key).get_token()

    message = str(caught.value)
    assert f"answered the DPoP request with {shown}, not a DPoP-bound token" in message
    assert "turn DPoP off to use Bearer tokens" in message
    assert issuer.issued[0] not in message


async def test_the_token_type_is_case_insensitive(idp, key) -> None:
    issuer = BindingIdP(TOKEN_URL, token_type="dpop")
    idp.post(TOKEN_URL).mock(side_effect=issuer)
    assert await manager_for(key).get_token() == issuer.issued[0]


async def test_without_dpop_no_proof_is_sent_and_a_dpop_answer_is_refused(idp) -> None:
    route = idp.post(TOKEN_URL).mock(
        return_value=httpx.Response(200, json={"access_token": "t", "token_type": "DPoP", "expires_in": 60})
    )

    with pytest.raises(TokenResponseError, match="only Bearer tokens are supported without DPoP"):
        await TokenManager(CLIENT_ID, SECRET, token_url=TOKEN_URL).get_token()
    assert "DPoP" not in route.calls[0].request.headers


async def test_repr_and_logs_show_the_thumbprint_never_the_token_or_secret(idp, key, caplog) -> None:
    issuer = BindingIdP(TOKEN_URL, nonces=["n-1"], demand_nonce=1)
    route = idp.post(TOKEN_URL).mock(side_effect=issuer)
    manager = manager_for(key)

    with caplog.at_level(logging.DEBUG):
        token = await manager.get_token()

    assert key.thumbprint in repr(manager)
    assert "DPoP-bound access token" in caplog.text
    proofs = [call.request.headers["DPoP"] for call in route.calls]
    for text in (repr(manager), str(manager), caplog.text):
        assert SECRET not in text
        assert token not in text
        assert all(proof not in text for proof in proofs)


def test_a_dpop_argument_must_be_a_key() -> None:
    with pytest.raises(TokenConfigError, match="dpop: expected a DPoPKey"):
        TokenManager(CLIENT_ID, SECRET, token_url=TOKEN_URL, dpop="ES256")  # type: ignore[arg-type]

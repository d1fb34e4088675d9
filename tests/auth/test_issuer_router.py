"""Several issuers: a token is verified only by the issuer its exact iss names, with that issuer's own key set.

Two test IdPs with real keys, their JWKS served by respx: A (the usual test IdP) and B (a partner IdP).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auth.errors import InvalidToken, KeySetUnavailable, Reason
from auth.issuer_router import NO_ISSUER, OTHER_ISSUER, IssuerRouter, unverified_issuer
from settings import Settings, load_settings
from tests.support import ISSUER, ISSUER_B, JWKS_B, JWKS_URI, SERVER_URL, Signer, make_claims
from web.app import build_router

TENANT = "6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
ENTRA_KEYS = "https://login.microsoftonline.com/organizations/discovery/v2.0/keys"


def two_issuers(tmp_path: Path, **extra_b: Any) -> Settings:
    more = "".join(f"{key} = {json.dumps(value)}\n" for key, value in extra_b.items())
    text = (
        f'[[issuer]]\nissuer = "{ISSUER}"\njwks_uri = "{JWKS_URI}"\n\n'
        f'[[issuer]]\nissuer = "{ISSUER_B}"\njwks_uri = "{JWKS_B}"\n{more}'
    )
    path = tmp_path / "issuers.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(oauth_issuers_file=str(path), mcp_server_url=SERVER_URL, _env_file=None)


@pytest.fixture
async def router(tmp_path: Path, idps: respx.MockRouter) -> AsyncIterator[IssuerRouter]:
    built = build_router(two_issuers(tmp_path, jwks_refresh_cooldown_seconds=0))  # A keeps the default 10 s
    yield built
    for keys in built.key_sets.values():
        await keys.aclose()


async def test_each_issuers_tokens_are_accepted_with_its_own_keys(router, idps, signer, signer_b):
    a = await router.verify(signer.token(sub="alice"))
    b = await router.verify(signer_b.token(iss=ISSUER_B, sub="bob"))
    assert (a.issuer, a.subject, b.issuer, b.subject) == (ISSUER, "alice", ISSUER_B, "bob")
    assert (idps["a"].call_count, idps["b"].call_count) == (1, 1)


async def test_a_key_of_issuer_b_never_verifies_a_token_that_says_issuer_a(
    router, idps, signer_b, second_rsa_private_key
):
    with pytest.raises(InvalidToken) as unknown_kid:
        await router.verify(signer_b.token(iss=ISSUER))
    assert unknown_kid.value.reason is Reason.KEY_UNKNOWN
    # B's key under a kid A also uses: A's key for that kid checks the signature, and refuses it.
    same_kid = Signer(second_rsa_private_key, "rsa-1", "RS256")
    with pytest.raises(InvalidToken) as bad_signature:
        await router.verify(same_kid.token(iss=ISSUER))
    assert bad_signature.value.reason is Reason.BAD_SIGNATURE
    assert idps["b"].call_count == 0  # B's keys were never even fetched


async def test_a_token_of_issuer_a_signed_by_a_is_refused_when_it_claims_b(router, signer):
    with pytest.raises(InvalidToken) as caught:
        await router.verify(signer.token(iss=ISSUER_B))
    assert caught.value.reason is Reason.KEY_UNKNOWN


def signed_payload(signer: Signer, payload: dict[str, Any]) -> str:
    """A token with claims PyJWT would refuse to encode (a non-string iss), signed with the signer's real key."""
    return jwt.PyJWS().encode(json.dumps(payload).encode(), signer.private_key, "RS256", {"kid": signer.kid})


@pytest.mark.parametrize(
    ("iss", "reason"),
    [
        ("https://evil.example.com/", Reason.ISSUER),
        (ISSUER.rstrip("/"), Reason.ISSUER),  # exact: no trailing-slash leniency
        ([ISSUER], Reason.CLAIMS_MALFORMED),
        (None, Reason.MISSING_CLAIM),
    ],
)
async def test_a_token_naming_no_trusted_issuer_is_refused_without_any_fetch(router, idps, signer, iss, reason):
    claims = make_claims(iss=iss, drop=("iss",) if iss is None else ())
    token = signed_payload(signer, claims)
    with pytest.raises(InvalidToken) as caught:
        await router.verify(token)
    assert caught.value.reason is reason and caught.value.status == 401
    assert idps.calls.call_count == 0
    assert router.issuer_label(token) == (OTHER_ISSUER if reason is Reason.ISSUER else NO_ISSUER)


async def test_the_unknown_issuer_is_explained_with_the_trusted_ones(router, signer):
    token = signer.token(iss=ISSUER.rstrip("/"))
    with pytest.raises(InvalidToken) as caught:
        await router.verify(token)
    explanation = router.explain(token, caught.value)
    assert "they differ only by a trailing slash" in explanation and ISSUER_B in explanation
    assert token not in explanation


async def test_a_refusal_is_explained_by_the_rules_of_the_issuer_the_token_names(router, signer_b):
    token = signer_b.token(iss=ISSUER_B, aud="https://other.example.com/api")
    with pytest.raises(InvalidToken) as caught:
        await router.verify(token)
    assert caught.value.reason is Reason.AUDIENCE
    assert SERVER_URL in router.explain(token, caught.value)


@pytest.mark.parametrize("token", ["opaque-token-from-an-introspecting-idp", "a.b.c.d.e", "a.b", "x" * 20_000])
async def test_a_token_that_is_no_jwt_is_refused_as_before(router, idps, token):
    with pytest.raises(InvalidToken) as caught:
        await router.verify(token)
    assert caught.value.reason in (Reason.NOT_JWT, Reason.TOO_LARGE)
    assert idps.calls.call_count == 0
    assert router.issuer_label(token) == NO_ISSUER


async def test_the_issuer_label_is_bounded_to_the_trusted_issuers(router, signer, signer_b):
    assert router.issuer_label(signer.token()) == ISSUER
    assert router.issuer_label(signer_b.token(iss=ISSUER_B)) == ISSUER_B
    assert router.issuer_label(signer.token(iss="https://evil.example.com/")) == OTHER_ISSUER
    assert router.issuer_label("") == router.issuer_label("garbage") == NO_ISSUER


async def test_one_issuers_failing_idp_leaves_the_other_unaffected(router, idps, signer, signer_b):
    idps["a"].mock(return_value=httpx.Response(500))
    with pytest.raises(KeySetUnavailable):
        await router.verify(signer.token())
    assert (await router.verify(signer_b.token(iss=ISSUER_B))).issuer == ISSUER_B
    # A is in its cooldown; B is not: B's unknown kid (a rotation) is fetched at once.
    rotated = Signer(signer.private_key, "rsa-b-next", "RS256")
    idps["b"].mock(return_value=httpx.Response(200, json={"keys": [signer_b.jwk(), rotated.jwk()]}))
    assert (await router.verify(rotated.token(iss=ISSUER_B))).issuer == ISSUER_B
    with pytest.raises(KeySetUnavailable):
        await router.verify(signer.token())
    assert (idps["a"].call_count, idps["b"].call_count) == (1, 2)


async def test_one_issuers_hanging_idp_does_not_hold_the_others_tokens(router, idps, signer, signer_b):
    asked, released = asyncio.Event(), asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        asked.set()
        await released.wait()
        return httpx.Response(500)

    idps["a"].mock(side_effect=hang)
    waiting = asyncio.ensure_future(router.verify(signer.token()))
    await asyncio.wait_for(asked.wait(), timeout=10)  # A's IdP now holds A's fetch
    assert not waiting.done()
    # A bound so a regression fails instead of hanging the suite; B needs no wait on A at all.
    principal = await asyncio.wait_for(router.verify(signer_b.token(iss=ISSUER_B)), timeout=10)
    assert principal.issuer == ISSUER_B and not waiting.done()
    released.set()
    with pytest.raises(KeySetUnavailable):
        await waiting


async def test_an_entra_multi_tenant_table_routes_each_allowed_tenants_issuers(tmp_path, signer, signer_b):
    text = (
        f'[[issuer]]\nissuer = "{ISSUER}"\njwks_uri = "{JWKS_URI}"\n\n'
        f'[[issuer]]\nprovider = "entra"\ntenant_id = "organizations"\nallowed_tenants = ["{TENANT}"]\n'
    )
    (tmp_path / "issuers.toml").write_text(text, encoding="utf-8")
    router = build_router(
        load_settings(oauth_issuers_file=str(tmp_path / "issuers.toml"), mcp_server_url=SERVER_URL, _env_file=None)
    )
    with respx.mock(assert_all_mocked=True) as mock:
        mock.get(ENTRA_KEYS).mock(return_value=httpx.Response(200, json={"keys": [signer_b.jwk()]}))
        for iss in (f"https://login.microsoftonline.com/{TENANT}/v2.0", f"https://sts.windows.net/{TENANT}/"):
            principal = await router.verify(signer_b.token(iss=iss, tid=TENANT))
            assert principal.issuer == iss
        other_tenant = "11111111-2222-4333-8444-555555555555"
        with pytest.raises(InvalidToken) as caught:
            await router.verify(signer_b.token(iss=f"https://login.microsoftonline.com/{other_tenant}/v2.0"))
        assert caught.value.reason is Reason.ISSUER
        # The tid must still belong to the iss: the routing iss alone decides nothing.
        with pytest.raises(InvalidToken) as mixed:
            await router.verify(signer_b.token(iss=f"https://sts.windows.net/{TENANT}/", tid=other_tenant))
        assert mixed.value.reason is Reason.ISSUER
    for keys in router.key_sets.values():
        await keys.aclose()


# --- the unverified iss: any input gives an issuer or a refusal ---------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
PAYLOADS = (
    st.dictionaries(st.sampled_from(["iss", "sub", "x"]) | st.text(max_size=5), JSON_VALUES, max_size=4).map(
        lambda doc: b64(json.dumps(doc).encode())
    )
    | st.binary(max_size=64).map(b64)
    | st.text(max_size=64)
)
TOKENS = st.text(max_size=200) | st.tuples(st.text(max_size=20), PAYLOADS, st.text(max_size=20)).map(".".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=TOKENS)
def test_any_token_gives_its_issuer_or_a_refusal(token):
    try:
        issuer = unverified_issuer(token, 16384)
    except InvalidToken as exc:
        assert exc.status == 401 and exc.error == "invalid_token"
    else:
        assert isinstance(issuer, str)


def test_deeply_nested_or_huge_payloads_are_malformed():
    for payload in (b"[" * 100_000 + b"]" * 100_000, b'{"iss": ' + b"9" * 5000 + b"}"):
        with pytest.raises(InvalidToken) as caught:
            unverified_issuer(f"e30.{b64(payload)}.sig", 10**7)
        assert caught.value.reason is Reason.MALFORMED

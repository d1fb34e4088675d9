"""Discovery of the IdP's jwks_uri: OIDC first, RFC 8414 fallback, exact issuer match, safe jwks_uri only."""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from auth.discovery import DiscoveredJWKSUri, check_jwks_uri, discover_jwks_uri, metadata_candidates
from auth.errors import KeySetUnavailable
from auth.http_fetch import FetchError
from auth.jwks_cache import JWKSCache
from tests.support import DISCOVERY_URL, ISSUER, JWKS_URI, Clock, FakeIdP

OKTA_ISSUER = "https://org.okta.example/oauth2/default"
OKTA_OIDC = "https://org.okta.example/oauth2/default/.well-known/openid-configuration"
OKTA_RFC8414 = "https://org.okta.example/.well-known/oauth-authorization-server/oauth2/default"
OKTA_JWKS = "https://org.okta.example/oauth2/default/v1/keys"


# Building a TLS context costs ~50 ms per httpx client; the mocked IdP never uses it, so share one.
TLS = ssl.create_default_context()


@pytest.fixture(autouse=True)
def _shared_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpx, "AsyncClient", functools.partial(httpx.AsyncClient, verify=TLS))


@pytest.fixture
async def http() -> AsyncIterator[tuple[respx.MockRouter, httpx.AsyncClient]]:
    with respx.mock(assert_all_called=False) as router:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            yield router, client


def metadata(issuer: str = OKTA_ISSUER, jwks_uri: object = OKTA_JWKS) -> httpx.Response:
    return httpx.Response(200, json={"issuer": issuer, "jwks_uri": jwks_uri, "token_endpoint": f"{issuer}/v1/token"})


# --- candidate URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "expected"),
    [
        (
            "https://idp.example.com/",
            [
                "https://idp.example.com/.well-known/openid-configuration",
                "https://idp.example.com/.well-known/oauth-authorization-server",
            ],
        ),
        (
            "https://idp.example.com",
            [
                "https://idp.example.com/.well-known/openid-configuration",
                "https://idp.example.com/.well-known/oauth-authorization-server",
            ],
        ),
        (OKTA_ISSUER, [OKTA_OIDC, OKTA_RFC8414]),
        (
            "https://sts.windows.example/tenant-id/",
            [
                "https://sts.windows.example/tenant-id/.well-known/openid-configuration",
                "https://sts.windows.example/.well-known/oauth-authorization-server/tenant-id",
            ],
        ),
        (
            "http://127.0.0.1:9000/realms/dev",
            [
                "http://127.0.0.1:9000/realms/dev/.well-known/openid-configuration",
                "http://127.0.0.1:9000/.well-known/oauth-authorization-server/realms/dev",
            ],
        ),
    ],
    ids=["origin-slash", "origin", "path", "path-slash", "loopback-port"],
)
def test_metadata_candidates_oidc_then_rfc8414(issuer, expected):
    assert metadata_candidates(issuer, None) == expected


def test_explicit_well_known_url_is_the_only_candidate():
    url = "https://idp.example.com/custom/metadata.json"
    assert metadata_candidates(ISSUER, url) == [url]


# --- discover_jwks_uri ---------------------------------------------------------------------------


async def test_oidc_document_is_used_first(http):
    router, client = http
    oidc = router.get(OKTA_OIDC).mock(return_value=metadata())
    rfc8414 = router.get(OKTA_RFC8414).mock(return_value=metadata(jwks_uri="https://other.example/keys"))
    assert await discover_jwks_uri(client, OKTA_ISSUER, None, timeout=1) == OKTA_JWKS
    assert oidc.call_count == 1
    assert not rfc8414.called


OIDC_FAILURES = {
    "404": {"return_value": httpx.Response(404)},
    "500": {"return_value": httpx.Response(500)},
    "not-json": {"return_value": httpx.Response(200, text="<html/>")},
    "connect-error": {"side_effect": httpx.ConnectError("refused")},
    "redirect": {"return_value": httpx.Response(302, headers={"Location": OKTA_RFC8414})},
    "other-issuer": {"return_value": metadata(issuer="https://evil.example/oauth2/default")},
}


@pytest.mark.parametrize("failure", OIDC_FAILURES.values(), ids=OIDC_FAILURES.keys())
async def test_rfc8414_document_is_the_fallback(http, failure):
    router, client = http
    oidc = router.get(OKTA_OIDC).mock(**failure)
    rfc8414 = router.get(OKTA_RFC8414).mock(return_value=metadata())
    assert await discover_jwks_uri(client, OKTA_ISSUER, None, timeout=1) == OKTA_JWKS
    assert oidc.call_count == 1 or failure.get("side_effect")
    assert rfc8414.call_count == 1


async def test_explicit_well_known_url_is_the_only_url_tried(http):
    router, client = http
    well_known = "https://idp.example.com/tenant/meta.json"
    custom = router.get(well_known).mock(return_value=metadata(issuer=ISSUER, jwks_uri=JWKS_URI))
    oidc = router.get(DISCOVERY_URL).mock(return_value=metadata(issuer=ISSUER, jwks_uri="https://x.example/k"))
    rfc8414 = router.get("https://idp.example.com/.well-known/oauth-authorization-server").mock(
        return_value=metadata(issuer=ISSUER, jwks_uri="https://x.example/k")
    )
    assert await discover_jwks_uri(client, ISSUER, well_known, timeout=1) == JWKS_URI

    custom.mock(return_value=httpx.Response(404))
    with pytest.raises(FetchError, match="answered HTTP 404"):
        await discover_jwks_uri(client, ISSUER, well_known, timeout=1)
    assert custom.call_count == 2
    assert not oidc.called
    assert not rfc8414.called


@pytest.mark.parametrize(
    ("configured", "published"),
    [
        ("https://idp.example.com/", "https://idp.example.com"),
        ("https://idp.example.com", "https://idp.example.com/"),
        (OKTA_ISSUER, OKTA_ISSUER + "/"),
        (OKTA_ISSUER, "HTTPS://ORG.OKTA.EXAMPLE/oauth2/default"),
    ],
    ids=["slash-configured", "slash-published", "path-slash", "case"],
)
async def test_issuer_mismatch_is_refused_naming_both(http, configured, published):
    router, client = http
    for url in metadata_candidates(configured, None):
        router.get(url).mock(return_value=metadata(issuer=published))
    with pytest.raises(FetchError) as raised:
        await discover_jwks_uri(client, configured, None, timeout=1)
    message = str(raised.value)
    assert repr(configured) in message
    assert repr(published) in message
    assert "trailing slash" in message


async def test_document_without_issuer_is_refused(http):
    router, client = http
    router.get(OKTA_OIDC).mock(return_value=httpx.Response(200, json={"jwks_uri": OKTA_JWKS}))
    router.get(OKTA_RFC8414).mock(return_value=httpx.Response(404))
    with pytest.raises(FetchError, match="names issuer None"):
        await discover_jwks_uri(client, OKTA_ISSUER, None, timeout=1)


async def test_every_candidate_failing_names_each_problem(http):
    router, client = http
    router.get(OKTA_OIDC).mock(return_value=httpx.Response(404))
    router.get(OKTA_RFC8414).mock(return_value=httpx.Response(500))
    with pytest.raises(FetchError) as raised:
        await discover_jwks_uri(client, OKTA_ISSUER, None, timeout=1)
    message = str(raised.value)
    assert message.startswith("discovery failed: ")
    assert f"{OKTA_OIDC} answered HTTP 404" in message
    assert f"{OKTA_RFC8414} answered HTTP 500" in message


async def test_hanging_discovery_times_out(http):
    router, client = http

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return metadata()

    router.get(OKTA_OIDC).mock(side_effect=hang)
    router.get(OKTA_RFC8414).mock(side_effect=hang)
    with pytest.raises(FetchError, match=r"timed out after 0\.1s"):
        await asyncio.wait_for(discover_jwks_uri(client, OKTA_ISSUER, None, timeout=0.1), 2)


@pytest.mark.parametrize(
    ("jwks_uri", "message"),
    [
        (None, "has no jwks_uri"),
        (42, "has no jwks_uri"),
        (["https://org.okta.example/keys"], "has no jwks_uri"),
        ("http://org.okta.example/keys", "https required"),
        ("http://10.0.0.5/keys", "https required"),
        ("ftp://org.okta.example/keys", "https required"),
        ("/oauth2/default/v1/keys", "https required"),
        ("https:///keys", "https required"),
        ("", "https required"),
    ],
)
async def test_unusable_jwks_uri_is_refused(http, jwks_uri, message):
    router, client = http
    router.get(OKTA_OIDC).mock(return_value=metadata(jwks_uri=jwks_uri))
    router.get(OKTA_RFC8414).mock(return_value=metadata())
    with pytest.raises(FetchError, match=message) as raised:
        await discover_jwks_uri(client, OKTA_ISSUER, None, timeout=1)
    assert OKTA_OIDC in str(raised.value)


@pytest.mark.parametrize(
    "jwks_uri",
    ["https://idp.example.com/keys", "http://127.0.0.1:9000/keys", "http://localhost/keys", "http://[::1]:8080/k"],
)
def test_https_or_loopback_http_jwks_uri_is_accepted(jwks_uri):
    assert check_jwks_uri(jwks_uri, "metadata") == jwks_uri


# --- DiscoveredJWKSUri with the JWKS cache -------------------------------------------------------


async def test_discovered_uri_is_cached_across_jwks_fetches(idp: FakeIdP, signer, rotated_signer):
    clock = Clock()
    cache = JWKSCache(DiscoveredJWKSUri(ISSUER, None, timeout=1), cooldown=10, clock=clock)
    try:
        assert (await cache.get_key("rsa-1", "RS256")).kid == "rsa-1"
        idp.publish(signer, rotated_signer)
        clock.now += 10
        assert (await cache.get_key("rsa-2", "RS256")).kid == "rsa-2"
    finally:
        await cache.aclose()
    assert idp.jwks_fetches == 2
    assert idp.discovery_route.call_count == 1


async def test_failed_discovery_is_retried_not_cached(idp: FakeIdP):
    idp.discovery_route.mock(return_value=httpx.Response(503))
    rfc8414 = idp.router.get("https://idp.example.com/.well-known/oauth-authorization-server").mock(
        return_value=httpx.Response(404)
    )
    clock = Clock()
    cache = JWKSCache(DiscoveredJWKSUri(ISSUER, None, timeout=1), cooldown=10, clock=clock)
    try:
        with pytest.raises(KeySetUnavailable):
            await cache.get_key("rsa-1", "RS256")
        assert (cache.fetch_count, cache.failure_count) == (1, 1)
        assert idp.jwks_fetches == 0

        idp.discovery_route.mock(return_value=httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": JWKS_URI}))
        clock.now += 10
        assert (await cache.get_key("rsa-1", "RS256")).kid == "rsa-1"
    finally:
        await cache.aclose()
    assert idp.discovery_route.call_count == 2
    assert rfc8414.call_count == 1
    assert cache.failure_count == 1


async def test_discovery_refusing_the_issuer_leaves_the_cache_unavailable(idp: FakeIdP):
    idp.discovery_route.mock(
        return_value=httpx.Response(200, json={"issuer": ISSUER.rstrip("/"), "jwks_uri": JWKS_URI})
    )
    idp.router.get("https://idp.example.com/.well-known/oauth-authorization-server").mock(
        return_value=httpx.Response(404)
    )
    cache = JWKSCache(DiscoveredJWKSUri(ISSUER, None, timeout=1), clock=Clock())
    try:
        with pytest.raises(KeySetUnavailable):
            await cache.get_key("rsa-1", "RS256")
    finally:
        await cache.aclose()
    assert idp.jwks_fetches == 0
    assert not cache.ready

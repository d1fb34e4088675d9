"""Fixtures for the auth tests: the fake IdP's key set, fetched for real through respx."""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator

import httpx
import pytest

from auth.jwks_cache import JWKSCache
from tests.support import JWKS_URI, FakeIdP


@pytest.fixture(scope="module")
def tls_context() -> ssl.SSLContext:
    """One SSL context for every client a module makes (building one per client is slow)."""
    return httpx.create_ssl_context()


@pytest.fixture
async def keys(idp: FakeIdP, tls_context: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[JWKSCache]:
    """The IdP's key set with no refresh cooldown. Some modules define a `keys` of their own."""
    monkeypatch.setattr(httpx, "AsyncClient", functools.partial(httpx.AsyncClient, verify=tls_context))
    cache = JWKSCache(JWKS_URI, cooldown=0)
    yield cache
    await cache.aclose()

"""Finds the IdP's JWKS URL (and introspection endpoint) from its discovery document (OIDC or RFC 8414)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import httpx

from auth.http_fetch import FetchError, fetch_json_object
from settings import is_loopback_host


class IssuerMismatch(FetchError):
    """A discovery document was found but names another issuer: OAUTH_ISSUER is likely wrong."""


def metadata_candidates(issuer: str, well_known_url: str | None) -> list[str]:
    """The configured metadata URL, else the OIDC location then the RFC 8414 one."""
    if well_known_url:
        return [well_known_url]
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    oidc = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    rfc8414 = urlunsplit(
        (
            parts.scheme,
            parts.netloc,
            f"/.well-known/oauth-authorization-server{path}",
            "",
            "",
        )
    )
    return [oidc, rfc8414]


def check_jwks_uri(uri: object, source: str, name: str = "jwks_uri") -> str:
    """A URL from the discovery document (`name`) the server may call: https, or http on loopback."""
    if not isinstance(uri, str):
        raise FetchError(f"{source} has no {name}")
    parts = urlsplit(uri)
    secure = parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname or ""))
    if not parts.hostname or not secure:
        raise FetchError(f"{source} has an unusable {name} (https required)")
    return uri


async def discover_jwks_uri(
    client: httpx.AsyncClient,
    issuer: str,
    well_known_url: str | None,
    *,
    timeout: float,
    name: str = "jwks_uri",
) -> str:
    """The `name` endpoint (jwks_uri, introspection_endpoint) of the first discovery document that names exactly
    our issuer."""
    problems = []
    mismatch = False
    for url in metadata_candidates(issuer, well_known_url):
        try:
            document = await fetch_json_object(client, url, timeout=timeout)
        except FetchError as exc:
            problems.append(str(exc))
            continue
        if document.get("issuer") != issuer:
            mismatch = True
            problems.append(
                f"{url} names issuer {document.get('issuer')!r}, not OAUTH_ISSUER {issuer!r} "
                "(they must match exactly, trailing slash included)"
            )
            continue
        return check_jwks_uri(document.get(name), url, name)
    raise (IssuerMismatch if mismatch else FetchError)("discovery failed: " + "; ".join(problems))


class DiscoveredJWKSUri:
    """Resolves the jwks_uri (or another endpoint `name`) through discovery on first use and remembers it."""

    def __init__(self, issuer: str, well_known_url: str | None, *, timeout: float, name: str = "jwks_uri") -> None:
        self._issuer = issuer
        self._well_known_url = well_known_url
        self._timeout = timeout
        self._name = name
        self._uri: str | None = None

    async def __call__(self, client: httpx.AsyncClient) -> str:
        if self._uri is None:
            self._uri = await discover_jwks_uri(
                client, self._issuer, self._well_known_url, timeout=self._timeout, name=self._name
            )
        return self._uri

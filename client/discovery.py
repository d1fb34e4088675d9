"""Where to send the secret: endpoint URL checks, and the token endpoint found from the issuer's metadata."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

import httpx

from client.errors import DiscoveryError, TokenError
from client.http_retry import Redact, RetryPolicy, Sleep, exchange, one_line


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint_problem(url: str, *, allow_query: bool = True) -> str | None:
    """Why `url` must not receive client credentials, or None if it may: https, or http on loopback only."""
    if any(ch.isspace() for ch in url):
        return "expected a URL without whitespace"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected an absolute https:// URL"
    if parts.username is not None or parts.password is not None:
        return "expected no credentials inside the URL"
    if parts.fragment:
        return "expected no fragment"
    if parts.query and not allow_query:
        return "expected no query"
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        return "expected https:// (plain http is allowed only on loopback)"
    return None


def metadata_urls(issuer: str) -> list[str]:
    """OpenID Connect discovery first, then RFC 8414 (well-known segment inserted before the issuer's path)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    oidc = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    rfc8414 = urlunsplit((parts.scheme, parts.netloc, f"/.well-known/oauth-authorization-server{path}", "", ""))
    return [oidc, rfc8414]


async def discover_token_endpoint(
    client: httpx.AsyncClient,
    issuer: str,
    *,
    policy: RetryPolicy,
    sleep: Sleep,
    timeout: float,
    redact: Redact,
) -> str:
    """The `token_endpoint` of the first metadata document whose `issuer` equals `issuer` exactly."""
    notes: list[str] = []
    for url in metadata_urls(issuer):
        request = client.build_request("GET", url, headers={"Accept": "application/json"})
        try:
            answer = await exchange(
                client, request, what=f"discovery {url}", policy=policy, sleep=sleep, timeout=timeout, redact=redact
            )
        except TokenError as exc:
            raise DiscoveryError(f"cannot read the metadata of issuer {issuer}: {exc}") from None
        if answer.status != 200:
            notes.append(f"{url} answered HTTP {answer.status}")
            continue
        document = answer.json_object()
        if document is None:
            notes.append(f"{url} is not a JSON object")
            continue
        if document.get("issuer") != issuer:
            found = one_line(repr(document.get("issuer")), redact, limit=120)
            notes.append(
                f"{url} names issuer {found}, not {issuer!r} (issuers must match exactly, trailing slash included)"
            )
            continue
        endpoint = document.get("token_endpoint")
        problem = endpoint_problem(endpoint) if isinstance(endpoint, str) else "it is missing"
        if problem:
            raise DiscoveryError(f"{url} has no usable token_endpoint: {problem}")
        return endpoint
    raise DiscoveryError(f"no usable metadata for issuer {issuer}: {'; '.join(notes)}")

"""Bounded JSON fetches from the IdP (GET a document, or POST a form to introspection): total timeout, size cap,
no redirects followed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

MAX_DOCUMENT_BYTES = 512 * 1024
# The global provider's: a no-op until tracing is switched on (web.tracing); IdP fetches are rare, never per call.
_tracer = trace.get_tracer(__name__)


class FetchError(Exception):
    """The document could not be fetched or is not a JSON object; the message names the URL."""


async def fetch_json_object(
    client: httpx.AsyncClient,
    url: str,
    *,
    timeout: float,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON object at `url` (discovery or JWKS; with a `form`, POSTed to it: introspection), in a CLIENT span
    when tracing is on. The form and headers may hold a token or a secret: they never reach a message or span."""
    method = "GET" if form is None else "POST"
    attributes = {"http.request.method": method, "url.full": url}  # the IdP's public endpoint URL
    with _tracer.start_as_current_span(
        method, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            return await _fetch_json_object(
                client, url, timeout=timeout, max_bytes=max_bytes, form=form, headers=headers or {}
            )
        except FetchError:
            span.set_attribute("error.type", FetchError.__name__)
            span.set_status(StatusCode.ERROR)
            raise


async def _fetch_json_object(
    client: httpx.AsyncClient,
    url: str,
    *,
    timeout: float,
    max_bytes: int,
    form: Mapping[str, str] | None,
    headers: Mapping[str, str],
) -> dict[str, Any]:
    method = "GET" if form is None else "POST"
    try:
        async with asyncio.timeout(timeout):
            request_headers = {"Accept": "application/json", **headers}
            async with client.stream(method, url, headers=request_headers, data=form) as response:
                if response.status_code != 200:
                    hint = " (redirects are not followed)" if response.is_redirect else ""
                    raise FetchError(f"{method} {url} answered HTTP {response.status_code}{hint}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(f"{method} {url}: document larger than {max_bytes} bytes")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchError(f"{method} {url}: document larger than {max_bytes} bytes")
    except TimeoutError:
        raise FetchError(f"{method} {url} timed out after {timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{method} {url} failed: {type(exc).__name__}") from None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise FetchError(f"{method} {url}: response is not JSON") from None
    if not isinstance(document, dict):
        raise FetchError(f"{method} {url}: expected a JSON object")
    return document

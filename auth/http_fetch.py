"""Bounded JSON fetches from the IdP: total timeout, size cap, no redirects followed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

MAX_DOCUMENT_BYTES = 512 * 1024


class FetchError(Exception):
    """The document could not be fetched or is not a JSON object; the message names the URL."""


async def fetch_json_object(
    client: httpx.AsyncClient,
    url: str,
    *,
    timeout: float,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> dict[str, Any]:
    try:
        async with asyncio.timeout(timeout):
            async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    hint = " (redirects are not followed)" if response.is_redirect else ""
                    raise FetchError(f"GET {url} answered HTTP {response.status_code}{hint}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(f"GET {url}: document larger than {max_bytes} bytes")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchError(f"GET {url}: document larger than {max_bytes} bytes")
    except TimeoutError:
        raise FetchError(f"GET {url} timed out after {timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"GET {url} failed: {type(exc).__name__}") from None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise FetchError(f"GET {url}: response is not JSON") from None
    if not isinstance(document, dict):
        raise FetchError(f"GET {url}: expected a JSON object")
    return document

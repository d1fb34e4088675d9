"""One HTTP exchange with the IdP: bounded body and time, transient failures retried with backoff and jitter."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from client.errors import TokenEndpointError, TokenResponseError

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Redact = Callable[[str], str]

MAX_BODY_BYTES = 256 * 1024
_NOT_RETRIED_5XX = frozenset({501, 505})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried. Every wait is bounded."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    # A Retry-After longer than this is not waited for: the failure is reported at once.
    max_retry_after: float = 30.0
    jitter: Callable[[], float] = random.random  # a fraction in [0, 1); not security-relevant

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.base_delay, self.max_delay, self.max_retry_after) < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, retry: int) -> float:
        """Wait before retry number `retry` (1, 2, ...): exponential, capped, with "equal jitter"."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return ceiling / 2 + self.jitter() * ceiling / 2


@dataclass(frozen=True)
class Answer:
    """A response read in full (within MAX_BODY_BYTES)."""

    status: int
    headers: httpx.Headers
    body: bytes

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None if it is anything else."""
        try:
            value = json.loads(self.body)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


def is_transient(status: int) -> bool:
    return status == 429 or (500 <= status <= 599 and status not in _NOT_RETRIED_5XX)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """RFC 9110 Retry-After: delay-seconds or an HTTP-date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def one_line(text: str, redact: Redact, limit: int = 200) -> str:
    """Untrusted text (an IdP's error_description, an exception message) made safe for one log or error line."""
    cleaned = " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
    cleaned = redact(cleaned)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


async def _read_bounded(response: httpx.Response, what: str) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise TokenResponseError(f"{what} sent more than {MAX_BODY_BYTES} bytes")
    return bytes(body)


async def _attempt(client: httpx.AsyncClient, request: httpx.Request, what: str, timeout: float) -> Answer:
    async with asyncio.timeout(timeout):
        response = await client.send(request, stream=True, follow_redirects=False)  # secrets never follow
        try:
            body = await _read_bounded(response, what)
        finally:
            await response.aclose()
    return Answer(response.status_code, response.headers, body)


async def exchange(
    client: httpx.AsyncClient,
    request: httpx.Request | Callable[[], httpx.Request],
    *,
    what: str,
    policy: RetryPolicy,
    sleep: Sleep,
    timeout: float,
    redact: Redact,
) -> Answer:
    """Send `request` until a non-transient answer; raise TokenEndpointError once the policy gives up.

    `request` may be a function building it: each attempt then gets a new one (a DPoP proof is single-use).
    """
    for attempt in range(1, policy.max_attempts + 1):
        status: int | None = None
        try:
            answer = await _attempt(client, request() if callable(request) else request, what, timeout)
        except TimeoutError:
            failure, wait = f"{what} did not answer within {timeout:g} s", policy.backoff(attempt)
        except httpx.TransportError as exc:
            detail = one_line(str(exc), redact)
            reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
            failure, wait = f"{what} is unreachable ({reason})", policy.backoff(attempt)
        except httpx.HTTPError as exc:
            raise TokenEndpointError(f"{what} failed: {type(exc).__name__}") from None
        else:
            if not is_transient(answer.status):
                return answer
            status = answer.status
            failure = f"{what} answered HTTP {status}"
            retry_after = retry_after_seconds(answer.headers.get("Retry-After"), datetime.now(UTC))
            if retry_after is not None and retry_after > policy.max_retry_after:
                raise TokenEndpointError(
                    f"{failure} and asks to retry after {retry_after:.0f} s, "
                    f"longer than the {policy.max_retry_after:g} s this client waits",
                    status=status,
                )
            wait = retry_after if retry_after is not None else policy.backoff(attempt)
        if attempt == policy.max_attempts:
            attempts = "1 attempt" if attempt == 1 else f"{attempt} attempts"
            raise TokenEndpointError(f"{failure}; gave up after {attempts}", status=status)
        logger.warning("%s; retrying in %.2f s (attempt %d of %d)", failure, wait, attempt + 1, policy.max_attempts)
        await sleep(wait)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

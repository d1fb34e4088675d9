"""The client-credentials request and its answer (RFC 6749 section 4.4), as pure functions: form, client
authentication, token parsing, and the error an IdP's refusal maps to."""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote_plus, urlsplit

from client.errors import (
    InvalidClientError,
    InvalidScopeError,
    TokenConfigError,
    TokenEndpointError,
    TokenError,
    TokenRejectedError,
    TokenResponseError,
)
from client.http_retry import Answer, Redact, one_line

AuthMethod = Literal["client_secret_basic", "client_secret_post"]

DEFAULT_LIFETIME = 300.0  # assumed when the IdP sends no expires_in and the token carries no readable exp

_CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client", "invalid_grant"})
_TARGET_ERRORS = frozenset({"invalid_scope", "invalid_target"})
_RESERVED_PARAMS = frozenset(
    {
        "grant_type",
        "client_id",
        "client_secret",
        "client_assertion",
        "client_assertion_type",
        "scope",
        "audience",
        "resource",
    }
)


def _scope_string(scope: str | Sequence[str] | None) -> str | None:
    if scope is None:
        return None
    items = scope.split() if isinstance(scope, str) else list(scope)
    for item in items:
        if not isinstance(item, str) or not item or any(ch.isspace() for ch in item):
            raise TokenConfigError(f"scope: expected scope names without spaces, got {item!r}")
    return " ".join(items) or None


def _resources(resource: str | Sequence[str] | None) -> list[str]:
    items = [resource] if isinstance(resource, str) else list(resource or [])
    for item in items:
        parts = urlsplit(item) if isinstance(item, str) else None
        if parts is None or not parts.scheme or parts.fragment or any(ch.isspace() for ch in item):
            raise TokenConfigError(f"resource: expected an absolute URI without fragment (RFC 8707), got {item!r}")
    return items


def token_form(
    *,
    scope: str | Sequence[str] | None,
    audience: str | None,
    resource: str | Sequence[str] | None,
    extra_params: Mapping[str, str] | None,
) -> dict[str, str | list[str]]:
    """The form fields besides the client's credentials; each IdP's dialect is a choice of these."""
    form: dict[str, str | list[str]] = {"grant_type": "client_credentials"}
    if (scopes := _scope_string(scope)) is not None:
        form["scope"] = scopes
    if audience is not None:
        if not audience or audience != audience.strip():
            raise TokenConfigError(f"audience: expected a non-empty value without surrounding spaces, got {audience!r}")
        form["audience"] = audience
    if resources := _resources(resource):
        form["resource"] = resources
    for key, value in (extra_params or {}).items():
        if key in _RESERVED_PARAMS:
            raise TokenConfigError(f"extra_params: {key!r} is set by the TokenManager itself")
        if not isinstance(value, str):
            raise TokenConfigError(f"extra_params: the value of {key!r} must be a string")
        form[key] = value
    return form


def basic_credentials(client_id: str, client_secret: str) -> str:
    """RFC 6749 section 2.3.1: form-urlencode id and secret, then base64 `id:secret`."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def _lifetime_from_jwt(token: str) -> float | None:
    """Seconds left on a JWT's `exp`, read without verification and used only to schedule a refresh."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, RecursionError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return None
    remaining = exp - time.time()
    return remaining if remaining > 0 else None


def _expires_in(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # some IdPs send the number as a string
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise TokenResponseError(f"expires_in must be a positive number of seconds, got a {type(value).__name__}")
    return float(value)


def _check_token_type(token_type: Any, dpop: bool, what: str, redact: Redact) -> None:
    """Bearer (or none) without DPoP; exactly DPoP after a request with a proof (RFC 9449 section 5)."""
    named = token_type.lower() if isinstance(token_type, str) else None
    if not dpop:
        if token_type is not None and named != "bearer":
            shown = one_line(repr(token_type), redact, limit=40)
            raise TokenResponseError(f"{what} issued a {shown} token; only Bearer tokens are supported without DPoP")
        return
    if named == "dpop":
        return
    # RFC 9449 section 5: an IdP may answer a proof with an unbound token, and a client expecting a bound one
    # may discard it. Asked for DPoP, this client does: a Bearer token would silently lose the binding.
    shown = one_line(repr(token_type), redact, limit=40) if token_type is not None else "no token_type"
    raise TokenResponseError(
        f"{what} answered the DPoP request with {shown}, not a DPoP-bound token: the IdP (or this client's "
        "registration) does not bind tokens to a DPoP key; turn DPoP off to use Bearer tokens"
    )


def parse_token(answer: Answer, what: str, redact: Redact, *, dpop: bool = False) -> tuple[str, float]:
    """The access token of a 2xx answer and its lifetime in seconds (expires_in, else the JWT's exp, else 300).

    With `dpop` the request carried a proof and the answer must be a DPoP-bound token.
    """
    document = answer.json_object()
    if document is None:
        raise TokenResponseError(f"{what} answered HTTP {answer.status} with a body that is not a JSON object")
    value = document.get("access_token")
    if not isinstance(value, str) or not value:
        raise TokenResponseError(f"{what} answered HTTP {answer.status} without an access_token")
    if not all("\x21" <= ch <= "\x7e" for ch in value):
        raise TokenResponseError(f"{what} sent an access_token with characters not allowed in an HTTP header")
    _check_token_type(document.get("token_type"), dpop, what, redact)
    lifetime = _expires_in(document.get("expires_in")) or _lifetime_from_jwt(value) or DEFAULT_LIFETIME
    return value, lifetime


def rejection(answer: Answer, what: str, client_id: str, redact: Redact) -> TokenError:
    """The error for a non-2xx answer: 400/401/403 are refusals (never retried), anything else odd."""
    document = answer.json_object() or {}
    error = document.get("error")
    error = one_line(error, redact, limit=60) if isinstance(error, str) and error else None
    description = document.get("error_description")
    description = one_line(description, redact) if isinstance(description, str) else ""
    detail = error or f"HTTP {answer.status}"
    if description:
        detail = f"{detail} ({description})"
    if answer.status not in (400, 401, 403):
        return TokenEndpointError(f"{what} answered HTTP {answer.status}: {detail}", status=answer.status)
    if error in _CLIENT_ERRORS or (error is None and answer.status == 401):
        message = f"{what} rejected client {client_id!r}: {detail}"
        return InvalidClientError(message, status=answer.status, error=error)
    if error in _TARGET_ERRORS:
        message = f"{what} refused the requested scope, audience or resource: {detail}"
        return InvalidScopeError(message, status=answer.status, error=error)
    return TokenRejectedError(f"{what} refused the token request: {detail}", status=answer.status, error=error)

"""What authentication concluded about one HTTP request: the one typed result everything downstream reads."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from auth.principal import Principal

STATE_KEY = "auth"  # scope["state"]["auth"], i.e. request.state.auth


@dataclass(frozen=True, slots=True)
class RequestAuth:
    """`outcome`: "ok", "not_required", "forbidden" (guard), "missing" or the refusal's error code.
    `refused_tools`: tools/call names the scope gate refused (counted by the metrics).
    `issuer`: the configured issuer that judged the token, "other" or "none" (a bounded label); None when
    no bearer check ran.
    `binding`: how the token was presented and bound: "bearer", "dpop" or "mtls" (None before a credential)."""

    outcome: str
    principal: Principal | None = None
    refused_tools: tuple[object, ...] = ()
    issuer: str | None = None
    binding: str | None = None


def set_request_auth(scope: MutableMapping[str, Any], result: RequestAuth) -> None:
    scope.setdefault("state", {})[STATE_KEY] = result


def request_auth(scope: MutableMapping[str, Any]) -> RequestAuth | None:
    result = scope.get("state", {}).get(STATE_KEY)
    return result if isinstance(result, RequestAuth) else None


def principal_of(state: object) -> Principal | None:
    """The verified caller from a Starlette `request.state` (tools read it this way), or None."""
    result = getattr(state, STATE_KEY, None)
    return result.principal if isinstance(result, RequestAuth) else None

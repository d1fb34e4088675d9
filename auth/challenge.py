"""The challenges for an AuthError: RFC 6750 `Bearer` and RFC 9449 `DPoP` (with the MCP spec's resource_metadata).

With DPoP allowed, a request without credentials or with Bearer gets the full Bearer challenge and a second
`WWW-Authenticate` field `DPoP algs="..."`; a request that used DPoP (or any, when DPoP is required) gets the
full DPoP challenge alone. A nonce refusal also carries a fresh `DPoP-Nonce`.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import Send

from auth.credential import Scheme
from auth.errors import AuthError, InsufficientScope, MissingToken, TemporarilyUnavailable, UseDpopNonce
from auth.refusal import Header, send_refusal

RETRY_AFTER_SECONDS = 10


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _challenge(scheme: str, params: list[tuple[str, str]]) -> str:
    return scheme + " " + ", ".join(f"{name}={_quoted(value)}" for name, value in params)


def _error_params(exc: AuthError) -> list[tuple[str, str]]:
    return [] if isinstance(exc, MissingToken) else [("error", exc.error), ("error_description", exc.description)]


def _common_params(exc: AuthError, resource_metadata_url: str, scopes: Iterable[str]) -> list[tuple[str, str]]:
    params = [("resource_metadata", resource_metadata_url)]
    scope = " ".join(exc.required if isinstance(exc, InsufficientScope) else scopes)
    if scope:
        params.append(("scope", scope))
    return params


def www_authenticate(
    exc: AuthError, *, resource_metadata_url: str, scopes: Iterable[str], dpop_algorithms: Iterable[str] = ()
) -> str:
    """The Bearer challenge (RFC 6750 section 3), or the DPoP one (RFC 9449 section 7.1) when `dpop_algorithms`
    are given: the same parameters, after `algs`."""
    algorithms = " ".join(dpop_algorithms)
    params = [("algs", algorithms)] if algorithms else []
    params += _error_params(exc) + _common_params(exc, resource_metadata_url, scopes)
    return _challenge("DPoP" if algorithms else "Bearer", params)


class ChallengeResponder:
    """Answers an AuthError: its status, `WWW-Authenticate` (or `Retry-After`) and the one refusal body.

    `dpop_algorithms` empty: DPoP is off (Bearer only); `bearer` False: OAUTH_DPOP=required (DPoP only)."""

    def __init__(
        self,
        *,
        resource_metadata_url: str,
        scopes: Iterable[str],
        scope_prefix: str = "",
        dpop_algorithms: Iterable[str] = (),
        bearer: bool = True,
    ) -> None:
        self._resource_metadata_url = resource_metadata_url
        self._scopes = tuple(scopes)
        self._scope_prefix = scope_prefix  # scopes are named to clients as they must ask the IdP for them
        self._dpop_algorithms = tuple(dpop_algorithms)
        self._bearer = bearer or not self._dpop_algorithms

    def headers(self, exc: AuthError, scheme: Scheme | None = None) -> list[Header]:
        if isinstance(exc, TemporarilyUnavailable):
            return [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
        if isinstance(exc, InsufficientScope) and self._scope_prefix:
            exc = InsufficientScope(tuple(self._scope_prefix + scope for scope in exc.required))
        url, scopes = self._resource_metadata_url, self._scopes
        if not self._dpop_algorithms:  # OAUTH_DPOP=off
            challenges = [www_authenticate(exc, resource_metadata_url=url, scopes=scopes)]
        elif scheme == "dpop" or not self._bearer:  # the client speaks DPoP, or must
            challenges = [
                www_authenticate(exc, resource_metadata_url=url, scopes=scopes, dpop_algorithms=self._dpop_algorithms)
            ]
        else:  # Bearer (or nothing) in allowed mode: the Bearer challenge, and DPoP's as the alternative
            algorithms = " ".join(self._dpop_algorithms)
            challenges = [www_authenticate(exc, resource_metadata_url=url, scopes=scopes), f'DPoP algs="{algorithms}"']
        headers = [(b"www-authenticate", value.encode("latin-1", "replace")) for value in challenges]
        if isinstance(exc, UseDpopNonce):
            headers.append((b"dpop-nonce", exc.nonce.encode("ascii")))
        return headers

    async def __call__(self, exc: AuthError, send: Send, scheme: Scheme | None = None) -> None:
        await send_refusal(send, exc, self.headers(exc, scheme))

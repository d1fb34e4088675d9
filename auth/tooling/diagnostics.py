"""Explains a refused token for the server log and the doctor: what the token says (unverified), the usual cause.

Only used after a token has been refused; nothing here decides whether a token is accepted. The hints come from
the same rule objects the verifier enforces (auth.token_rules).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from auth.claims import TokenClaims
from auth.errors import AuthError, InvalidToken, Reason
from auth.token_rules import GRAPH_AUDIENCES, TokenRules


def _segment(token: str, index: int) -> dict[str, Any] | None:
    try:
        part = token.split(".")[index]
        document = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def unverified_header(token: str) -> dict[str, Any]:
    return _segment(token, 0) or {}


def unverified_claims(token: str) -> TokenClaims | InvalidToken | None:
    """The payload as sent, signature NOT checked, typed as the verifier types it; None when it is not JSON."""
    raw = _segment(token, 1)
    if raw is None:
        return None
    try:
        return TokenClaims.parse(raw)
    except InvalidToken as exc:
        return exc


def shape_hint(token: str) -> str:
    """Why something that is not a three-part JWS cannot be verified."""
    dots = token.count(".")
    if dots == 4:
        return "this is an encrypted token (JWE): ask the IdP for a signed JWT access token"
    if dots == 0:
        return (
            "this token is not a JWT (an opaque token): Auth0 issues opaque tokens when no audience is requested, "
            "and Okta's org authorization server and some IdPs issue tokens only they can check"
        )
    return f"a JWT has 3 dot-separated parts, this token has {dots + 1}"


def is_graph_token(claims: TokenClaims, header: dict[str, Any]) -> bool:
    """Graph signs a hash of its header nonce: its tokens fail on their signature anywhere but at Graph."""
    return "nonce" in header or any(audience in GRAPH_AUDIENCES for audience in claims.audience or ())


def hint(token: str, error: AuthError, rules: TokenRules) -> str:
    """What the token's own claims suggest about a refusal that came before the claim rules (which say it
    themselves, in the error's detail)."""
    if error.reason is Reason.NOT_JWT:
        return shape_hint(token)
    claims = unverified_claims(token)
    if claims is None:
        return ""
    if isinstance(claims, InvalidToken):
        return f"unverified claims: {claims.detail}"
    header = unverified_header(token)
    if error.reason is Reason.BAD_SIGNATURE and is_graph_token(claims, header):
        return rules.audience.hint(claims, graph_header=True)
    if error.reason is Reason.KEY_UNKNOWN:
        issuer = claims.issuer
        if issuer is not None and "okta.com" in issuer and "/oauth2/" not in issuer:
            return "Okta org authorization server tokens cannot be validated: use a custom authorization server"
        try:
            rules.issuer.check(claims, 0)
        except InvalidToken as exc:
            return "the token comes from another issuer: " + exc.detail
    if claims.looks_like_id_token and error.reason is not Reason.NOT_ACCESS_TOKEN:
        return "this looks like an ID token: send the access token instead"
    return ""


def explain(token: str, error: AuthError, rules: TokenRules, *, max_token_bytes: int) -> str:
    """The log line's explanation of a refusal: the error's detail plus the hint. Never the token."""
    extra = hint(token, error, rules) if len(token) <= max_token_bytes else ""
    return f"{error.detail}; {extra}" if extra and extra not in error.detail else error.detail

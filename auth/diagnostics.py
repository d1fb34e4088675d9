"""Explains a refused token for the server log: what the token says (unverified) and the usual cause.

Only used after a token has been refused; nothing here decides whether a token is accepted.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from auth.claim_rules import ClaimRules, issuer_hint, shown
from auth.jwks import KEY_UNKNOWN

GRAPH_AUDIENCES = frozenset({"https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"})


def _segment(token: str, index: int) -> dict[str, Any]:
    try:
        part = token.split(".")[index]
        document = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}


def unverified_header(token: str) -> dict[str, Any]:
    return _segment(token, 0)


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload as sent, signature NOT checked: for explanations only."""
    return _segment(token, 1)


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


def looks_like_id_token(claims: Mapping[str, Any]) -> bool:
    azp, aud = claims.get("azp"), claims.get("aud")
    return (
        claims.get("token_use") == "id"
        or "nonce" in claims
        or "at_hash" in claims
        or (isinstance(azp, str) and azp == aud and "scope" not in claims and "scp" not in claims)
    )


def audience_hint(claims: Mapping[str, Any], header: Mapping[str, Any], expected: tuple[str, ...] | None) -> str:
    aud = claims.get("aud")
    detail = f"audience {shown(aud)}, expected one of {list(expected or ())}"
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if any(isinstance(a, str) and a in GRAPH_AUDIENCES for a in audiences) or "nonce" in header:
        return detail + (
            " (this is a Microsoft Graph token, which cannot be validated by anyone but Graph: "
            "request a token for your own API, e.g. scope=api://<app-id>/.default)"
        )
    if looks_like_id_token(claims):
        return detail + " (this looks like an ID token: send the access token instead)"
    if audiences and all(isinstance(a, str) and a.endswith("/userinfo") for a in audiences):
        return detail + " (an Auth0 token with no API audience: request it with audience=<your API identifier>)"
    if aud is None and expected:
        return detail + " (the token has no aud claim: Cognito access tokens have none, use OAUTH_PROVIDER=cognito)"
    return detail


def explain(token: str, description: str, rules: ClaimRules) -> str:
    """One line for the log: the refusal plus what the token's own claims suggest. Never the token."""
    if token.count(".") != 2:
        return shape_hint(token)
    claims, header = unverified_claims(token), unverified_header(token)
    # A Graph token fails on its signature (Graph signs a hash of the header nonce); a missing aud fails
    # PyJWT's required-claims check first: both are audience problems to the user.
    graph = "nonce" in header or str(claims.get("aud")) in GRAPH_AUDIENCES
    missing_aud = description == "token is missing a required claim" and "aud" not in claims
    if (
        description == "token audience is not accepted"
        or missing_aud
        or (description == "token signature is invalid" and graph)
    ):
        return audience_hint(claims, header, rules.audiences)
    if description == "token issuer is not accepted" and not rules.allowed_tenants:
        return issuer_hint(claims.get("iss"), rules.issuers)
    if description == KEY_UNKNOWN:
        issuer = claims.get("iss")
        if isinstance(issuer, str) and "okta.com" in issuer and "/oauth2/" not in issuer:
            return "Okta org authorization server tokens cannot be validated: use a custom authorization server"
        if issuer not in rules.issuers and not rules.allowed_tenants:
            return "the token comes from another issuer: " + issuer_hint(issuer, rules.issuers)
    if looks_like_id_token(claims) and description != "token is not an access token":
        return "this looks like an ID token: send the access token instead"
    return ""

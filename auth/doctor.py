"""`python server.py doctor [TOKEN]`: checks the configuration and the IdP, and explains a token rule by rule."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from auth.claim_rules import ClaimRules, issuer_hint, shown
from auth.diagnostics import audience_hint, looks_like_id_token, shape_hint, unverified_claims, unverified_header
from auth.discovery import IssuerMismatch, discover_jwks_uri
from auth.errors import AuthError
from auth.http_fetch import FetchError
from auth.jwks import JWKSCache
from auth.verifier import TokenVerifier, client_id_of, normalise_scopes
from settings import Settings

Report = Callable[[str], None]


class Doctor:
    def __init__(self, settings: Settings, report: Report) -> None:
        self.settings = settings
        self.rules = ClaimRules.from_settings(settings)
        self.report = report
        self.problems = 0

    def check(self, ok: bool, message: str, hint: str = "") -> bool:
        self.report(f"  [{'ok' if ok else 'FAIL'}] {message}" + (f"\n         -> {hint}" if hint and not ok else ""))
        self.problems += 0 if ok else 1
        return ok

    def info(self, message: str) -> None:
        self.report(f"  [info] {message}")

    async def run(self, token: str | None) -> int:
        s = self.settings
        self.report("Configuration")
        self.info(f"provider: {s.oauth_provider}")
        self.info(f"accepted issuers: {list(self.rules.issuers) or 'per tenant, from the token tid'}")
        if self.rules.allowed_tenants:
            self.info(f"allowed tenants: {sorted(self.rules.allowed_tenants)}")
        if self.rules.audience_optional:
            clients = sorted(self.rules.client_ids)
            self.info(f"audience: {list(self.rules.audiences)} when present (Cognito); client ids: {clients}")
        else:
            self.info(f"accepted audiences: {list(self.rules.audiences)}")
        self.info(f"algorithms: {', '.join(s.oauth_algorithms)}; leeway {s.oauth_leeway_seconds}s")
        self.info(f"MCP server URL (RFC 9728 resource): {s.mcp_server_url}")
        keys = await self._check_idp()
        if token is not None:
            await self._explain_token(token.strip(), keys)
        self.report("")
        self.report("Result: " + ("all checks passed" if not self.problems else f"{self.problems} problem(s) found"))
        await keys.aclose()
        return 0 if not self.problems else 1

    async def _check_idp(self) -> JWKSCache:
        s = self.settings
        self.report("Identity provider")
        jwks_uri = s.oauth_jwks_uri
        async with httpx.AsyncClient(follow_redirects=False, timeout=s.oauth_http_timeout_seconds) as client:
            try:
                discovered = await discover_jwks_uri(
                    client, s.oauth_issuer, s.oauth_well_known_url, timeout=s.oauth_http_timeout_seconds
                )
                self.check(True, f"discovery names issuer {s.oauth_issuer!r}; jwks_uri {discovered}")
                jwks_uri = jwks_uri or discovered
            except FetchError as exc:
                # A document naming another issuer means tokens will carry that iss, JWKS or not
                # (Entra multi-tenant metadata names the {tenantid} template by design).
                mismatch = isinstance(exc, IssuerMismatch) and not s.entra_multi_tenant
                if mismatch:
                    self.check(False, f"discovery: {exc}", "set OAUTH_ISSUER to the issuer the IdP publishes, exactly")
                elif jwks_uri:
                    self.info(f"discovery unavailable ({exc}); using OAUTH_JWKS_URI")
                else:
                    self.check(False, f"discovery: {exc}", "set OAUTH_WELL_KNOWN_URL or OAUTH_JWKS_URI")
        keys = JWKSCache(
            jwks_uri or "", ttl=s.oauth_jwks_cache_seconds, cooldown=0, timeout=s.oauth_http_timeout_seconds
        )
        if jwks_uri:
            await keys.refresh()
            if self.check(keys.ready, f"JWKS {jwks_uri}: {keys.key_count} usable signing key(s)", "see the log above"):
                for description in keys.describe():
                    self.info(f"key {description}")
        return keys

    async def _explain_token(self, token: str, keys: JWKSCache) -> None:
        self.report("Token (claims shown as sent; the verdict below checks them)")
        if not self.check(token.count(".") == 2, "is a signed JWT (header.payload.signature)", shape_hint(token)):
            return
        header, claims = unverified_header(token), unverified_claims(token)
        alg, kid = header.get("alg"), header.get("kid")
        self.check(alg in self.settings.oauth_algorithms, f"algorithm {shown(alg)} is allowed", "see OAUTH_ALGORITHMS")
        self.check("crit" not in header, "no critical header extensions")
        if self.rules.required_typ:
            typ, wanted = str(header.get("typ", "")).lower(), self.rules.required_typ.lower()
            self.check(typ in (wanted, f"application/{wanted}"), f"typ {shown(header.get('typ'))} is {wanted!r}")
        self.check(keys.has_kid(kid), f"kid {shown(kid)} is in the JWKS", "a rotated key? a token from another IdP?")
        self._explain_claims(claims, header)
        if not keys.ready:
            self.check(False, "VERDICT: cannot be checked without the IdP's signing keys (see above)")
            return
        verifier = TokenVerifier(
            keys, rules=self.rules, algorithms=self.settings.oauth_algorithms, leeway=self.settings.oauth_leeway_seconds
        )
        try:
            principal = await verifier.verify(token)
        except AuthError as exc:
            self.check(False, f"VERDICT: refused with {exc.status}: {exc.description}", verifier.explain(token, exc))
            return
        missing = [scope for scope in self.settings.oauth_required_scopes if scope not in principal.scopes]
        if missing:
            self.check(False, f"VERDICT: valid, but refused with 403: missing required scope(s) {missing}")
            return
        kind = "machine" if principal.is_machine else "user"
        self.check(True, f"VERDICT: accepted: subject {principal.subject!r}, client {principal.client_id!r}, {kind}")

    def _explain_claims(self, claims: dict[str, Any], header: dict[str, Any]) -> None:
        issuer = claims.get("iss")
        if self.rules.issuers:
            hint = issuer_hint(issuer, self.rules.issuers)
            self.check(issuer in self.rules.issuers, f"issuer {shown(issuer)} is accepted", hint)
        if not (self.rules.audience_optional and "aud" not in claims):
            aud = claims.get("aud")
            audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            ok = any(a in self.rules.audiences for a in audiences)
            self.check(ok, f"audience {shown(aud)} is accepted", audience_hint(claims, header, self.rules.audiences))
        now = time.time()
        leeway = self.settings.oauth_leeway_seconds
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            self.check(exp + leeway > now, f"expires {_when(exp)} (now {_when(now)})", "get a fresh token")
        else:
            self.check(False, f"exp {shown(exp)} is a number", "exp is required")
        if isinstance(nbf, int | float) and not isinstance(nbf, bool):
            self.check(nbf - leeway <= now, f"not before {_when(nbf)}", "clock skew? see OAUTH_LEEWAY_SECONDS")
        try:
            scopes = sorted(normalise_scopes(claims, prefix=self.rules.scope_prefix))
            client = client_id_of(claims)
        except AuthError as exc:
            self.check(False, exc.description)
            return
        self.info(f"scopes: {scopes or 'none'}; client id: {client!r}; subject: {shown(claims.get('sub'))}")
        if looks_like_id_token(claims):
            self.check(False, "is an access token", "this looks like an ID token: send the access token instead")


def _when(moment: float) -> str:
    try:
        return datetime.fromtimestamp(moment, tz=UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return repr(moment)

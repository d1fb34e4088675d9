"""`python server.py doctor [TOKEN]`: checks the configuration and the IdP, and explains a token rule by rule."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from auth.binding import describe_confirmation
from auth.claims import TokenClaims, shown
from auth.discovery import IssuerMismatch, discover_jwks_uri
from auth.errors import AuthError, InvalidToken, Reason
from auth.http_fetch import FetchError
from auth.jwks_cache import JWKSCache
from auth.jwt_verifier import JwtVerifier
from auth.token_rules import TokenRules, confirmation_of
from auth.tooling.diagnostics import explain, shape_hint, unverified_claims, unverified_header
from settings import Settings

Report = Callable[[str], None]


class Doctor:
    def __init__(self, settings: Settings, report: Report) -> None:
        self.settings = settings
        self.rules = TokenRules.from_settings(settings)
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
        issuer, audience = self.rules.issuer, self.rules.audience
        self.info(f"accepted issuers: {list(issuer.issuers) or 'per tenant, from the token tid'}")
        if issuer.allowed_tenants:
            self.info(f"allowed tenants: {sorted(issuer.allowed_tenants)}")
        if audience.optional:
            clients = sorted(self.rules.client_ids)
            self.info(f"audience: {list(audience.audiences)} when present (Cognito); client ids: {clients}")
        else:
            self.info(f"accepted audiences: {list(audience.audiences)}")
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
        header = unverified_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        self.check(alg in self.settings.oauth_algorithms, f"algorithm {shown(alg)} is allowed", "see OAUTH_ALGORITHMS")
        self.check("crit" not in header, "no critical header extensions")
        if self.rules.required_typ:
            wanted = self.rules.required_typ.lower()
            self.check(self.rules.typ_accepted(header), f"typ {shown(header.get('typ'))} is {wanted!r}")
        self.check(keys.has_kid(kid), f"kid {shown(kid)} is in the JWKS", "a rotated key? a token from another IdP?")
        claims = unverified_claims(token)
        if isinstance(claims, InvalidToken):
            self.check(False, "claims have the types the rules expect", claims.detail)
        elif claims is None:
            self.check(False, "the payload is a JSON object")
        else:
            self._explain_claims(claims)
        if not keys.ready:
            self.check(False, "VERDICT: cannot be checked without the IdP's signing keys (see above)")
            return
        verifier = JwtVerifier(keys, self.rules, algorithms=self.settings.oauth_algorithms)
        try:
            principal = await verifier.verify(token)
        except AuthError as exc:
            hint = explain(token, exc, self.rules, max_token_bytes=verifier.max_token_bytes)
            self.check(False, f"VERDICT: refused with {exc.status}: {exc.description}", hint)
            return
        missing = [scope for scope in self.settings.oauth_required_scopes if scope not in principal.scopes]
        if missing:
            self.check(False, f"VERDICT: valid, but refused with 403: missing required scope(s) {missing}")
            return
        kind = "machine" if principal.is_machine else "user"
        bound = "" if principal.confirmation is None else f"; {describe_confirmation(principal.confirmation)}"
        self.check(
            True, f"VERDICT: accepted: subject {principal.subject!r}, client {principal.client_id!r}, {kind}{bound}"
        )

    def _explain_claims(self, claims: TokenClaims) -> None:
        """Each claim rule the verifier enforces, asked the same way, with the cause when it fails."""
        now = time.time()
        for rule in self.rules.claim_rules:
            try:
                rule.check(claims, now)
            except InvalidToken as exc:
                self.check(False, rule.label(claims), _advice(exc))
            else:
                self.check(True, rule.label(claims))
        # The key binding is checked per request (auth.binding), not here: say what it will ask of each request.
        self.info(describe_confirmation(confirmation_of(claims.confirmation)))
        scopes = sorted(claims.scopes(self.rules.scope_prefix))
        subject = shown(claims.subject)
        self.info(f"scopes: {scopes or 'none'}; client id: {claims.client_id!r}; subject: {subject}")
        if claims.looks_like_id_token and self.rules.token_use is None:
            self.check(False, "is an access token", "this looks like an ID token: send the access token instead")


def _advice(exc: InvalidToken) -> str:
    if exc.reason is Reason.EXPIRED:
        return "get a fresh token"
    if exc.reason is Reason.NOT_YET_VALID:
        return "clock skew? see OAUTH_LEEWAY_SECONDS"
    return exc.detail

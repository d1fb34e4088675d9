"""`python server.py doctor [TOKEN]`: checks the configuration and the IdP, and explains a token rule by rule."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from auth.binding import describe_confirmation
from auth.claims import TokenClaims, shown
from auth.discovery import IssuerMismatch, discover_jwks_uri
from auth.errors import AuthError, IntrospectionUnavailable, InvalidToken, Reason
from auth.http_fetch import FetchError
from auth.introspection import Introspector
from auth.issuer_config import IssuerConfig
from auth.issuer_router import unverified_issuer
from auth.jwks_cache import JWKSCache
from auth.jwt_verifier import JwtVerifier
from auth.principal import Principal
from auth.token_rules import TokenRules, confirmation_of
from auth.token_source import UNDECIDABLE_LOCALLY, build_introspector, is_jwt_shaped
from auth.tooling.diagnostics import explain, shape_hint, unverified_claims, unverified_header
from settings import Settings

Report = Callable[[str], None]


async def run_doctor(settings: Settings, report: Report, token: str | None) -> int:
    """The doctor for every trusted issuer: a token is explained by the issuer its `iss` names (as the server
    routes it); without a token each issuer is checked in turn. Exit code 0 when every check passed."""
    issuers = settings.issuers
    if len(issuers) == 1:
        return await Doctor(settings, report).run(token)
    if token is not None:
        issuer = issuer_named(issuers, token.strip(), settings.oauth_max_token_bytes)
        if issuer is None:
            trusted = [config.issuer for config in issuers]
            report(f"  [FAIL] the token names no trusted issuer (OAUTH_ISSUERS_FILE trusts {trusted})")
            report("")
            report("Result: 1 problem(s) found")
            return 1
        report(f"Issuer {issuer.issuer} (the token's iss)")
        return await Doctor(settings, report, issuer).run(token)
    worst = 0
    for number, issuer in enumerate(issuers, start=1):
        report(f"Issuer [[issuer]] #{number}: {issuer.issuer}")
        worst = max(worst, await Doctor(settings, report, issuer).run(None))
        report("")
    return worst


def issuer_named(issuers: tuple[IssuerConfig, ...], token: str, max_token_bytes: int) -> IssuerConfig | None:
    """The issuer a token's unverified iss names; for a token that names none, the first that introspects (else
    the first: its checks say why it cannot be verified); None for a JWT naming an issuer not trusted here."""
    try:
        iss = unverified_issuer(token, max_token_bytes)
    except InvalidToken:
        return next((config for config in issuers if config.introspects), issuers[0])
    return next((config for config in issuers if iss in config.routing_issuers), None)


class Doctor:
    def __init__(self, settings: Settings, report: Report, issuer: IssuerConfig | None = None) -> None:
        self.settings = settings
        self.issuer = issuer or settings.issuers[0]
        self.rules = self.issuer.token_rules()
        self.report = report
        self.problems = 0

    def check(self, ok: bool, message: str, hint: str = "") -> bool:
        self.report(f"  [{'ok' if ok else 'FAIL'}] {message}" + (f"\n         -> {hint}" if hint and not ok else ""))
        self.problems += 0 if ok else 1
        return ok

    def info(self, message: str) -> None:
        self.report(f"  [info] {message}")

    def named(self, *keys: str, joined_by: str = " or ") -> str:
        """The settings behind table keys, as the operator writes them: OAUTH_* variables, or the keys of this
        issuer's [[issuer]] table when OAUTH_ISSUERS_FILE is in use."""
        if not self.settings.oauth_issuers_file:
            return joined_by.join(f"OAUTH_{key.upper()}" for key in keys)
        number = self.settings.issuers.index(self.issuer) + 1
        return f"{joined_by.join(keys)} in [[issuer]] #{number}"

    def _advice(self, exc: InvalidToken) -> str:
        if exc.reason is Reason.EXPIRED:
            return "get a fresh token"
        if exc.reason is Reason.NOT_YET_VALID:
            return f"clock skew? see {self.named('leeway_seconds')}"
        return exc.detail

    async def run(self, token: str | None) -> int:
        s, config = self.settings, self.issuer
        self.report("Configuration")
        self.info(f"provider: {config.provider}")
        issuer, audience = self.rules.issuer, self.rules.audience
        self.info(f"accepted issuers: {list(issuer.issuers) or 'per tenant, from the token tid'}")
        if issuer.allowed_tenants:
            self.info(f"allowed tenants: {sorted(issuer.allowed_tenants)}")
        if audience.optional:
            clients = sorted(self.rules.client_ids)
            self.info(f"audience: {list(audience.audiences)} when present (Cognito); client ids: {clients}")
        else:
            self.info(f"accepted audiences: {list(audience.audiences)}")
        self.info(f"algorithms: {', '.join(config.algorithms)}; leeway {config.leeway_seconds}s")
        self.info(f"MCP server URL (RFC 9728 resource): {s.mcp_server_url}")
        introspector = build_introspector(config, s)
        if introspector is not None:
            what = "tokens that are not JWTs, and JWTs it cannot judge locally"
            what += "; every JWT after it verifies" if config.introspect_jwts else ""
            self.info(f"introspection (RFC 7662): {what}; client {config.introspection_client_id!r}")
        keys = await self._check_idp()
        if token is not None:
            token = token.strip()
            refused, problems = None, self.problems
            if introspector is None or is_jwt_shaped(token):
                refused = await self._explain_token(token, keys, introspection=introspector is not None)
            if introspector is not None and refused in UNDECIDABLE_LOCALLY:
                self.problems = problems  # what the JWT does not show is not a problem: the IdP's answer decides
            if introspector is not None and (
                config.introspect_jwts or not is_jwt_shaped(token) or refused in UNDECIDABLE_LOCALLY
            ):
                await self._explain_introspected(token, introspector)
        if introspector is not None:
            await introspector.aclose()
        self.report("")
        self.report("Result: " + ("all checks passed" if not self.problems else f"{self.problems} problem(s) found"))
        await keys.aclose()
        return 0 if not self.problems else 1

    async def _check_idp(self) -> JWKSCache:
        s, config = self.settings, self.issuer
        self.report("Identity provider")
        jwks_uri = config.jwks_uri
        async with httpx.AsyncClient(follow_redirects=False, timeout=s.oauth_http_timeout_seconds) as client:
            try:
                discovered = await discover_jwks_uri(
                    client, config.issuer, config.well_known_url, timeout=s.oauth_http_timeout_seconds
                )
                self.check(True, f"discovery names issuer {config.issuer!r}; jwks_uri {discovered}")
                jwks_uri = jwks_uri or discovered
            except FetchError as exc:
                # A document naming another issuer means tokens will carry that iss, JWKS or not
                # (Entra multi-tenant metadata names the {tenantid} template by design).
                mismatch = isinstance(exc, IssuerMismatch) and not config.entra_multi_tenant
                if mismatch:
                    self.check(
                        False,
                        f"discovery: {exc}",
                        f"set {self.named('issuer')} to the issuer the IdP publishes, exactly",
                    )
                elif jwks_uri:
                    self.info(f"discovery unavailable ({exc}); using {self.named('jwks_uri')}")
                else:
                    self.check(False, f"discovery: {exc}", f"set {self.named('well_known_url', 'jwks_uri')}")
        keys = JWKSCache(
            jwks_uri or "", ttl=config.jwks_cache_seconds, cooldown=0, timeout=s.oauth_http_timeout_seconds
        )
        if jwks_uri:
            await keys.refresh()
            if self.check(keys.ready, f"JWKS {jwks_uri}: {keys.key_count} usable signing key(s)", "see the log above"):
                for description in keys.describe():
                    self.info(f"key {description}")
        return keys

    async def _explain_token(self, token: str, keys: JWKSCache, *, introspection: bool = False) -> Reason | None:
        """The JWT checks one by one; the reason of the refusal, if it is refused."""
        self.report("Token (claims shown as sent; the verdict below checks them)")
        if not self.check(token.count(".") == 2, "is a signed JWT (header.payload.signature)", shape_hint(token)):
            return Reason.NOT_JWT
        header = unverified_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        self.check(
            alg in self.issuer.algorithms, f"algorithm {shown(alg)} is allowed", f"see {self.named('algorithms')}"
        )
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
            return Reason.KEYS_UNAVAILABLE
        verifier = JwtVerifier(keys, self.rules, algorithms=self.issuer.algorithms)
        try:
            principal = await verifier.verify(token)
        except AuthError as exc:
            if introspection and exc.reason in UNDECIDABLE_LOCALLY:
                self.info(f"not decided locally ({exc.description}): the IdP's introspection answer decides")
                return exc.reason
            hint = explain(token, exc, self.rules, max_token_bytes=verifier.max_token_bytes)
            self.check(False, f"VERDICT: refused with {exc.status}: {exc.description}", hint)
            return exc.reason
        self._verdict(principal)
        return None

    async def _explain_introspected(self, token: str, introspector: Introspector) -> None:
        """The IdP's answer about the token, then each rule it must pass, as the server asks them."""
        self.report("Token introspection (RFC 7662; the answer is shown, never the token or the client secret)")
        try:
            endpoint = await introspector.endpoint()
        except FetchError as exc:
            self.check(False, f"introspection endpoint: {exc}", f"set {self.named('introspection_endpoint')}")
            return
        self.info(f"endpoint {endpoint}; client {self.issuer.introspection_client_id!r} ({introspector.auth_method})")
        try:
            answer = await introspector.ask(token)
        except IntrospectionUnavailable as exc:
            hint = "the server answers 503 with Retry-After while this lasts"
            if "HTTP 401" in exc.detail or "HTTP 403" in exc.detail:
                keys = ("introspection_client_id", "introspection_client_secret", "introspection_auth_method")
                hint = f"check {self.named(*keys, joined_by=' and ')} with the IdP"
            self.check(False, f"the endpoint answers: {exc.detail}", hint)
            return
        self.check(True, "the endpoint answers with a JSON object")
        active = answer.get("active")
        why = "revoked, expired, unknown to this IdP, another IdP's token, or not visible to this client"
        if not self.check(active is True, f"active: {shown(active)}", why):
            self.check(False, "VERDICT: refused with 401: token is not active")
            return
        try:
            claims = TokenClaims.from_introspection(answer, introspector.issuer)
        except InvalidToken as exc:
            self.check(False, "the answer's claims have the types the rules expect", exc.detail)
        else:
            self._explain_claims(claims, introspector.rules)
        try:
            principal = introspector.principal_of(answer)
        except InvalidToken as exc:
            self.check(False, f"VERDICT: refused with {exc.status}: {exc.description}", exc.detail)
            return
        self._verdict(principal)

    def _verdict(self, principal: Principal) -> None:
        missing = [scope for scope in self.settings.oauth_required_scopes if scope not in principal.scopes]
        if missing:
            self.check(False, f"VERDICT: valid, but refused with 403: missing required scope(s) {missing}")
            return
        kind = "machine" if principal.is_machine else "user"
        bound = "" if principal.confirmation is None else f"; {describe_confirmation(principal.confirmation)}"
        self.check(
            True, f"VERDICT: accepted: subject {principal.subject!r}, client {principal.client_id!r}, {kind}{bound}"
        )

    def _explain_claims(self, claims: TokenClaims, rules: TokenRules | None = None) -> None:
        """Each claim rule the verifier enforces, asked the same way, with the cause when it fails."""
        rules = rules or self.rules
        now = time.time()
        for rule in rules.claim_rules:
            try:
                rule.check(claims, now)
            except InvalidToken as exc:
                self.check(False, rule.label(claims), self._advice(exc))
            else:
                self.check(True, rule.label(claims))
        # The key binding is checked per request (auth.binding), not here: say what it will ask of each request.
        self.info(describe_confirmation(confirmation_of(claims.confirmation)))
        scopes = sorted(claims.scopes(rules.scope_prefix))
        subject = shown(claims.subject)
        self.info(f"scopes: {scopes or 'none'}; client id: {claims.client_id!r}; subject: {subject}")
        if claims.looks_like_id_token and rules.token_use is None:
            self.check(False, "is an access token", "this looks like an ID token: send the access token instead")

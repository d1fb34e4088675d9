"""Assembles the stack: forwarded headers -> (tracing) -> CORS -> access log -> transport guard -> bearer auth ->
scope gate -> routes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import urlsplit

from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from opentelemetry import trace
from opentelemetry.trace import TracerProvider
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Mount, Route

from auth.binding import CertificateCheck, KeyBinding
from auth.challenge import ChallengeResponder
from auth.client_cert import CertificateBinding
from auth.discovery import DiscoveredJWKSUri
from auth.dpop_nonce import NonceSource
from auth.dpop_proof import ProofPolicy
from auth.introspection import Introspector
from auth.issuer_config import IssuerConfig
from auth.issuer_router import IssuerRouter, IssuerVerifier
from auth.jwks_cache import JWKSCache
from auth.jwt_verifier import JwtVerifier
from auth.middleware import BearerAuthMiddleware
from auth.scope_gate import ScopeGate
from auth.token_source import TokenSource, build_introspector
from auth.tooling.dev_issuer import DEV_ISSUER_PATH, DevIssuer
from settings import Settings, is_loopback_host
from tools.notes_store import NotesLimits, NotesStore, SchemaTooNew
from tools.notes_store_sqlite import SQLiteNotesStore
from tools.registry import build_mcp_server, scopes_by_tool, tool_scopes, tool_specs
from web.access_log import AccessLog
from web.compat import break_runner_cycles
from web.forwarded import ForwardedHeaders
from web.guard import TransportGuard, allowed_hosts_for, origin_of
from web.health import health_routes
from web.metrics import Metrics, PoolStats
from web.metrics_route import METRICS_PATH, metrics_routes
from web.startup import OneLineStartupRefusal
from web.tool_metrics import ToolCallMetrics
from web.tracing import TRACER_NAME, TracedNotesStore, TracingMiddleware
from web.well_known import resource_metadata_url, well_known_routes

if TYPE_CHECKING:
    from tools.notes_store_postgres import PostgresNotesStore

logger = logging.getLogger(__name__)

MCP_PATH = "/mcp"
CORS_ALLOW_HEADERS = [
    "Authorization",
    "DPoP",
    "Content-Type",
    "Accept",
    "MCP-Protocol-Version",
    "Mcp-Session-Id",
    "Mcp-Method",
    "Mcp-Name",
    "Last-Event-ID",
    "X-Request-ID",
]
CORS_EXPOSE_HEADERS = ["WWW-Authenticate", "DPoP-Nonce", "Mcp-Session-Id", "X-Request-ID"]


@dataclass(frozen=True)
class Components:
    """What tests and operators may want to reach inside a built app. `keys` and `verifier`: the first issuer's."""

    keys: JWKSCache
    verifier: JwtVerifier
    router: IssuerRouter
    source: TokenSource  # the first issuer's verify step: JWTs by `verifier`, opaque tokens by `introspector`
    introspector: Introspector | None
    binding: KeyBinding
    mcp: MCPServer
    store: SQLiteNotesStore | PostgresNotesStore
    metrics: Metrics


def scopes_supported(settings: Settings) -> list[str]:
    """Scopes as clients must request them from the IdP (with OAUTH_SCOPE_PREFIX, if any)."""
    scopes = [*settings.oauth_required_scopes, *tool_scopes(settings)]
    return list(dict.fromkeys(settings.public_scope(scope) for scope in scopes))


@runtime_checkable
class PoolStatsSource(Protocol):
    """A notes store with a connection pool (the PostgreSQL one) reports its statistics for the metrics."""

    def pool_stats(self) -> Mapping[str, float]: ...


def pool_stats_of(store: object) -> PoolStats | None:
    """The store's pool statistics callable for /metrics' `mcp_notes_db_pool_*` gauges; None for a store without
    a pool (SQLite)."""
    return store.pool_stats if isinstance(store, PoolStatsSource) else None


def drop_idle_tracing(mcp: MCPServer) -> None:
    """The SDK wraps every message in an OpenTelemetry span. With no tracer provider installed globally (tracing
    off: web.tracing installs one only when the OTEL_* variables ask for it, or `opentelemetry-instrument` does,
    before the app is built) each span is a no-op that still costs several percent of a tool call, so the
    middleware stays only when there is a provider; then its spans nest under the request's server span."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        mcp.middleware[:] = [layer for layer in mcp.middleware if not isinstance(layer, OpenTelemetryMiddleware)]


def build_notes_store(settings: Settings) -> SQLiteNotesStore | PostgresNotesStore:
    """PostgreSQL when NOTES_DATABASE_URL is set (several replicas share it), else SQLite at NOTES_DB_PATH."""
    limits = NotesLimits(
        max_title_chars=settings.notes_max_title_chars,
        max_content_chars=settings.notes_max_content_chars,
        max_notes_per_owner=settings.notes_max_per_owner,
    )
    if settings.notes_database_url is None:
        return SQLiteNotesStore(settings.notes_db_path, limits)
    # Imported here: psycopg takes a good part of a start-up's time, and a SQLite server never needs it.
    from tools.notes_store_postgres import PostgresNotesStore

    return PostgresNotesStore(
        settings.notes_database_url.get_secret_value(),
        limits,
        pool_min=settings.notes_db_pool_min,
        pool_max=settings.notes_db_pool_max,
        timeout=settings.notes_db_timeout_seconds,
    )


def build_jwks_cache(config: IssuerConfig, settings: Settings) -> JWKSCache:
    """One issuer's key set: its own discovery, TTL, cooldown and last-known-good keys, its own HTTP client."""
    source = config.jwks_uri or DiscoveredJWKSUri(
        config.issuer,
        config.well_known_url,
        timeout=settings.oauth_http_timeout_seconds,
    )
    return JWKSCache(
        source,
        ttl=config.jwks_cache_seconds,
        cooldown=config.jwks_refresh_cooldown_seconds,
        max_stale=config.jwks_max_stale_seconds,
        timeout=settings.oauth_http_timeout_seconds,
    )


def build_issuer_verifier(config: IssuerConfig, settings: Settings) -> IssuerVerifier:
    """One trusted issuer's verifier: its key set and rules; the verification cache limits are the server's."""
    keys = build_jwks_cache(config, settings)
    verifier = JwtVerifier(
        keys,
        config.token_rules(),
        algorithms=config.algorithms,
        max_token_bytes=settings.oauth_max_token_bytes,
        cache_entries=settings.oauth_token_cache_entries,
        cache_seconds=settings.oauth_token_cache_seconds,
        refusal_cache_seconds=settings.oauth_refusal_cache_seconds,
    )
    introspector = build_introspector(config, settings)
    source = TokenSource(verifier, introspector, introspect_jwts=config.introspect_jwts and introspector is not None)
    return IssuerVerifier(config, keys, verifier, source)


def build_router(settings: Settings) -> IssuerRouter:
    """A verifier per trusted issuer (OAUTH_ISSUERS_FILE's tables in file order, else the OAUTH_* one)."""
    return IssuerRouter(
        [build_issuer_verifier(config, settings) for config in settings.issuers],
        max_token_bytes=settings.oauth_max_token_bytes,
    )


def build_key_binding(settings: Settings, *, certificate: CertificateCheck | None = None) -> KeyBinding:
    """The bind step from OAUTH_DPOP*: proof rules, the public URL proofs name, and nonces when asked for;
    `certificate` checks certificate-bound tokens (none: they are refused)."""
    if settings.oauth_dpop == "off":
        return KeyBinding(certificate=certificate)
    max_age = settings.oauth_dpop_max_age_seconds
    nonces = None
    if settings.oauth_dpop_nonce:
        secret = settings.oauth_dpop_nonce_secret
        if secret is None:
            logger.warning(
                "OAUTH_DPOP_NONCE: no OAUTH_DPOP_NONCE_SECRET set, so this process made its own: its DPoP nonces are "
                "good on this replica only (set the same secret on every replica)"
            )
            nonces = NonceSource.generated(lifetime=max_age)
        else:
            nonces = NonceSource(secret.get_secret_value().encode(), lifetime=max_age)
    return KeyBinding(
        mode=settings.oauth_dpop,
        policy=ProofPolicy(algorithms=frozenset(settings.oauth_dpop_algorithms), max_age=max_age),
        server_url=settings.mcp_server_url,
        endpoint_path=MCP_PATH,
        nonces=nonces,
        certificate=certificate,
    )


def build_app(
    settings: Settings,
    *,
    dev_issuer: DevIssuer | None = None,
    extra_origins: tuple[str, ...] = (),
    tracer_provider: TracerProvider | None = None,
) -> Starlette:
    """The app. With a tracer_provider (tracing on), requests and notes-store calls get spans from it; without one,
    no tracing code is on any request's path."""
    settings.require_issuer()
    break_runner_cycles()  # each call's SDK objects freed as it ends, not by the cyclic collector
    scopes = scopes_supported(settings)
    router = build_router(settings)
    first = router.issuers[0]
    store = build_notes_store(settings)
    tracer = tracer_provider.get_tracer(TRACER_NAME) if tracer_provider is not None else None
    system = "sqlite" if isinstance(store, SQLiteNotesStore) else "postgresql"
    tools_store: NotesStore = store if tracer is None else TracedNotesStore(store, tracer, system=system)
    specs = tool_specs(settings, tools_store)
    metrics = Metrics(
        key_sets=router.key_sets, tool_names=[spec.name for spec in specs], pool_stats=pool_stats_of(store)
    )
    mcp = build_mcp_server(settings, specs, middleware=[ToolCallMetrics(metrics)])
    drop_idle_tracing(mcp)
    # Host and Origin are checked by TransportGuard, against the public URL, before auth.
    # json_response: every tool here answers at once, so a plain JSON body serves each POST without the SDK's
    # per-request task group and SSE stream; no tool streams progress (docs/performance.md has the measured effect).
    mcp_app = mcp.streamable_http_app(
        streamable_http_path=MCP_PATH,
        json_response=True,
        stateless_http=settings.mcp_stateless,
        max_request_body_size=settings.mcp_max_body_bytes,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )

    binding = build_key_binding(settings, certificate=CertificateBinding.from_settings(settings))
    dpop_algorithms = settings.oauth_dpop_algorithms if settings.oauth_dpop != "off" else []
    responder = ChallengeResponder(
        resource_metadata_url=resource_metadata_url(settings.mcp_server_url),
        scopes=scopes,
        scope_prefix=settings.scope_prefix,
        dpop_algorithms=dpop_algorithms,
        bearer=settings.oauth_dpop != "required",
    )
    routes: list[BaseRoute] = [
        # The MCP endpoint first: every call would otherwise be matched against each route below in turn.
        Route(MCP_PATH, endpoint=mcp_app),
        *well_known_routes(
            server_url=settings.mcp_server_url,
            issuers=[issuer.issuer for issuer in router.issuers],
            scopes=scopes,
            idp_metadata_url=first.config.metadata_url,  # several issuers: the first one's (documented)
            dpop_algorithms=dpop_algorithms,
            dpop_required=settings.oauth_dpop == "required",
        ),
        *health_routes(router.key_sets, store),
        *metrics_routes(metrics, settings.metrics_token),
    ]
    public_prefixes = ["/.well-known/"]
    if dev_issuer is not None:
        routes += dev_issuer.routes()
        public_prefixes.append(DEV_ISSUER_PATH + "/")
    routes.append(Mount("/", app=mcp_app))  # the rest of the SDK's app (e.g. its /mcp/ redirect)

    origins = list(dict.fromkeys([*settings.cors_allow_origins, *extra_origins]))
    # Outermost: X-Forwarded-For/-Proto and the client-certificate header, judged by the direct peer.
    middleware = [
        Middleware(
            ForwardedHeaders,
            trusted=settings.forwarded_allow_ips,
            client_cert_header=settings.oauth_mtls_client_cert_header,
        )
    ]
    if tracer is not None:  # next: every log line of a request, the access line too, is in its span
        middleware.append(Middleware(TracingMiddleware, tracer=tracer))
    if origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=CORS_ALLOW_HEADERS,
                expose_headers=CORS_EXPOSE_HEADERS,
                allow_credentials=False,
                max_age=600,
            )
        )
    middleware += [
        Middleware(AccessLog, metrics=metrics),
        Middleware(
            TransportGuard,
            allowed_hosts=allowed_hosts_for(settings.mcp_server_url, settings.mcp_allowed_hosts),
            allowed_origins=[*origins, origin_of(settings.mcp_server_url)],
            protected_path=MCP_PATH,
            loopback_origins=is_loopback_host(urlsplit(settings.mcp_server_url).hostname or ""),
        ),
        Middleware(
            BearerAuthMiddleware,
            verifier=router,
            responder=responder,
            resource=settings.mcp_server_url,
            binding=binding,
            required_scopes=settings.oauth_required_scopes,
            public_paths=["/healthz", "/readyz", METRICS_PATH],  # /metrics checks its own token
            public_prefixes=public_prefixes,
            issuer_of=router.issuer_label,
        ),
        Middleware(
            ScopeGate,
            tool_scopes=scopes_by_tool(specs),
            responder=responder,
            max_body_bytes=settings.mcp_max_body_bytes,
            path=MCP_PATH,
        ),
        # lifespan only: HTTP passes straight through
        Middleware(OneLineStartupRefusal, refusals=(SchemaTooNew,)),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await store.open()
        try:
            async with mcp.session_manager.run():
                if dev_issuer is None:
                    for keys in router.key_sets.values():
                        keys.prefetch()  # the dev issuer is this very server: not listening yet
                yield
        finally:
            for issuer in router.issuers:
                await issuer.aclose()
            await store.close()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.components = Components(
        keys=first.keys,
        verifier=first.verifier,
        router=router,
        source=first.source,
        introspector=first.source.introspector,
        mcp=mcp,
        store=store,
        metrics=metrics,
        binding=binding,
    )
    return app

"""Entry point: `python server.py` (production, config from env and .env) or `python server.py --dev`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from types import FrameType

import uvicorn
from sse_starlette.sse import AppStatus
from starlette.types import ASGIApp

from auth.tooling.dev_issuer import DEV_ISSUER_PATH, DevIssuer
from auth.tooling.doctor import run_doctor
from settings import Settings, SettingsError, is_loopback_host, load_settings
from web.app import build_app, scopes_supported
from web.log_format import configure_logging
from web.tracing import exporters_of, start_tracing

INSPECTOR_ORIGINS = ("http://localhost:6274", "http://127.0.0.1:6274")
EXIT_CONFIG = 2


class GracefulServer(uvicorn.Server):
    """SIGTERM is a requested stop: finish in-flight requests, then exit 0 (uvicorn would re-raise it)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM:
            self.should_exit = True
            return
        super().handle_exit(sig, frame)


def uvicorn_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """How the app is served. X-Forwarded-For/-Proto are the app's job (web/forwarded.py, from FORWARDED_ALLOW_IPS
    peers): uvicorn would replace the direct peer before the app could judge the client-certificate header by it."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        server_header=False,
        access_log=False,  # uvicorn's access line would print query strings; web.access_log writes ours
        log_config=None,
        proxy_headers=False,
    )


def dev_settings(settings: Settings) -> tuple[Settings, DevIssuer]:
    """Point the server at the embedded issuer; refuse anything but loopback."""
    if not is_loopback_host(settings.host):
        raise SettingsError(
            f"HOST: dev mode binds to loopback only (127.0.0.1, ::1 or localhost), got {settings.host!r}"
        )
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    issuer_url = f"http://{host}:{settings.port}{DEV_ISSUER_PATH}"
    # A production MCP_SERVER_URL / OAUTH_AUDIENCE (e.g. from .env) would make this server refuse its own tokens.
    server_url = f"http://{host}:{settings.port}/mcp"
    opaque = settings.dev_token_format == "opaque"  # noqa: S105 - a format name, not a secret
    overrides = {
        "mcp_server_url": server_url,
        "oauth_audience": [server_url],
        "oauth_provider": "oidc",
        "oauth_issuer": issuer_url,
        "oauth_issuers_file": "",  # the dev issuer is the only one trusted
        "oauth_jwks_uri": None,
        "oauth_well_known_url": None,
        # a preset's rules from .env would refuse the dev issuer's tokens
        "oauth_client_ids": [],
        "oauth_allowed_tenants": [],
        "oauth_required_typ": "",
        "oauth_scope_prefix": "",
        # opaque tokens: introspected at the dev issuer itself, with the dev client; else no introspection at all
        "oauth_introspection_endpoint": f"{issuer_url}/introspect" if opaque else None,
        "oauth_introspection_client_id": settings.dev_client_id if opaque else "",
        "oauth_introspection_client_secret": settings.dev_client_secret if opaque else None,
        "oauth_introspection_auth_method": "client_secret_basic",
        "oauth_introspection_audience_optional": False,
    }
    dev = settings.model_copy(update=overrides)
    issuer = DevIssuer(
        issuer=issuer_url,
        audience=dev.mcp_server_url,
        scopes=scopes_supported(dev),
        client_id=dev.dev_client_id,
        client_secret=dev.dev_client_secret.get_secret_value(),
        lifetime=dev.dev_token_lifetime_seconds,
        opaque=opaque,
    )
    return dev, issuer


def print_dev_banner(settings: Settings, issuer: DevIssuer, ignored_setting: str) -> None:
    """`ignored_setting`: the configured issuer setting dev mode sets aside, as NAME=value ("" when none)."""
    token = issuer.mint()
    line = "=" * 78
    ignored = f"\n  ({ignored_setting} is ignored in dev mode)" if ignored_setting else ""
    opaque = (
        f"\n  Opaque tokens  checked at {issuer.issuer}/introspect (RFC 7662); revoke at {issuer.issuer}/revoke"
        if issuer.opaque
        else ""
    )
    print(
        f"""{line}
  DEVELOPMENT MODE: tokens come from an embedded issuer, not from a real IdP.
  Never expose this server. It listens on {settings.host}:{settings.port} only.{ignored}
{line}
  MCP endpoint   {settings.mcp_server_url}
  Issuer         {issuer.issuer}
  Token endpoint {issuer.issuer}/token   (client {issuer.client_id}, secret from DEV_CLIENT_SECRET){opaque}

  A token with every tool scope, valid {issuer.lifetime // 60} minutes:

Authorization: Bearer {token}

  Another one from the command line:
    curl -s -u {issuer.client_id}:$DEV_CLIENT_SECRET -d grant_type=client_credentials \\
         {issuer.issuer}/token
  (the default secret is dev-secret; add -d scope=read:notes for a token with fewer scopes,
   then watch create_note get refused with 403 insufficient_scope)

  MCP Inspector (npx @modelcontextprotocol/inspector, Node 22.19+, then the URL it prints):
    1. Servers > Add Server: transport streamable-http, URL {settings.mcp_server_url}
    2. Server Settings > Custom Headers: add  Authorization  =  Bearer <the token above>
    3. Connect, then Tools > get_me > Execute Tool   (docs/inspector.md has the v1 steps)
{line}""",
        flush=True,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="MCP resource server that validates OAuth bearer tokens.",
        epilog="`python server.py doctor [TOKEN]` checks the configuration and the IdP, and explains a token "
        "(from the argument, or stdin when piped) rule by rule.",
    )
    parser.add_argument("--dev", action="store_true", help="run with the embedded development issuer (loopback only)")
    parser.add_argument("command", nargs="?", choices=["serve", "doctor"], default="serve", help="default: serve")
    parser.add_argument("token", nargs="?", help="doctor only: a token to explain ('-' reads stdin)")
    args = parser.parse_args(argv)
    if args.token is not None and args.command != "doctor":
        parser.error("a token argument is only taken by the doctor command")
    return args


def read_token(argument: str | None) -> str | None:
    """The doctor's token: the argument, or stdin for '-' or a pipe. A pasted `Authorization: Bearer ...` line
    (as the dev banner prints it) or `DPoP ...` gives the token alone."""
    if argument not in (None, "-"):
        return without_scheme(argument)
    if argument == "-" or not sys.stdin.isatty():
        return without_scheme(sys.stdin.read(65536)) or None
    return None


def without_scheme(pasted: str) -> str:
    text = pasted.strip()
    if text[:14].lower() == "authorization:":
        text = text[14:].strip()
    scheme, _, token = text.partition(" ")
    if scheme.lower() in ("bearer", "dpop") and token.strip():
        return token.strip()
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    issuer = None
    try:
        settings = load_settings()
        # Before MCPServer is built: its own basicConfig call is then a no-op.
        configure_logging(
            settings.log_level,
            settings.log_format,
            settings.log_flush_seconds,
            trace_ids=bool(exporters_of(settings)),
        )
        configured = {"OAUTH_ISSUER": settings.oauth_issuer, "OAUTH_ISSUERS_FILE": settings.oauth_issuers_file}
        ignored_setting = next((f"{name}={value}" for name, value in configured.items() if value), "")
        if args.dev:
            settings, issuer = dev_settings(settings)
        if args.command == "doctor":
            settings.require_issuer()
            return asyncio.run(run_doctor(settings, print, read_token(args.token)))
        # Before the app is built: the SDK's own middleware stays only when a provider is installed.
        provider = start_tracing(settings)
        app = build_app(
            settings,
            dev_issuer=issuer,
            extra_origins=INSPECTOR_ORIGINS if args.dev else (),
            tracer_provider=provider,
        )
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    if issuer is not None:
        print_dev_banner(settings, issuer, ignored_setting)
    config = uvicorn_config(app, settings)
    # sse-starlette ends every SSE stream once uvicorn starts shutting down, which cut legacy-era answers
    # still in flight; the grace period covers them instead (a stream still open when it ends is cancelled).
    AppStatus.disable_automatic_graceful_drain()
    try:
        GracefulServer(config).run()
    finally:
        if provider is not None:
            provider.shutdown()  # exports the spans still buffered (after SIGTERM, the last requests' spans)
    return 0


if __name__ == "__main__":
    sys.exit(main())

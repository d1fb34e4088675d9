"""`python -m client`: list tools, call one, or print a token, as a machine client of any MCP server."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2

from client.config import ClientConfig, ConfigError, load_settings, resolve
from client.errors import TokenConfigError, TokenError
from client.http_retry import one_line
from client.httpx2_auth import BearerAuth, DPoPAuth
from client.token_manager import TokenManager

if TYPE_CHECKING:
    from mcp import Client
    from mcp.types import CallToolResult, Tool

EXIT_FAILURE = 1
EXIT_USAGE = 2
MAX_TOOL_PAGES = 100
_CHALLENGE_PARAM = re.compile(r'(error|error_description)="([^"]*)"')


class UsageError(Exception):
    """Bad input on the command line (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    # Every option is accepted before or after the command; SUPPRESS keeps a subcommand from resetting it.
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection (flags win over the environment and .env)")
    for flag, metavar, text in (
        ("--server-url", "URL", "MCP endpoint [MCP_SERVER_URL; default http://127.0.0.1:8000/mcp]"),
        ("--token-url", "URL", "token endpoint [OAUTH_TOKEN_URL; default: the dev issuer of a local server]"),
        ("--issuer", "URL", "issuer whose metadata names the token endpoint [OAUTH_ISSUER]"),
        ("--client-id", "ID", "client id [OAUTH_CLIENT_ID; dev-client with the dev issuer]"),
        ("--client-secret", "SECRET", "client secret; prefer the environment [OAUTH_CLIENT_SECRET]"),
        ("--audience", "API", "Auth0 API identifier [OAUTH_TOKEN_AUDIENCE]"),
        ("--scope", "SCOPES", "space-separated scopes [OAUTH_SCOPE]"),
        ("--resource", "URI", "RFC 8707 resource [OAUTH_RESOURCE]"),
        ("--auth-method", "METHOD", "client_secret_basic (default) or client_secret_post [OAUTH_TOKEN_AUTH_METHOD]"),
    ):
        group.add_argument(flag, metavar=metavar, default=argparse.SUPPRESS, help=text)
    group.add_argument("--mode", choices=("auto", "legacy"), default=argparse.SUPPRESS, help="MCP protocol era")
    group.add_argument("--timeout", type=float, metavar="SECONDS", default=argparse.SUPPRESS, help="default 60")
    group.add_argument(
        "--dpop",
        action="store_true",
        default=argparse.SUPPRESS,
        help="DPoP-bound tokens (RFC 9449): a proof key in memory, a proof on every request [OAUTH_CLIENT_DPOP]",
    )
    group.add_argument(
        "--dev", action="store_true", default=argparse.SUPPRESS, help="ignore the environment: `make dev`'s defaults"
    )
    group.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log HTTP requests")

    parser = argparse.ArgumentParser(
        prog="python -m client",
        parents=[common],
        description="A client-credentials (machine-to-machine) client for an OAuth-protected MCP server.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("tools", parents=[common], help="list the server's tools (the default)")
    call = commands.add_parser("call", parents=[common], help="call a tool and print its result")
    call.add_argument("tool", help="tool name, e.g. get_me")
    call.add_argument("--args", default="{}", metavar="JSON", help="arguments as a JSON object, e.g. '{\"a\": 1}'")
    commands.add_parser("token", parents=[common], help="print an access token (e.g. for MCP Inspector)")
    return parser


def parse_arguments(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"--args is not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(value, dict):
        raise UsageError('--args must be a JSON object, e.g. \'{"a": 1, "b": 2}\'')
    return value


@dataclass
class RefusalRecorder:
    """An httpx2 response hook: remembers the MCP server's last HTTP error, which the SDK reports only as -32603."""

    status: int | None = None
    challenge: str = ""
    dpop_not_offered: bool = False  # a DPoP request refused with no DPoP challenge: the server does not take DPoP

    async def __call__(self, response: httpx2.Response) -> None:
        if response.status_code == 405:
            return  # a server without the optional GET stream; the SDK carries on
        failed = response.status_code >= 400
        self.status = response.status_code if failed else None
        self.challenge = response.headers.get("WWW-Authenticate", "") if failed else ""
        sent_dpop = response.request.headers.get("Authorization", "")[:5].lower() == "dpop "
        schemes = {value.strip().partition(" ")[0].lower() for value in response.headers.get_list("WWW-Authenticate")}
        self.dpop_not_offered = response.status_code == 401 and sent_dpop and "dpop" not in schemes

    def describe(self, server_url: str) -> str | None:
        if self.status is None:
            return None
        params = dict(_CHALLENGE_PARAM.findall(self.challenge))
        detail = f" {params['error']}" if params.get("error") else ""
        if params.get("error_description"):
            detail += f" ({params['error_description']})"
        if self.dpop_not_offered:
            detail += (
                " (the server offers no DPoP challenge, so it does not take DPoP tokens: "
                "try without --dpop / OAUTH_CLIENT_DPOP)"
            )
        if self.status in (401, 403):
            return f"the MCP server at {server_url} refused the token: HTTP {self.status}{detail}"
        return f"the MCP server at {server_url} answered HTTP {self.status}"


def format_tools(tools: Sequence[Tool]) -> str:
    width = max((len(tool.name) for tool in tools), default=0)
    lines = []
    for tool in tools:
        summary = (tool.description or "").strip().splitlines()[:1]
        lines.append(f"{tool.name.ljust(width)}  {summary[0] if summary else ''}".rstrip())
    return "\n".join(lines)


def format_result(result: CallToolResult) -> str:
    from mcp.types import TextContent

    if result.structured_content is not None:
        return json.dumps(result.structured_content, indent=2, ensure_ascii=False)
    parts = []
    for item in result.content:
        if isinstance(item, TextContent):
            parts.append(item.text)
        else:
            parts.append(json.dumps(item.model_dump(mode="json", by_alias=True, exclude_none=True)))
    return "\n".join(parts)


def result_error(result: CallToolResult) -> str:
    from mcp.types import TextContent

    text = " ".join(item.text for item in result.content if isinstance(item, TextContent))
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or "no details"


async def list_all_tools(client: Client) -> list[Tool]:
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def make_manager(config: ClientConfig) -> TokenManager:
    return TokenManager(
        config.client_id,
        config.client_secret,
        token_url=config.token_url,
        issuer=config.issuer,
        auth_method=config.auth_method,
        scope=config.scope,
        audience=config.audience,
        resource=config.resource,
        dpop=config.dpop,
    )


async def run(
    options: argparse.Namespace, config: ClientConfig, manager: TokenManager, recorder: RefusalRecorder
) -> int:
    async with asyncio.timeout(options.timeout):
        token = await manager.get_token()  # IdP problems surface here, before any MCP traffic
        if options.command == "token":
            print(token)
            return 0
        # The MCP SDK takes seconds to import: `token` and usage errors do without it.
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        async with (
            httpx2.AsyncClient(
                auth=DPoPAuth(manager) if manager.dpop is not None else BearerAuth(manager),
                timeout=httpx2.Timeout(30, read=300),
                event_hooks={"response": [recorder]},
            ) as http,
            Client(streamable_http_client(config.server_url, http_client=http), mode=options.mode) as mcp,
        ):
            if options.command == "tools":
                print(format_tools(await list_all_tools(mcp)))
                return 0
            result = await mcp.call_tool(options.tool, parse_arguments(options.args))
            if result.is_error:
                print(f"error: tool {options.tool} failed: {result_error(result)}", file=sys.stderr)
                return EXIT_FAILURE
            print(format_result(result))
            return 0


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, as raised by the SDK's task groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def describe_failure(error: BaseException, options: argparse.Namespace, recorder: RefusalRecorder) -> str:
    """One line for whatever stopped the command; the IdP's and the server's own words first."""
    found = leaves(error)
    for leaf in found:
        if isinstance(leaf, TokenError):
            return str(leaf)
    if any(isinstance(leaf, TimeoutError) for leaf in found):
        return f"no answer within {options.timeout:g} s (--timeout)"
    if (refusal := recorder.describe(options.server_url)) is not None:
        return refusal
    leaf = found[0]
    if isinstance(leaf, httpx2.TransportError):
        return f"cannot reach the MCP server at {options.server_url} ({type(leaf).__name__})"
    mcp = sys.modules.get("mcp")  # imported only if the MCP part was reached
    if mcp is not None and isinstance(leaf, mcp.MCPError):
        return f"the MCP server at {options.server_url} answered with error {leaf.error.code}: {leaf.error.message}"
    return f"{type(leaf).__name__}: {leaf}"


def _configure(options: argparse.Namespace) -> tuple[ClientConfig, TokenManager]:
    settings = None if getattr(options, "dev", False) else load_settings()
    config = resolve(vars(options), settings)
    if not options.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    if options.command == "call":
        parse_arguments(options.args)  # a usage error, before any network traffic
    return config, make_manager(config)


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    options.command = options.command or "tools"
    options.mode = getattr(options, "mode", "auto")
    options.args = getattr(options, "args", "{}")
    options.timeout = getattr(options, "timeout", 60.0)
    logging.basicConfig(
        level=logging.INFO if getattr(options, "verbose", False) else logging.CRITICAL,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config, manager = _configure(options)
    except (ConfigError, UsageError, TokenConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options.server_url = config.server_url
    secret = config.client_secret.get_secret_value()
    recorder = RefusalRecorder()
    try:
        return asyncio.run(run(options, config, manager, recorder))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: one line, never a traceback
        message = one_line(describe_failure(exc, options, recorder), lambda text: text.replace(secret, "***"), 400)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_FAILURE

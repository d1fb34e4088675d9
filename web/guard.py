"""DNS-rebinding protection for the MCP endpoint: Host must be ours, a present Origin must be allowed."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from auth.errors import Reason, Refusal
from auth.refusal import send_refusal
from auth.request_auth import RequestAuth, set_request_auth
from settings import is_loopback_host


def allowed_hosts_for(server_url: str, extra: Iterable[str] = ()) -> list[str]:
    """Host header values for the public URL (with any port), its loopback twins, and configured extras."""
    parts = urlsplit(server_url)
    hostname = parts.hostname or ""
    names = {f"[{hostname}]" if ":" in hostname else hostname}
    if is_loopback_host(hostname):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    names |= {host.lower() for host in extra}
    allowed = set(names)
    # A name without a port also matches it with any port: gateways send "host" or "host:443".
    allowed |= {f"{name}:*" for name in names if ":" not in name.rsplit("]", 1)[-1]}
    return sorted(allowed)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


LOOPBACK_ORIGIN_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


def is_loopback_origin(origin: str) -> bool:
    """`http(s)://` + localhost, 127.0.0.1 or [::1], with or without a port: a page served from this machine.

    Parsed by hand rather than by urlsplit, which raises on unbalanced brackets: an Origin header is untrusted
    input, and anything but exactly this shape is not a loopback origin."""
    scheme, sep, authority = origin.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return False
    host = authority
    if not authority.endswith("]"):  # "[::1]" has colons of its own
        name, colon, port = authority.rpartition(":")
        if colon:
            if not (port.isascii() and port.isdigit() and len(port) <= 5):
                return False
            host = name
    return host.lower() in LOOPBACK_ORIGIN_HOSTS


class TransportGuard:
    """Answers 421 for a foreign Host and 403 for an unlisted Origin on the protected paths.

    With `loopback_origins` (a server whose public URL is on loopback), any loopback Origin is listed."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Iterable[str],
        allowed_origins: Iterable[str],
        protected_path: str = "/mcp",
        loopback_origins: bool = False,
    ) -> None:
        self.app = app
        hosts = {host.lower() for host in allowed_hosts}
        self.exact_hosts = frozenset(host for host in hosts if not host.endswith(":*"))
        self.any_port_hosts = frozenset(host[:-2] for host in hosts if host.endswith(":*"))
        origins = set(allowed_origins)
        self.any_origin = "*" in origins
        self.origins = frozenset(origins - {"*"})
        self.protected_path = protected_path
        # A server on a loopback URL is reached from pages on this machine at any port (the Inspector, a dev
        # UI), as its Host check accepts loopback names at any port: DNS rebinding cannot forge those origins.
        self.loopback_origins = loopback_origins

    def _origin_ok(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins or (self.loopback_origins and is_loopback_origin(origin))

    def _host_ok(self, host: str) -> bool:
        host = host.lower()
        if host in self.exact_hosts:
            return True
        name, sep, port = host.rpartition(":")
        return bool(sep) and port.isdigit() and name in self.any_port_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == self.protected_path or path.startswith(self.protected_path + "/")):
            await self.app(scope, receive, send)
            return
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
        if host is None or not self._host_ok(host):
            await _refuse(scope, send, Refusal(Reason.MISDIRECTED, status=421, error="misdirected_request"))
        elif origin is not None and not self._origin_ok(origin):
            await _refuse(scope, send, Refusal(Reason.FORBIDDEN_ORIGIN, status=403, error="forbidden_origin"))
        else:
            await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send, refusal: Refusal) -> None:
    set_request_auth(scope, RequestAuth("forbidden"))  # refused before authentication: for the access log
    await send_refusal(send, refusal)

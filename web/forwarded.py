"""What a gateway tells the app about the caller, believed only from FORWARDED_ALLOW_IPS peers: X-Forwarded-For and
-Proto (uvicorn's ProxyHeadersMiddleware, run here rather than by uvicorn) and the client-certificate header.

The app does this itself, as its outermost layer, because the certificate header must be judged by the direct
peer, and uvicorn's middleware replaces the peer with the X-Forwarded-For address before the app sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from auth.middleware import LogBudget

logger = logging.getLogger(__name__)

# A client sending its own certificate header on every request must not flood the log.
IGNORED_LOG_BURST = 5
IGNORED_LOG_PER_SECOND = 0.1


class ForwardedHeaders:
    """X-Forwarded-For/-Proto applied from trusted peers; the client-certificate header (when one is configured)
    removed from every other peer's request, so what reads it later needs no trust check of its own."""

    def __init__(self, app: ASGIApp, *, trusted: Sequence[str], client_cert_header: str = "") -> None:
        self.app = app
        self.proxy = ProxyHeadersMiddleware(app, trusted_hosts=list(trusted))
        self.rewrites = bool(trusted)  # with no trusted peer at all, nothing to rewrite
        # uvicorn's own matcher (IPs, CIDR networks, *), so both headers are believed from exactly the same peers.
        self.trusted = self.proxy.trusted_hosts
        self.client_cert_header = client_cert_header.lower().encode("ascii")
        self.ignored_log = LogBudget(burst=IGNORED_LOG_BURST, per_second=IGNORED_LOG_PER_SECOND)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.client_cert_header and scope["type"] in ("http", "websocket"):
            self._drop_untrusted_certificate(scope)
        await (self.proxy if self.rewrites else self.app)(scope, receive, send)

    def _drop_untrusted_certificate(self, scope: Scope) -> None:
        headers = scope["headers"]
        if not any(name.lower() == self.client_cert_header for name, _ in headers):
            return
        peer = scope.get("client")
        host = peer[0] if peer else None
        if host in self.trusted:
            return
        scope["headers"] = [(name, value) for name, value in headers if name.lower() != self.client_cert_header]
        if self.ignored_log.allow():
            logger.warning(
                "%s header from %s ignored: that peer is not in FORWARDED_ALLOW_IPS "
                "(a client sending its own, or a gateway that is not listed)%s",
                self.client_cert_header.decode(),
                host,
                self.ignored_log.note("such headers"),
            )

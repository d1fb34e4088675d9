"""DPoP (RFC 9449) for the benchmark's clients: keys, tokens bound to them, and one fresh proof per request.

wrk cannot sign, so the proofs of a run are made just before it (each is good once: the server refuses a
replayed `jti`) and written as `token<TAB>proof` lines for bench/lua/mcp_call.lua.
"""

from __future__ import annotations

from pathlib import Path

from bench.tokens import Issuer
from client.dpop import DPoPKey

# More than A answers per second on any machine we know: a run never runs out of proofs.
PROOFS_PER_SECOND = 4000


class BoundClients:
    """`count` clients, each with its own ES256 key (the project's client's DPoPKey) and a DPoP-bound access
    token for the server at `url`."""

    def __init__(self, issuer: Issuer, url: str, count: int, prefix: str) -> None:
        self.url = url
        self.keys = [DPoPKey.generate("ES256") for _ in range(count)]
        self.tokens = [
            issuer.es256_claims({**issuer.claims(f"{prefix}-{index}", url), "cnf": {"jkt": key.thumbprint}})
            for index, key in enumerate(self.keys)
        ]

    def write_proofs(self, path: Path, count: int) -> Path:
        """`count` requests' worth of `token<TAB>proof` lines, the clients taking turns; every proof fresh now."""
        clients = len(self.keys)
        lines = []
        for index in range(count):
            key, token = self.keys[index % clients], self.tokens[index % clients]
            lines.append(f"{token}\t{key.proof('POST', self.url, access_token=token)}")
        path.write_text("\n".join(lines) + "\n")
        return path

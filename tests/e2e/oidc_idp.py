"""panva's oidc-provider (npm, pinned in tests/e2e/oidc_provider) as a real third-party IdP on 127.0.0.1.

Each instance is one `node idp.mjs config.json` process: client credentials (client_secret_basic),
introspection, revocation, resource indicators (access tokens carry `aud` = the resource, opaque or JWT per
resource) and DPoP. The signing keys are made here, so tests can forge a token with an instance's key; the
instance's JWKS endpoint can be told to fail or hang through its admin port. DPoP proofs are made here too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.support import Signer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 20.0  # an upper bound for a loaded machine; a start normally takes well under a second
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.05
IDP_DIR = PROJECT_ROOT / "tests" / "e2e" / "oidc_provider"
NODE = IDP_DIR / "node_modules" / ".bin" / "node"  # from the pinned node-<os>-<cpu> package
IDP_SCRIPT = IDP_DIR / "idp.mjs"
PROVIDER_PACKAGE = IDP_DIR / "node_modules" / "oidc-provider" / "package.json"

TOOL_SCOPES = "read:notes write:notes use:calculator"  # settings.py's tool scope defaults; get_me needs none
OTHER_RESOURCE = "https://other.example/api"  # a resource server that is not the MCP server
M2M_CLIENT = ("m2m-client", "m2m-secret")  # the machine client that asks for tokens
RESOURCE_SERVER_CLIENT = ("mcp-resource-server", "rs-secret")  # the MCP server's introspection credentials
HTTP_TIMEOUT = 10.0

TokenFormat = Literal["opaque", "jwt"]
JwksMode = Literal["ok", "fail", "hang"]


def require_node_tooling() -> None:
    """Skip with one reason when `make test` has not installed Node 22 and oidc-provider; fail under CI=true."""
    missing = [os.path.relpath(path, PROJECT_ROOT) for path in (NODE, PROVIDER_PACKAGE) if not path.exists()]
    if not missing:
        return
    reason = (
        f"oidc-provider tooling is not installed (missing {', '.join(missing)}): run `make test`, which runs "
        f"`npm ci` in {IDP_DIR.relative_to(PROJECT_ROOT)} (Node 22 is pinned for linux-x64, linux-arm64 and "
        "darwin-x64 only)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the oidc-provider tests must run)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def rsa_signer(prefix: str) -> Signer:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Signer(key, f"{prefix}-{uuid.uuid4().hex[:8]}", "RS256")


def private_jwk(signer: Signer) -> dict[str, Any]:
    """The signing key as oidc-provider's `jwks` takes it. PyJWT adds key_ops ["sign"], which oidc-provider would
    publish as is and verifiers rightly skip (a public key's op is "verify"), so it is left out."""
    jwk = RSAAlgorithm.to_jwk(signer.private_key, as_dict=True)
    jwk.pop("key_ops", None)
    return {**jwk, "kid": signer.kid, "alg": "RS256", "use": "sig"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class DpopKey:
    """A client's DPoP key (P-256) that signs RFC 9449 proofs."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.public_jwk: dict[str, str] = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)

    @property
    def thumbprint(self) -> str:
        """RFC 7638 SHA-256 thumbprint: the `cnf.jkt` of tokens bound to this key."""
        members = {name: self.public_jwk[name] for name in ("crv", "kty", "x", "y")}
        canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
        return b64url(hashlib.sha256(canonical).digest())

    def proof(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        nonce: str | None = None,
        iat: int | None = None,
        jti: str | None = None,
    ) -> str:
        claims: dict[str, Any] = {
            "htm": method,
            "htu": url,
            "iat": iat or int(time.time()),
            "jti": jti or uuid.uuid4().hex,
        }
        if token is not None:
            claims["ath"] = b64url(hashlib.sha256(token.encode()).digest())
        if nonce is not None:
            claims["nonce"] = nonce
        return jwt.encode(
            claims, self.private_key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": self.public_jwk}
        )


@dataclass
class OidcProvider:
    """One running oidc-provider instance and what tests need to drive it."""

    issuer: str
    admin_port: int
    signer: Signer
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    discovery: dict[str, Any] = field(default_factory=dict)

    @property
    def token_endpoint(self) -> str:
        return self.discovery["token_endpoint"]

    def logs(self) -> str:
        stdout = self.stdout_path.read_text(errors="replace")
        stderr = self.stderr_path.read_text(errors="replace")
        return f"oidc-provider stdout:\n{stdout}\noidc-provider stderr:\n{stderr}"

    def requests(self, method: str, path: str) -> int:
        """How many `method path` requests the instance has answered so far (from its one-line access log)."""
        lines = self.stdout_path.read_text(errors="replace").splitlines()
        return sum(1 for line in lines if line.startswith(f"{method} {path} "))

    def token_response(
        self,
        *,
        scope: str = TOOL_SCOPES,
        resource: str | None = None,
        client: tuple[str, str] = M2M_CLIENT,
        dpop: DpopKey | None = None,
        nonce: str | None = None,
    ) -> httpx.Response:
        """A client-credentials token request, as sent (the caller checks the answer)."""
        form = {"grant_type": "client_credentials", "scope": scope}
        if resource is not None:
            form["resource"] = resource
        headers = {"DPoP": dpop.proof("POST", self.token_endpoint, nonce=nonce)} if dpop is not None else {}
        return httpx.post(self.token_endpoint, data=form, auth=client, headers=headers, timeout=HTTP_TIMEOUT)

    def token(self, **options: Any) -> dict[str, Any]:
        """A client-credentials token answer; a DPoP request answers a `use_dpop_nonce` once, as clients do."""
        response = self.token_response(**options)
        if response.status_code == 400 and "DPoP-Nonce" in response.headers and options.get("dpop") is not None:
            response = self.token_response(**options, nonce=response.headers["DPoP-Nonce"])
        assert response.status_code == 200, f"token request: {response.status_code} {response.text}\n{self.logs()}"
        return response.json()

    def access_token(self, **options: Any) -> str:
        return self.token(**options)["access_token"]

    def introspect(self, token: str, *, client: tuple[str, str] = RESOURCE_SERVER_CLIENT) -> dict[str, Any]:
        response = httpx.post(
            self.discovery["introspection_endpoint"], data={"token": token}, auth=client, timeout=HTTP_TIMEOUT
        )
        assert response.status_code == 200, f"introspection: {response.status_code} {response.text}"
        return response.json()

    def revoke(self, token: str, *, client: tuple[str, str] = M2M_CLIENT) -> None:
        response = httpx.post(
            self.discovery["revocation_endpoint"], data={"token": token}, auth=client, timeout=HTTP_TIMEOUT
        )
        assert response.status_code == 200, f"revocation: {response.status_code} {response.text}"

    def set_jwks(self, mode: JwksMode) -> None:
        """From now on the JWKS endpoint answers normally (ok), with 503 (fail), or not at all (hang)."""
        response = httpx.post(f"http://{LOOPBACK}:{self.admin_port}/jwks/{mode}", timeout=HTTP_TIMEOUT)
        assert response.status_code == 204, response.text

    def forge(self, claims: Mapping[str, Any], *, signer: Signer | None = None) -> str:
        """A JWT access token signed with this instance's key (or `signer`), shaped as oidc-provider does."""
        key = signer or self.signer
        return key.sign(dict(claims), headers={"typ": "at+jwt"})

    def wait_for_discovery(self, timeout: float = STARTUP_TIMEOUT) -> None:
        url = f"{self.issuer}/.well-known/openid-configuration"
        deadline = time.monotonic() + timeout
        last = "no answer"
        for _ in range(int(timeout / POLL_INTERVAL) + 1):
            if self.process.poll() is not None:
                pytest.fail(f"oidc-provider exited with {self.process.returncode} during start-up:\n{self.logs()}")
            try:
                response = httpx.get(url, timeout=1)
            except httpx.TransportError as exc:
                last = type(exc).__name__
            else:
                if response.status_code == 200:
                    self.discovery = response.json()
                    return
                last = f"{response.status_code} {response.text}"
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_INTERVAL)
        self.stop()
        pytest.fail(f"oidc-provider discovery did not answer within {timeout} s ({last}):\n{self.logs()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)


class OidcProviderLauncher:
    """Starts oidc-provider instances in `workdir`; `close` stops every one."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.instances: list[OidcProvider] = []

    def start(
        self,
        resource: str,
        *,
        token_format: TokenFormat = "opaque",
        other_format: TokenFormat = "opaque",
        dpop_nonce: bool = False,
        signer: Signer | None = None,
    ) -> OidcProvider:
        """An instance whose tokens default to `resource` (the MCP server URL) in `token_format`; tokens for
        OTHER_RESOURCE can be asked for too (wrong-audience tests)."""
        port, admin_port = free_port(), free_port()
        issuer = f"http://{LOOPBACK}:{port}"
        signer = signer or rsa_signer(f"idp{port}")
        m2m_id, m2m_secret = M2M_CLIENT
        rs_id, rs_secret = RESOURCE_SERVER_CLIENT
        config = {
            "issuer": issuer,
            "admin_port": admin_port,
            "jwks": {"keys": [private_jwk(signer)]},
            "clients": [
                {"client_id": m2m_id, "client_secret": m2m_secret, "scope": TOOL_SCOPES},
                {"client_id": rs_id, "client_secret": rs_secret, "scope": ""},
            ],
            "introspectors": [rs_id],
            "resources": {
                resource: {"scope": TOOL_SCOPES, "format": token_format},
                OTHER_RESOURCE: {"scope": TOOL_SCOPES, "format": other_format},
            },
            "default_resource": resource,
            "dpop_nonce": dpop_nonce,
        }
        config_path = self.workdir / f"idp-{port}.json"
        config_path.write_text(json.dumps(config))
        config_path.chmod(0o600)
        stdout_path = self.workdir / f"idp-{port}.stdout"
        stderr_path = self.workdir / f"idp-{port}.stderr"
        env = {name: value for name, value in os.environ.items() if name.lower() not in {"node_options", "debug"}}
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [str(NODE), str(IDP_SCRIPT), str(config_path)],
                cwd=IDP_DIR,
                env={**env, "NODE_ENV": "production"},
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        instance = OidcProvider(issuer, admin_port, signer, process, stdout_path, stderr_path)
        self.instances.append(instance)
        instance.wait_for_discovery()
        return instance

    def close(self) -> None:
        for instance in self.instances:
            instance.stop()


@pytest.fixture(scope="module")
def oidc_idps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProviderLauncher]:
    """oidc-provider instances shared by one module's tests (skipped, or failed under CI, without Node)."""
    require_node_tooling()
    launcher = OidcProviderLauncher(tmp_path_factory.mktemp("oidc-provider"))
    yield launcher
    launcher.close()

"""DPoP-bound tokens (RFC 9449, issue 22) from a real third-party IdP: panva's oidc-provider binds its JWT access
tokens to the client's key (`cnf.jkt`); `python server.py` checks the proofs, and the project's client
(`python -m client --dpop`) gets such a token and calls the tools. Proofs made by hand cover the refusals, the
server's nonces and a gateway that rewrites scheme, host and prefix."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.client.test_cli import run_cli
from tests.e2e.conftest import LOOPBACK, ServerLauncher, ServerProcess, free_port
from tests.e2e.oidc_idp import M2M_CLIENT, DpopKey, OidcProvider, OidcProviderLauncher
from tests.support import LEGACY_VERSION, MCP_HEADERS, rpc_body

pytestmark = pytest.mark.e2e

DEFAULT_ALGS = "ES256 ES384 RS256 PS256 EdDSA"  # OAUTH_DPOP_ALGORITHMS' default, as the challenge lists it
PUBLIC_URL = "https://public.example/prefix/mcp"  # MCP_SERVER_URL behind the simulated gateway
GATEWAY = {
    "Host": "public.example",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "public.example",
    "X-Forwarded-Prefix": "/prefix",
}
GET_ME = rpc_body("tools/call", {"name": "get_me", "arguments": {}})


@dataclass
class Deployment:
    idp: OidcProvider
    server: ServerProcess
    public_url: str  # MCP_SERVER_URL: the htu proofs must name and the aud of the tokens


@pytest.fixture(scope="module")
def deployments(oidc_idps: OidcProviderLauncher, module_launcher: ServerLauncher) -> dict[str, Deployment]:
    """One IdP (JWT access tokens) and one server per set-up, booted together."""
    plans: dict[str, tuple[dict[str, str], bool, str | None]] = {
        "allowed": ({}, False, None),
        "required": ({"OAUTH_DPOP": "required"}, False, None),
        "nonce": ({"OAUTH_DPOP_NONCE": "true"}, True, None),
        "gateway": ({}, False, PUBLIC_URL),
    }
    started: dict[str, Deployment] = {}
    for name, (settings, idp_nonce, public_url) in plans.items():
        port = free_port()
        url = public_url or f"http://{LOOPBACK}:{port}/mcp"
        idp = oidc_idps.start(url, token_format="jwt", dpop_nonce=idp_nonce)
        server = module_launcher.spawn(env={"OAUTH_ISSUER": idp.issuer, "MCP_SERVER_URL": url, **settings}, port=port)
        started[name] = Deployment(idp, server, url)
    for deployment in started.values():
        deployment.server.wait_until_answering("/readyz")
    return started


def bound_token(idp: OidcProvider, key: DpopKey) -> str:
    answer = idp.token(dpop=key)
    assert answer["token_type"] == "DPoP"
    assert jwt.decode(answer["access_token"], options={"verify_signature": False})["cnf"] == {"jkt": key.thumbprint}
    return answer["access_token"]


def send(
    server: ServerProcess,
    authorization: str,
    proof: str | None,
    *,
    path: str = "/mcp",
    extra: Mapping[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> httpx.Response:
    """One MCP POST to the pod itself, with exactly the Authorization and DPoP headers given."""
    headers = {**MCP_HEADERS, "MCP-Protocol-Version": LEGACY_VERSION, "Authorization": authorization, **(extra or {})}
    if proof is not None:
        headers["DPoP"] = proof
    return httpx.post(f"{server.base_url}{path}", json=body or GET_ME, headers=headers, timeout=10)


def challenge(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    return ", ".join(response.headers.get_list("www-authenticate"))


def run_client(deployment: Deployment, tmp_path: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """`python -m client ARGS call get_me` with the IdP's discovery and the machine client; its stdout."""
    client_id, client_secret = M2M_CLIENT
    variables = {
        "OAUTH_ISSUER": deployment.idp.issuer,
        "OAUTH_CLIENT_ID": client_id,
        "OAUTH_CLIENT_SECRET": client_secret,
        "OAUTH_RESOURCE": deployment.public_url,
        "MCP_SERVER_URL": deployment.server.mcp_url,
        **(env or {}),
    }
    result = run_cli(*args, "call", "get_me", cwd=tmp_path, env=variables)
    assert result.returncode == 0, f"stdout: {result.stdout}\nstderr: {result.stderr}\n{deployment.idp.logs()}"
    return result.stdout


def test_the_project_client_gets_a_bound_token_and_calls_a_tool_where_dpop_is_required(
    deployments: dict[str, Deployment], tmp_path: Path
) -> None:
    deployment = deployments["required"]
    metadata = httpx.get(deployment.server.resource_metadata_url, timeout=10).json()
    assert metadata["dpop_bound_access_tokens_required"] is True
    assert metadata["dpop_signing_alg_values_supported"] == DEFAULT_ALGS.split()
    # A Bearer token is useless here: only the client's bound token can have passed.
    assert challenge(send(deployment.server, f"Bearer {deployment.idp.access_token()}", None))
    identity = run_client(deployment, tmp_path, "--dpop")
    assert M2M_CLIENT[0] in identity
    assert deployment.idp.issuer in identity


def test_the_client_round_trips_both_nonces_with_oauth_client_dpop(
    deployments: dict[str, Deployment], tmp_path: Path
) -> None:
    deployment = deployments["nonce"]  # the IdP and the server both answer use_dpop_nonce first
    before = deployment.idp.requests("POST", "/token")
    identity = run_client(deployment, tmp_path, env={"OAUTH_CLIENT_DPOP": "true"})
    assert M2M_CLIENT[0] in identity
    assert deployment.idp.requests("POST", "/token") == before + 2  # use_dpop_nonce, then the token


def test_a_bound_token_with_a_fresh_proof_per_request_passes(deployments: dict[str, Deployment]) -> None:
    deployment = deployments["allowed"]
    key = DpopKey()
    token = bound_token(deployment.idp, key)
    for _ in range(2):
        proof = key.proof("POST", deployment.public_url, token=token)
        response = send(deployment.server, f"DPoP {token}", proof)
        assert response.status_code == 200, response.text
    # The query string is not part of htu.
    proof = key.proof("POST", deployment.public_url, token=token)
    response = send(deployment.server, f"DPoP {token}", proof, path="/mcp?x=1")
    assert response.status_code == 200, response.text


def test_the_same_bound_token_as_bearer_is_refused(deployments: dict[str, Deployment]) -> None:
    deployment = deployments["allowed"]
    token = bound_token(deployment.idp, DpopKey())
    refused = challenge(send(deployment.server, f"Bearer {token}", None))
    assert f'algs="{DEFAULT_ALGS}"' in refused
    # Someone who copied the token cannot use it with a proof of their own key, under either scheme.
    thief_proof = DpopKey().proof("POST", deployment.public_url, token=token)
    assert "DPoP" in challenge(send(deployment.server, f"Bearer {token}", thief_proof))
    assert "DPoP" in challenge(send(deployment.server, f"DPoP {token}", thief_proof))
    # Nor without any proof.
    assert "DPoP" in challenge(send(deployment.server, f"DPoP {token}", None))


def test_a_replayed_proof_is_refused(deployments: dict[str, Deployment]) -> None:
    deployment = deployments["allowed"]
    key = DpopKey()
    token = bound_token(deployment.idp, key)
    proof = key.proof("POST", deployment.public_url, token=token, jti=uuid.uuid4().hex)
    first = send(deployment.server, f"DPoP {token}", proof)
    assert first.status_code == 200, first.text
    assert "DPoP" in challenge(send(deployment.server, f"DPoP {token}", proof))


def test_server_nonces_round_trip(deployments: dict[str, Deployment]) -> None:
    deployment = deployments["nonce"]
    key = DpopKey()
    token = bound_token(deployment.idp, key)  # the IdP's own nonce round trip happens in here
    first = send(deployment.server, f"DPoP {token}", key.proof("POST", deployment.public_url, token=token))
    assert 'error="use_dpop_nonce"' in challenge(first)
    nonce = first.headers["DPoP-Nonce"]
    proof = key.proof("POST", deployment.public_url, token=token, nonce=nonce)
    second = send(deployment.server, f"DPoP {token}", proof)
    assert second.status_code == 200, second.text
    # A nonce this server never issued: asked again, with a fresh nonce.
    forged = key.proof("POST", deployment.public_url, token=token, nonce="not-a-nonce-of-this-server")
    third = send(deployment.server, f"DPoP {token}", forged)
    assert 'error="use_dpop_nonce"' in challenge(third)
    assert third.headers["DPoP-Nonce"]


@pytest.mark.parametrize(
    ("htu", "accepted"),
    [
        (PUBLIC_URL, True),
        ("https://public.example/mcp", False),  # the public host without the gateway's prefix
        ("http://public.example/prefix/mcp", False),  # not the public scheme
    ],
)
def test_behind_a_gateway_the_public_htu_passes(deployments: dict[str, Deployment], htu: str, accepted: bool) -> None:
    deployment = deployments["gateway"]
    key = DpopKey()
    token = bound_token(deployment.idp, key)
    response = send(deployment.server, f"DPoP {token}", key.proof("POST", htu, token=token), extra=GATEWAY)
    if accepted:
        assert response.status_code == 200, response.text
    else:
        assert 'error="invalid_dpop_proof"' in challenge(response)


def test_behind_a_gateway_the_pods_own_url_is_refused(deployments: dict[str, Deployment]) -> None:
    deployment = deployments["gateway"]
    key = DpopKey()
    token = bound_token(deployment.idp, key)
    pod_url = deployment.server.mcp_url  # the pod's own address: http://127.0.0.1:<port>/mcp
    response = send(deployment.server, f"DPoP {token}", key.proof("POST", pod_url, token=token), extra=GATEWAY)
    assert 'error="invalid_dpop_proof"' in challenge(response)

"""The oidc-provider harness itself (tests/e2e/oidc_idp.py): each instance is the real IdP the issue 21/22 tests
rely on, with discovery, JWKS, client credentials per resource, introspection, revocation and DPoP."""

from __future__ import annotations

from pathlib import Path

import httpx
import jwt
import pytest

from tests.e2e import oidc_idp
from tests.e2e.conftest import LOOPBACK, ServerLauncher, free_port
from tests.e2e.oidc_idp import (
    M2M_CLIENT,
    OTHER_RESOURCE,
    TOOL_SCOPES,
    DpopKey,
    OidcProvider,
    OidcProviderLauncher,
)

pytestmark = pytest.mark.e2e

RESOURCE = "http://127.0.0.1:9/mcp"  # the MCP server these tokens are for; nothing needs to listen there


@pytest.fixture(scope="module")
def opaque_idp(oidc_idps: OidcProviderLauncher) -> OidcProvider:
    return oidc_idps.start(RESOURCE)


@pytest.fixture(scope="module")
def jwt_idp(oidc_idps: OidcProviderLauncher) -> OidcProvider:
    return oidc_idps.start(RESOURCE, token_format="jwt", dpop_nonce=True)


def verified(idp: OidcProvider, token: str, audience: str = RESOURCE) -> dict:
    """The JWT's claims, checked against the instance's published JWKS (not against the key we gave it)."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    keys = jwt.PyJWKSet.from_dict(httpx.get(idp.discovery["jwks_uri"], timeout=10).json())
    key = next(key for key in keys.keys if key.key_id == header["kid"])
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=idp.issuer)


def test_each_instance_serves_its_own_discovery_and_jwks(opaque_idp: OidcProvider, jwt_idp: OidcProvider) -> None:
    assert opaque_idp.issuer != jwt_idp.issuer
    for idp in (opaque_idp, jwt_idp):
        assert idp.discovery["issuer"] == idp.issuer
        for name in ("token_endpoint", "introspection_endpoint", "revocation_endpoint", "jwks_uri"):
            assert idp.discovery[name].startswith(f"{idp.issuer}/"), name
        assert "client_credentials" in idp.discovery["grant_types_supported"]
        assert "ES256" in idp.discovery["dpop_signing_alg_values_supported"]
        keys = httpx.get(idp.discovery["jwks_uri"], timeout=10).json()["keys"]
        assert [key["kid"] for key in keys] == [idp.signer.kid]
        assert set(keys[0]) == {"kty", "use", "kid", "alg", "e", "n"}  # the public half only, usable for "verify"


def test_client_credentials_give_an_opaque_token_that_introspects_with_aud_scope_and_client(
    opaque_idp: OidcProvider,
) -> None:
    answer = opaque_idp.token(scope="read:notes")
    assert answer["token_type"] == "Bearer"
    assert answer["access_token"].count(".") == 0  # opaque: not a JWT
    assert answer["scope"] == "read:notes"
    introspection = opaque_idp.introspect(answer["access_token"])
    assert introspection["active"] is True
    assert introspection["aud"] == RESOURCE
    assert introspection["scope"] == "read:notes"
    assert introspection["client_id"] == M2M_CLIENT[0]
    assert introspection["iss"] == opaque_idp.issuer
    assert introspection["token_type"] == "Bearer"
    assert "cnf" not in introspection


def test_a_token_for_another_resource_carries_that_audience(opaque_idp: OidcProvider) -> None:
    token = opaque_idp.access_token(resource=OTHER_RESOURCE)
    assert opaque_idp.introspect(token)["aud"] == OTHER_RESOURCE


def test_revocation_makes_a_token_inactive(opaque_idp: OidcProvider) -> None:
    token = opaque_idp.access_token()
    assert opaque_idp.introspect(token)["active"] is True
    opaque_idp.revoke(token)
    assert opaque_idp.introspect(token) == {"active": False}


def test_jwt_mode_signs_at_jwt_tokens_with_the_key_it_was_given(jwt_idp: OidcProvider) -> None:
    token = jwt_idp.access_token()
    claims = verified(jwt_idp, token)
    assert claims["scope"] == TOOL_SCOPES
    assert claims["client_id"] == M2M_CLIENT[0]
    assert "cnf" not in claims
    # A forged token with the same key verifies the same way: the cross-issuer tests rely on it.
    forged = jwt_idp.forge({**claims, "jti": "forged"})
    assert verified(jwt_idp, forged)["jti"] == "forged"


def test_dpop_bound_opaque_token_introspects_with_cnf_jkt(opaque_idp: OidcProvider) -> None:
    key = DpopKey()
    answer = opaque_idp.token(dpop=key)
    assert answer["token_type"] == "DPoP"
    introspection = opaque_idp.introspect(answer["access_token"])
    assert introspection["token_type"] == "DPoP"
    assert introspection["cnf"] == {"jkt": key.thumbprint}


def test_dpop_nonce_mode_asks_for_a_nonce_then_binds_the_jwt_token(jwt_idp: OidcProvider) -> None:
    key = DpopKey()
    first = jwt_idp.token_response(dpop=key)
    assert first.status_code == 400
    assert first.json()["error"] == "use_dpop_nonce"
    nonce = first.headers["DPoP-Nonce"]
    answer = jwt_idp.token_response(dpop=key, nonce=nonce).json()
    assert answer["token_type"] == "DPoP"
    assert verified(jwt_idp, answer["access_token"])["cnf"] == {"jkt": key.thumbprint}


def test_a_token_request_without_a_proof_is_a_bearer_token_even_in_nonce_mode(jwt_idp: OidcProvider) -> None:
    answer = jwt_idp.token()
    assert answer["token_type"] == "Bearer"


def test_the_jwks_endpoint_fails_and_recovers_on_command(oidc_idps: OidcProviderLauncher) -> None:
    idp = oidc_idps.start(RESOURCE, token_format="jwt")
    idp.set_jwks("fail")
    assert httpx.get(idp.discovery["jwks_uri"], timeout=10).status_code == 503
    idp.set_jwks("hang")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(idp.discovery["jwks_uri"], timeout=0.5)
    idp.set_jwks("ok")
    assert httpx.get(idp.discovery["jwks_uri"], timeout=10).status_code == 200


@pytest.mark.parametrize(("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_missing_node_tooling_skips_with_one_reason_but_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(oidc_idp, "NODE", tmp_path / "node")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=r"oidc-provider tooling is not installed .*make test"):
        oidc_idp.require_node_tooling()


async def test_the_server_today_accepts_its_jwt_access_tokens_and_refuses_another_resources(
    oidc_idps: OidcProviderLauncher, module_launcher: ServerLauncher
) -> None:
    """Production mode with nothing but OAUTH_ISSUER and MCP_SERVER_URL: the baseline the issue 21/22 tests extend."""
    port = free_port()
    mcp_url = f"http://{LOOPBACK}:{port}/mcp"
    idp = oidc_idps.start(mcp_url, token_format="jwt", other_format="jwt")
    server = module_launcher.start(
        env={"OAUTH_ISSUER": idp.issuer, "MCP_SERVER_URL": mcp_url}, port=port, ready_path="/readyz"
    )
    async with server.client(idp.access_token()) as client:
        result = await client.call_tool("get_me", {})
    assert not result.is_error, result.content
    identity = result.structured_content
    assert identity["client_id"] == M2M_CLIENT[0]
    assert identity["user_id"] == M2M_CLIENT[0]
    assert identity["issuer"] == idp.issuer
    assert identity["audience"] == [mcp_url]
    assert identity["scopes"] == sorted(TOOL_SCOPES.split())
    assert identity["token_type"] == "machine"
    other = server.post_mcp(idp.access_token(resource=OTHER_RESOURCE))
    assert other.status_code == 401, other.text
    assert 'error="invalid_token"' in other.headers["www-authenticate"]

"""The embedded dev issuer over HTTP: discovery, JWKS, the client-credentials token endpoint, its tokens end to end."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import jwt
import pytest
from jwt.algorithms import RSAAlgorithm
from starlette.testclient import TestClient

from auth.jwks_cache import parse_jwks
from auth.tooling.dev_issuer import DevIssuer
from server import dev_settings
from settings import Settings, SettingsError, load_settings
from tests.support import MCP_HEADERS, DpopKey, dpop_headers, parse_mcp_response, rpc_body
from tests.test_server_cli import call_get_me, running_server
from web.app import build_app

PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"
ISSUER = f"{BASE}/dev-issuer"
TOKEN_URL = "/dev-issuer/token"
SERVER_URL = f"{BASE}/mcp"
SCOPES = ("mcp:read", "mcp:write")
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


@pytest.fixture
def dev_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("PORT", str(PORT))
    monkeypatch.setenv("OAUTH_REQUIRED_SCOPES", ",".join(SCOPES))
    return monkeypatch


def dev_client(settings: Settings) -> tuple[TestClient, Settings, DevIssuer]:
    """The app exactly as `python server.py --dev` builds it."""
    dev, issuer = dev_settings(settings)
    client = TestClient(build_app(dev, dev_issuer=issuer), base_url=f"http://127.0.0.1:{dev.port}")
    return client, dev, issuer


@pytest.fixture
def client(dev_env: pytest.MonkeyPatch) -> Iterator[TestClient]:
    test_client, _, _ = dev_client(load_settings())
    with test_client:
        yield test_client


def basic(client_id: str = "dev-client", secret: str = "dev-secret") -> dict[str, str]:
    encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def decode(client: TestClient, token: str, audience: str = SERVER_URL) -> dict[str, object]:
    (jwk,) = client.get("/dev-issuer/jwks").json()["keys"]
    key = RSAAlgorithm.from_jwk(jwk)
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=ISSUER)


def assert_token_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.json()["error_description"]
    assert response.headers["cache-control"] == "no-store"


# --- discovery and keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["openid-configuration", "oauth-authorization-server"])
def test_discovery_document(client, path):
    response = client.get(f"/dev-issuer/.well-known/{path}")
    assert response.status_code == 200
    document = response.json()
    assert document["issuer"] == ISSUER  # exact: no trailing slash added
    assert document["jwks_uri"] == f"{ISSUER}/jwks"
    assert document["token_endpoint"] == f"{ISSUER}/token"
    assert document["grant_types_supported"] == ["client_credentials"]
    assert set(document["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post"}
    assert set(SCOPES) <= set(document["scopes_supported"])


def test_protected_resource_metadata_points_at_the_dev_issuer(client):
    document = client.get("/.well-known/oauth-protected-resource/mcp").json()
    assert document["resource"] == SERVER_URL
    assert document["authorization_servers"] == [ISSUER]


def test_jwks_has_one_public_rs256_key(client):
    response = client.get("/dev-issuer/jwks")
    assert response.status_code == 200
    (key,) = response.json()["keys"]
    assert key["kty"] == "RSA"
    assert key["alg"] == "RS256"
    assert key["use"] == "sig"
    assert key["kid"].startswith("dev-")
    assert not [member for member in PRIVATE_MEMBERS if member in key]
    (usable,) = parse_jwks(response.json())  # the server's own JWKS parser accepts it
    assert usable.kid == key["kid"]


def test_authorize_endpoint_explains_it_runs_no_login(client):
    response = client.get("/dev-issuer/authorize")
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_response_type"


# --- token endpoint: success ---------------------------------------------------------------------------


def test_client_secret_basic(client):
    response = client.post(TOKEN_URL, data={"grant_type": "client_credentials"}, headers=basic())
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    answer = response.json()
    assert answer["token_type"] == "Bearer"
    assert answer["expires_in"] == 3600
    # No scope requested: every scope the issuer advertises.
    advertised = client.get("/dev-issuer/.well-known/openid-configuration").json()["scopes_supported"]
    assert answer["scope"].split() == advertised
    assert set(SCOPES) <= set(advertised)
    claims = decode(client, answer["access_token"])
    assert claims["iss"] == ISSUER
    assert claims["aud"] == SERVER_URL
    assert claims["sub"] == claims["client_id"] == "dev-client"
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["scope"] == answer["scope"]
    header = jwt.get_unverified_header(answer["access_token"])
    assert header["alg"] == "RS256"
    assert header["typ"] == "at+jwt"
    assert header["kid"] == client.get("/dev-issuer/jwks").json()["keys"][0]["kid"]


def test_client_secret_post(client):
    form = {"grant_type": "client_credentials", "client_id": "dev-client", "client_secret": "dev-secret"}
    response = client.post(TOKEN_URL, data=form)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert decode(client, response.json()["access_token"])["client_id"] == "dev-client"


def test_basic_with_the_same_client_id_in_the_form_is_fine(client):
    form = {"grant_type": "client_credentials", "client_id": "dev-client"}
    assert client.post(TOKEN_URL, data=form, headers=basic()).status_code == 200


def test_scope_subset_is_honoured(client):
    form = {"grant_type": "client_credentials", "scope": "mcp:read"}
    response = client.post(TOKEN_URL, data=form, headers=basic())
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "mcp:read"
    assert decode(client, response.json()["access_token"])["scope"] == "mcp:read"


@pytest.mark.parametrize("parameter", ["resource", "audience"])
def test_resource_equal_to_the_server_url_is_accepted(client, parameter):
    form = {"grant_type": "client_credentials", parameter: SERVER_URL}
    response = client.post(TOKEN_URL, data=form, headers=basic())
    assert response.status_code == 200, response.text
    assert decode(client, response.json()["access_token"])["aud"] == SERVER_URL


def test_credentials_are_form_decoded_in_basic(dev_env):
    # RFC 6749 section 2.3.1: id and secret are form-urlencoded before Basic encoding.
    dev_env.setenv("DEV_CLIENT_SECRET", "s3cr+t/ä")
    test_client, _, _ = dev_client(load_settings())
    with test_client:
        response = test_client.post(
            TOKEN_URL, data={"grant_type": "client_credentials"}, headers=basic("dev-client", "s3cr%2Bt%2F%C3%A4")
        )
    assert response.status_code == 200, response.text


# --- token endpoint: refusals ----------------------------------------------------------------------------


def test_both_authentication_methods_at_once(client):
    form = {"grant_type": "client_credentials", "client_id": "dev-client", "client_secret": "dev-secret"}
    assert_token_error(client.post(TOKEN_URL, data=form, headers=basic()), 400, "invalid_request")


def test_basic_and_a_different_form_client_id(client):
    form = {"grant_type": "client_credentials", "client_id": "someone-else"}
    assert_token_error(client.post(TOKEN_URL, data=form, headers=basic()), 400, "invalid_request")


@pytest.mark.parametrize(
    ("headers", "form"),
    [
        (basic(secret="wrong"), {}),
        (basic(client_id="intruder"), {}),
        ({}, {"client_id": "dev-client", "client_secret": "wrong"}),
        ({}, {"client_id": "dev-client"}),
        ({}, {}),
        ({"Authorization": "Bearer something"}, {}),
        ({"Authorization": "Basic not*base64"}, {}),
    ],
    ids=["basic-wrong-secret", "basic-unknown-client", "post-wrong-secret", "post-no-secret", "none", "bearer", "bad"],
)
def test_bad_or_missing_client_authentication_is_401(client, headers, form):
    response = client.post(TOKEN_URL, data={"grant_type": "client_credentials", **form}, headers=headers)
    assert_token_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic ")
    assert "access_token" not in response.text


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", ""])
def test_other_grant_types_are_unsupported(client, grant_type):
    response = client.post(TOKEN_URL, data={"grant_type": grant_type}, headers=basic())
    assert_token_error(response, 400, "unsupported_grant_type")


def test_missing_grant_type_is_unsupported(client):
    assert_token_error(
        client.post(TOKEN_URL, data={"scope": "mcp:read"}, headers=basic()), 400, "unsupported_grant_type"
    )


def test_unknown_scope(client):
    form = {"grant_type": "client_credentials", "scope": "mcp:read admin:all"}
    response = client.post(TOKEN_URL, data=form, headers=basic())
    assert_token_error(response, 400, "invalid_scope")
    assert "admin:all" in response.json()["error_description"]


@pytest.mark.parametrize("parameter", ["resource", "audience"])
@pytest.mark.parametrize("target", ["https://other.example.com/mcp", f"{SERVER_URL}/", f"{BASE}/"])
def test_another_resource_is_an_invalid_target(client, parameter, target):
    form = {"grant_type": "client_credentials", parameter: target}
    assert_token_error(client.post(TOKEN_URL, data=form, headers=basic()), 400, "invalid_target")


def test_repeated_parameter(client):
    body = "grant_type=client_credentials&scope=mcp:read&scope=mcp:write"
    headers = {**basic(), "Content-Type": "application/x-www-form-urlencoded"}
    assert_token_error(client.post(TOKEN_URL, content=body, headers=headers), 400, "invalid_request")


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "multipart/form-data; boundary=x", None])
def test_non_form_content_type(client, content_type):
    headers = basic() if content_type is None else {**basic(), "Content-Type": content_type}
    response = client.post(TOKEN_URL, content=b"grant_type=client_credentials", headers=headers)
    assert_token_error(response, 400, "invalid_request")


def test_oversized_body(client):
    body = "grant_type=client_credentials&scope=" + "a" * (17 * 1024)
    headers = {**basic(), "Content-Type": "application/x-www-form-urlencoded"}
    response = client.post(TOKEN_URL, content=body, headers=headers)
    assert_token_error(response, 400, "invalid_request")
    assert "too large" in response.json()["error_description"]


def test_body_that_is_not_utf8(client):
    headers = {**basic(), "Content-Type": "application/x-www-form-urlencoded"}
    response = client.post(TOKEN_URL, content=b"grant_type=client_credentials&scope=\xff\xfe", headers=headers)
    assert_token_error(response, 400, "invalid_request")


# --- configuration ---------------------------------------------------------------------------------------


def test_dev_client_id_secret_and_lifetime_overrides(dev_env):
    dev_env.setenv("DEV_CLIENT_ID", "my-client")
    dev_env.setenv("DEV_CLIENT_SECRET", "my-secret")
    dev_env.setenv("DEV_TOKEN_LIFETIME_SECONDS", "120")
    test_client, _, issuer = dev_client(load_settings())
    form = {"grant_type": "client_credentials"}
    with test_client:
        default = test_client.post(TOKEN_URL, data=form, headers=basic())
        configured = test_client.post(TOKEN_URL, data=form, headers=basic("my-client", "my-secret"))
    assert_token_error(default, 401, "invalid_client")
    assert configured.status_code == 200, configured.text
    assert configured.json()["expires_in"] == 120
    claims = jwt.decode(configured.json()["access_token"], options={"verify_signature": False})
    assert claims["sub"] == claims["client_id"] == "my-client"
    assert claims["exp"] - claims["iat"] == 120
    assert issuer.client_id == "my-client"


def test_dev_settings_replace_the_production_identity_settings(dev_env):
    dev_env.setenv("OAUTH_ISSUER", "https://idp.example.com/")
    dev_env.setenv("OAUTH_JWKS_URI", "https://idp.example.com/jwks.json")
    dev_env.setenv("OAUTH_WELL_KNOWN_URL", "https://idp.example.com/.well-known/openid-configuration")
    dev_env.setenv("MCP_SERVER_URL", "https://mcp.example.com/mcp")
    dev_env.setenv("OAUTH_AUDIENCE", "api://production")
    dev, issuer = dev_settings(load_settings())
    assert dev.oauth_issuer == issuer.issuer == ISSUER
    assert dev.oauth_jwks_uri is None
    assert dev.oauth_well_known_url is None
    assert dev.metadata_url == f"{ISSUER}/.well-known/openid-configuration"
    assert dev.mcp_server_url == issuer.audience == SERVER_URL
    assert dev.oauth_audience == [SERVER_URL]


@pytest.mark.parametrize(
    ("host", "issuer_url"),
    [
        ("127.0.0.1", f"http://127.0.0.1:{PORT}/dev-issuer"),
        ("localhost", f"http://localhost:{PORT}/dev-issuer"),
        ("::1", f"http://[::1]:{PORT}/dev-issuer"),
    ],
)
def test_dev_settings_accept_loopback_hosts(dev_env, host, issuer_url):
    dev_env.setenv("HOST", host)
    dev, issuer = dev_settings(load_settings())
    assert dev.oauth_issuer == issuer.issuer == issuer_url
    assert issuer.audience == dev.mcp_server_url == issuer_url.replace("/dev-issuer", "/mcp")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", "localhost.example.com"])
def test_dev_settings_refuse_a_non_loopback_host(dev_env, host):
    dev_env.setenv("HOST", host)
    with pytest.raises(SettingsError) as caught:
        dev_settings(load_settings())
    assert str(caught.value).startswith("HOST: ")
    assert "loopback" in str(caught.value)


# --- end to end, over real HTTP --------------------------------------------------------------------------


def test_token_from_the_endpoint_is_accepted_on_mcp(tmp_path):
    """The server fetches its own discovery document and JWKS over HTTP, then verifies the token."""
    with running_server("--dev", cwd=tmp_path, DEV_CLIENT_ID="e2e-client", DEV_CLIENT_SECRET="e2e-secret") as server:
        token_response = httpx.post(
            f"{server.base_url}/dev-issuer/token",
            data={"grant_type": "client_credentials", "resource": f"{server.base_url}/mcp"},
            auth=("e2e-client", "e2e-secret"),
            timeout=10.0,
        )
        assert token_response.status_code == 200, token_response.text
        response = call_get_me(server.base_url, token_response.json()["access_token"])
        assert response.status_code == 200, response.text
        identity = parse_mcp_response(response)["result"]["structuredContent"]
        assert identity["user_id"] == identity["client_id"] == "e2e-client"
        assert identity["issuer"] == f"{server.base_url}/dev-issuer"
        assert identity["token_type"] == "machine"

        # Same issuer, audience and client, but another key: the server's JWKS does not vouch for it.
        impostor = DevIssuer(
            issuer=f"{server.base_url}/dev-issuer",
            audience=f"{server.base_url}/mcp",
            scopes=(),
            client_id="e2e-client",
            client_secret="x",
        )
        refused = call_get_me(server.base_url, impostor.mint())
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer ")
    assert "e2e-secret" not in server.stdout + server.stderr


# --- DPoP-bound tokens (RFC 9449 section 5) --------------------------------------------------------


def test_a_token_request_with_a_dpop_proof_gets_a_bound_token(client, ec_private_key):
    key = DpopKey(ec_private_key, "ES256")
    proof = key.proof("POST", f"{ISSUER}/token")
    response = client.post(TOKEN_URL, data={"grant_type": "client_credentials"}, headers={**basic(), "DPoP": proof})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["token_type"] == "DPoP"
    assert decode(client, answer["access_token"])["cnf"] == {"jkt": key.thumbprint}
    assert "dpop_signing_alg_values_supported" in client.get("/dev-issuer/.well-known/openid-configuration").json()


def test_a_dpop_bound_dev_token_works_with_proofs_only(tmp_path, ec_private_key):
    """`python server.py --dev`, over real HTTP: the token from a proof-carrying request, then proofs on /mcp."""
    key = DpopKey(ec_private_key, "ES256")
    with running_server("--dev", cwd=tmp_path) as server:
        token_url, mcp_url = f"{server.base_url}/dev-issuer/token", f"{server.base_url}/mcp"
        answer = httpx.post(
            token_url,
            data={"grant_type": "client_credentials"},
            auth=("dev-client", "dev-secret"),
            headers={"DPoP": key.proof("POST", token_url)},
            timeout=10.0,
        ).json()
        token = answer["access_token"]
        body = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
        called = httpx.post(mcp_url, json=body, headers=dpop_headers(token, key.proof(htu=mcp_url, token=token)))
        assert called.status_code == 200, called.text
        as_bearer = httpx.post(mcp_url, json=body, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"})
        assert as_bearer.status_code == 401


@pytest.mark.parametrize("fault", ["htu", "htm", "replay", "garbage"])
def test_a_bad_proof_at_the_token_endpoint_is_a_400_invalid_dpop_proof(client, ec_private_key, fault):
    key = DpopKey(ec_private_key, "ES256")
    proof = {
        "htu": key.proof("POST", SERVER_URL),
        "htm": key.proof("GET", f"{ISSUER}/token"),
        "replay": key.proof("POST", f"{ISSUER}/token"),
        "garbage": "a.b.c",
    }[fault]
    form = {"grant_type": "client_credentials"}
    if fault == "replay":
        assert client.post(TOKEN_URL, data=form, headers={**basic(), "DPoP": proof}).status_code == 200
    response = client.post(TOKEN_URL, data=form, headers={**basic(), "DPoP": proof})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_dpop_proof"

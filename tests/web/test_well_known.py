"""RFC 9728 protected resource metadata and the redirects from authorization-server well-knowns to the IdP."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tests.support import BASE_URL, DISCOVERY_URL, ISSUER, MCP_HEADERS, PRM_URL, SERVER_URL, make_settings, rpc_body
from web.app import build_app, scopes_supported
from web.well_known import resource_metadata_url

PRM_PATHS = ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"]
IDP_REDIRECT_PATHS = [
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server/mcp",
    "/.well-known/openid-configuration/mcp",
    "/.well-known/oauth-authorization-server/team-a/mcp",
]


@pytest.mark.parametrize("path", PRM_PATHS)
def test_protected_resource_metadata_fields(client, settings, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "max-age" in response.headers["cache-control"]
    document = response.json()
    assert document["resource"] == SERVER_URL
    assert document["authorization_servers"] == [ISSUER]
    assert document["authorization_servers"][0].endswith("/")  # the exact issuer string, slash kept
    assert document["scopes_supported"] == scopes_supported(settings)
    assert document["bearer_methods_supported"] == ["header"]


def test_metadata_lists_required_scopes(idp):
    settings = make_settings(oauth_required_scopes=["mcp:read", "mcp:write"])
    with TestClient(build_app(settings), base_url=BASE_URL) as client:
        document = client.get("/.well-known/oauth-protected-resource/mcp").json()
    assert document["scopes_supported"][:2] == ["mcp:read", "mcp:write"]
    assert document["scopes_supported"] == scopes_supported(settings)


def test_issuer_without_trailing_slash_is_not_normalised(idp):
    issuer = "https://login.example.org/tenant-1"
    with TestClient(build_app(make_settings(oauth_issuer=issuer)), base_url=BASE_URL) as client:
        document = client.get("/.well-known/oauth-protected-resource/mcp").json()
        redirect = client.get("/.well-known/openid-configuration", follow_redirects=False)
    assert document["authorization_servers"] == [issuer]
    assert redirect.headers["location"] == f"{issuer}/.well-known/openid-configuration"


def test_metadata_is_readable_cross_origin_without_cors_settings(client):
    response = client.get("/.well-known/oauth-protected-resource/mcp", headers={"Origin": "https://app.example.net"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"


def test_challenge_points_at_the_metadata_document(client):
    response = client.post("/mcp", json=rpc_body("tools/list"), headers=MCP_HEADERS)
    assert f'resource_metadata="{PRM_URL}"' in response.headers["www-authenticate"]
    assert client.get(PRM_URL.removeprefix(BASE_URL)).json()["resource"] == SERVER_URL


def test_path_prefixed_public_url(idp):
    server_url = "https://api.example.com/team-a/mcp"
    metadata_url = "https://api.example.com/.well-known/oauth-protected-resource/team-a/mcp"
    with TestClient(build_app(make_settings(mcp_server_url=server_url)), base_url="https://api.example.com") as client:
        response = client.get("/.well-known/oauth-protected-resource/team-a/mcp")
        assert response.status_code == 200
        assert response.json()["resource"] == server_url
        assert client.get("/.well-known/oauth-protected-resource").json()["resource"] == server_url
        challenge = client.post("/mcp", json=rpc_body("tools/list"), headers=MCP_HEADERS)
    assert challenge.status_code == 401
    assert challenge.headers["www-authenticate"].startswith(f'Bearer resource_metadata="{metadata_url}"')


@pytest.mark.parametrize(
    ("server_url", "expected"),
    [
        ("https://mcp.example.com/mcp", "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"),
        (
            "https://api.example.com/team-a/mcp",
            "https://api.example.com/.well-known/oauth-protected-resource/team-a/mcp",
        ),
        ("http://127.0.0.1:8000/mcp", "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"),
        ("https://mcp.example.com", "https://mcp.example.com/.well-known/oauth-protected-resource"),
        ("https://mcp.example.com/", "https://mcp.example.com/.well-known/oauth-protected-resource"),
    ],
)
def test_resource_metadata_url(server_url, expected):
    assert resource_metadata_url(server_url) == expected


@pytest.mark.parametrize("path", IDP_REDIRECT_PATHS)
def test_authorization_server_well_knowns_redirect_to_the_idp(client, path):
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == DISCOVERY_URL


@pytest.mark.parametrize("path", IDP_REDIRECT_PATHS)
def test_redirect_uses_the_configured_metadata_url(idp, path):
    well_known = "https://idp.example.com/custom/.well-known/oauth-authorization-server"
    with TestClient(build_app(make_settings(oauth_well_known_url=well_known)), base_url=BASE_URL) as client:
        response = client.get(path, follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == well_known


@pytest.mark.parametrize("path", [*PRM_PATHS, IDP_REDIRECT_PATHS[0], "/healthz"])
def test_well_knowns_and_health_are_not_host_guarded(client, path):
    response = client.get(path, headers={"Host": "evil.example.com"}, follow_redirects=False)
    assert response.status_code in (200, 302)

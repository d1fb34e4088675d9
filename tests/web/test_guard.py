"""The Host/Origin guard on /mcp (DNS-rebinding protection), through the real app and as a unit."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.support import BASE_URL, FakeIdP, legacy_headers, make_settings, parse_mcp_response, rpc_body
from web.app import build_app
from web.guard import TransportGuard, allowed_hosts_for, is_loopback_origin, origin_of

GET_ME = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
LOOPBACK_URL = "http://127.0.0.1:8000/mcp"


def post(client: TestClient, token: str | None = None, **headers: str) -> int:
    return client.post("/mcp", json=GET_ME, headers={**legacy_headers(token), **headers}).status_code


@pytest.fixture
def app_client(idp: FakeIdP) -> Iterator[Callable[..., TestClient]]:
    """Builds the app from settings overrides and opens a TestClient on it; all are closed at the end."""
    opened: list[TestClient] = []

    def open_client(base_url: str = BASE_URL, **overrides: object) -> TestClient:
        test_client = TestClient(build_app(make_settings(**overrides)), base_url=base_url)
        opened.append(test_client.__enter__())
        return test_client

    yield open_client
    for test_client in reversed(opened):
        test_client.__exit__(None, None, None)


@pytest.fixture
def loopback_client(app_client: Callable[..., TestClient]) -> TestClient:
    """One app on a loopback URL, shared by every example of a property test (it keeps no state per call)."""
    return app_client(base_url="http://127.0.0.1:8000", mcp_server_url=LOOPBACK_URL)


# --- Host -------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["mcp.example.com", "mcp.example.com:443", "MCP.Example.COM", "mcp.example.com:8443"])
def test_own_host_is_accepted(client, signer, host):
    response = client.post("/mcp", json=GET_ME, headers={**legacy_headers(signer.token()), "Host": host})
    assert response.status_code == 200
    assert parse_mcp_response(response)["result"]["structuredContent"]["user_id"] == "user-123"


@pytest.mark.parametrize(
    "host",
    ["evil.example.com", "mcp.example.com.evil.net", "localhost:8000", "127.0.0.1", "mcp.example.com:", "x:443"],
)
def test_foreign_host_is_421_before_auth(client, signer, host):
    assert post(client, Host=host) == 421
    response = client.post("/mcp", json=GET_ME, headers={**legacy_headers(signer.token()), "Host": host})
    assert response.status_code == 421
    assert "www-authenticate" not in response.headers
    assert response.json()["error"] == "misdirected_request"


def test_host_is_checked_on_paths_below_mcp(client):
    assert client.get("/mcp/anything", headers={"Host": "evil.example.com"}).status_code == 421


def test_extra_allowed_hosts(app_client, signer):
    client = app_client(mcp_allowed_hosts=["Internal.SVC", "gw.example.com:8443"])
    token = signer.token()
    assert post(client, token, Host="internal.svc") == 200
    assert post(client, token, Host="internal.svc:8080") == 200
    assert post(client, token, Host="gw.example.com:8443") == 200
    assert post(client, token, Host="gw.example.com:9999") == 421
    assert post(client, token, Host="mcp.example.com") == 200
    assert post(client, token, Host="evil.example.com") == 421


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:8000", "127.0.0.1:9999", "localhost:8000", "localhost", "[::1]:8000", "[::1]", "LOCALHOST:1"],
)
def test_loopback_url_allows_loopback_names(app_client, signer, host):
    client = app_client(base_url="http://127.0.0.1:8000", mcp_server_url=LOOPBACK_URL)
    assert post(client, signer.token(aud=LOOPBACK_URL), Host=host) == 200


@pytest.mark.parametrize("host", ["mcp.example.com", "0.0.0.0:8000", "127.0.0.2:8000", "localhost.evil.net:8000"])
def test_loopback_url_refuses_other_names(app_client, host):
    client = app_client(base_url="http://127.0.0.1:8000", mcp_server_url=LOOPBACK_URL)
    assert post(client, Host=host) == 421


# --- Origin -----------------------------------------------------------------------------------


def test_absent_origin_is_allowed(client, signer):
    assert post(client, signer.token()) == 200


def test_own_origin_is_allowed(client, signer):
    assert post(client, signer.token(), Origin="https://mcp.example.com") == 200


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example.com",
        "null",
        "http://mcp.example.com",
        "https://mcp.example.com:8443",
        "https://app.example.com",
        "http://localhost:3000",  # loopback origins are listed only for a server on a loopback URL
        "http://127.0.0.1:6274",
    ],
)
def test_unlisted_origin_is_403_before_auth(client, signer, origin):
    assert post(client, Origin=origin) == 403
    response = client.post("/mcp", json=GET_ME, headers={**legacy_headers(signer.token()), "Origin": origin})
    assert response.status_code == 403
    assert "www-authenticate" not in response.headers
    assert response.json()["error"] == "forbidden_origin"


def test_configured_origin_is_allowed(app_client, signer):
    client = app_client(cors_allow_origins=["https://app.example.com"])
    token = signer.token()
    assert post(client, token, Origin="https://app.example.com") == 200
    assert post(client, token, Origin="https://mcp.example.com") == 200
    assert post(client, token, Origin="https://other.example.com") == 403


def test_wildcard_origin_allows_any(app_client, signer):
    client = app_client(cors_allow_origins=["*"])
    assert post(client, signer.token(), Origin="https://anything.example.net") == 200
    assert post(client, signer.token(), Origin="null") == 200


def test_wildcard_origin_does_not_relax_host(app_client):
    client = app_client(cors_allow_origins=["*"])
    assert post(client, Host="evil.example.com", Origin="https://anything.example.net") == 421


LOOPBACK_ORIGINS = [
    "http://127.0.0.1:8000",
    "http://localhost:3000",
    "http://localhost",
    "https://localhost:8443",
    "http://[::1]:5173",
    "http://LOCALHOST:9",
]
FOREIGN_ORIGINS = [
    "https://evil.example.com",
    "http://localhost.evil.example.com",
    "http://localhost:3000.evil.example.com",
    "http://127.0.0.1.nip.io:8000",
    "http://localhost:3000/",
    "http://localhost:",
    "http://[::1",
    "ftp://localhost:21",
    "null",
]


@pytest.mark.parametrize(
    ("origin", "status"),
    [*((origin, 200) for origin in LOOPBACK_ORIGINS), *((origin, 403) for origin in FOREIGN_ORIGINS)],
)
def test_a_loopback_server_accepts_loopback_origins_at_any_port_and_still_refuses_foreign_ones(
    app_client, signer, origin, status
):
    client = app_client(base_url="http://127.0.0.1:8000", mcp_server_url=LOOPBACK_URL)
    assert post(client, signer.token(aud=LOOPBACK_URL), Origin=origin) == status


def test_dns_rebinding_protection_scenario_of_the_conformance_suite(app_client, signer):
    """What the MCP conformance suite sends: Host and Origin both on localhost, at another port than ours."""
    client = app_client(base_url="http://127.0.0.1:8000", mcp_server_url=LOOPBACK_URL)
    token = signer.token(aud=LOOPBACK_URL)
    assert post(client, token, Host="localhost:3001", Origin="http://localhost:3001") == 200
    assert post(client, token, Host="localhost:3001", Origin="http://evil.example.com") == 403
    assert post(client, token, Host="evil.example.com", Origin="http://localhost:3001") == 421


HEADER_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0xFF)  # what a header value can carry, unstripped
LOOPBACK_ORIGIN = re.compile(r"https?://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?", re.IGNORECASE | re.ASCII)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=60),
        st.from_regex(LOOPBACK_ORIGIN, fullmatch=True),
        st.from_regex(r"https?://(localhost|127\.0\.0\.1|\[::1\])[:/.\]a-z0-9]{0,8}", fullmatch=True),
    )
)
def test_is_loopback_origin_matches_its_definition_for_any_text(origin):
    assert is_loopback_origin(origin) == bool(LOOPBACK_ORIGIN.fullmatch(origin))


ORIGIN_PORTS = st.one_of(
    st.just(""),
    st.integers(0, 99999).map(":{}".format),
    st.text(alphabet=HEADER_CHARS, max_size=6).map(lambda port: ":" + port),
)
ORIGIN_HOSTS = st.sampled_from(["localhost", "127.0.0.1", "[::1]", "[::1", "evil.example.com", "localhost.evil", ""])
ORIGIN_SCHEMES = st.sampled_from(["http", "https", "HTTP", "ws", ""])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    origin=st.one_of(
        st.text(alphabet=HEADER_CHARS, max_size=40),
        st.builds("{}://{}{}".format, ORIGIN_SCHEMES, ORIGIN_HOSTS, ORIGIN_PORTS),
    )
)
def test_any_origin_header_gets_200_or_403_from_a_loopback_server(loopback_client, signer, origin):
    headers = {**legacy_headers(signer.token(aud=LOOPBACK_URL)), "Origin": origin.encode("latin-1")}
    status = loopback_client.post("/mcp", json=GET_ME, headers=headers).status_code
    assert status == (200 if is_loopback_origin(origin) else 403)


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/healthz", "/readyz"])
def test_public_paths_are_not_guarded(client, path):
    response = client.get(path, headers={"Host": "evil.example.com", "Origin": "https://evil.example.com"})
    assert response.status_code in (200, 503)


# --- allowed_hosts_for and origin_of ------------------------------------------------------------


LOOPBACK_HOSTS = ["127.0.0.1", "127.0.0.1:*", "[::1]", "[::1]:*", "localhost", "localhost:*"]


@pytest.mark.parametrize(
    ("server_url", "expected"),
    [
        ("https://mcp.example.com/mcp", ["mcp.example.com", "mcp.example.com:*"]),
        ("https://MCP.Example.com:8443/mcp", ["mcp.example.com", "mcp.example.com:*"]),
        ("https://[2001:db8::1]/mcp", ["[2001:db8::1]", "[2001:db8::1]:*"]),
        ("http://127.0.0.1:8000/mcp", LOOPBACK_HOSTS),
        ("http://localhost:8000/mcp", LOOPBACK_HOSTS),
        ("http://[::1]:8000/mcp", LOOPBACK_HOSTS),
    ],
)
def test_allowed_hosts_for(server_url, expected):
    assert allowed_hosts_for(server_url) == expected


def test_allowed_hosts_for_extras():
    hosts = allowed_hosts_for("https://mcp.example.com/mcp", ["Internal.SVC", "gw.example.com:8443", "[fd00::1]"])
    assert hosts == sorted(
        [
            "mcp.example.com",
            "mcp.example.com:*",
            "internal.svc",
            "internal.svc:*",
            "gw.example.com:8443",
            "[fd00::1]",
            "[fd00::1]:*",
        ]
    )


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://mcp.example.com/mcp", "https://mcp.example.com"),
        ("http://127.0.0.1:8000/mcp", "http://127.0.0.1:8000"),
        ("https://api.example.com/team-a/mcp", "https://api.example.com"),
    ],
)
def test_origin_of(url, origin):
    assert origin_of(url) == origin


def test_request_without_host_header_is_refused():
    sent: list[dict] = []

    async def app(scope, receive, send):
        raise AssertionError("the guarded app must not be reached")

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    guard = TransportGuard(app, allowed_hosts=["mcp.example.com"], allowed_origins=[])
    scope = {"type": "http", "method": "POST", "path": "/mcp", "headers": []}
    asyncio.run(guard(scope, receive, send))
    assert sent[0]["status"] == 421


def test_guard_passes_lifespan_and_unprotected_paths_through():
    reached: list[str] = []

    async def app(scope, receive, send):
        reached.append(scope["type"])

    async def noop(*_):
        return None

    guard = TransportGuard(app, allowed_hosts=["mcp.example.com"], allowed_origins=[])
    asyncio.run(guard({"type": "lifespan"}, noop, noop))
    asyncio.run(guard({"type": "http", "path": "/mcpx", "headers": [(b"host", b"evil")]}, noop, noop))
    assert reached == ["lifespan", "http"]

"""Behind an API gateway, over real HTTP: `https://api.example.com/team-a/mcp` forwarded to `http://pod:8000/mcp`.

The server runs as `python server.py` on loopback; the tests send what a TLS-terminating gateway sends
(Host of the public name, X-Forwarded-Proto/-For/-Host/-Prefix). Also: the health probes, fast and open.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.testclient import TestClient

from server import uvicorn_config
from settings import SettingsError, load_settings
from tests.client_certs import client_certificate, rfc9440, x5t_s256
from tests.e2e.conftest import LOOPBACK, FakeIdP, ServerLauncher, ServerProcess
from tests.support import BASE_URL, ISSUER, MCP_HEADERS, Signer, bearer, make_settings, parse_mcp_response, rpc_body
from tests.support import FakeIdP as MockedIdP
from web.app import build_app
from web.health import health_routes

PUBLIC_URL = "https://api.example.com/team-a/mcp"
PUBLIC_PRM = "https://api.example.com/.well-known/oauth-protected-resource/team-a/mcp"
CALLER_IP = "203.0.113.7"
GATEWAY = {
    "Host": "api.example.com",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-For": CALLER_IP,
    "X-Forwarded-Host": "api.example.com",
    "X-Forwarded-Prefix": "/team-a",
}
GET_ME = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
_RESOURCE_METADATA = re.compile(r'resource_metadata="([^"]+)"')

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(rsa.generate_private_key(public_exponent=65537, key_size=2048), f"gw-{uuid.uuid4().hex[:8]}", "RS256")


@pytest.fixture(scope="module")
def idp(signer: Signer) -> Iterator[FakeIdP]:
    served = FakeIdP()
    served.publish(signer)
    served.start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, idp: FakeIdP) -> Iterator[dict[str, ServerProcess]]:
    """One pod that trusts its loopback gateway (the default), one whose gateway lives elsewhere."""
    launcher = ServerLauncher(tmp_path_factory.mktemp("gateway"))
    common = {
        "OAUTH_ISSUER": idp.issuer,
        "MCP_SERVER_URL": PUBLIC_URL,
        "LOG_FORMAT": "json",
        "OAUTH_MTLS_CLIENT_CERT_HEADER": "Client-Cert",
    }
    started = {
        "trusting": launcher.spawn(env=common),
        "untrusting": launcher.spawn(env={**common, "FORWARDED_ALLOW_IPS": "192.0.2.10"}),
    }
    try:
        for server in started.values():
            server.wait_until_answering("/readyz")
        yield started
    finally:
        launcher.close()


@pytest.fixture(scope="module")
def pod(servers: dict[str, ServerProcess]) -> ServerProcess:
    return servers["trusting"]


def token_for(idp: FakeIdP, signer: Signer, **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": idp.issuer,
        "sub": "gateway-user",
        "aud": PUBLIC_URL,
        "azp": "gateway-client",
        "scope": "read:notes",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        **overrides,
    }
    return signer.sign(claims)


def via_gateway(server: ServerProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {**GATEWAY, "X-Request-ID": f"gw-{uuid.uuid4().hex[:12]}", **kwargs.pop("headers", {})}
    return httpx.request(method, server.base_url + path, headers=headers, timeout=10, **kwargs)


def access_entries(server: ServerProcess, request_id: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in server.stderr().splitlines() if line.strip()]
    return [entry for entry in entries if entry["logger"] == "access" and entry.get("request_id") == request_id]


def access_entry(server: ServerProcess, request_id: str) -> dict[str, Any]:
    for _ in range(250):  # written within LOG_FLUSH_SECONDS of the answer; allow a busy machine a moment more
        entries = access_entries(server, request_id)
        if entries:
            assert len(entries) == 1
            return entries[0]
        time.sleep(0.02)
    raise AssertionError(f"no access line for {request_id}:\n{server.stderr()}")


# --- discovery names the public URL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-protected-resource/team-a/mcp",  # what clients derive from the public URL
        "/.well-known/oauth-protected-resource/mcp",  # a gateway that strips the prefix here too
        "/.well-known/oauth-protected-resource",
    ],
)
def test_protected_resource_metadata_names_the_public_url(pod, idp, path):
    response = via_gateway(pod, "GET", path)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["resource"] == PUBLIC_URL
    assert document["authorization_servers"] == [idp.issuer]


def test_the_challenge_points_at_the_public_metadata_url(pod):
    response = via_gateway(pod, "POST", "/mcp", json=GET_ME, headers=MCP_HEADERS)
    assert response.status_code == 401  # not 421: the gateway's Host is the public one
    (metadata_url,) = _RESOURCE_METADATA.findall(response.headers["www-authenticate"])
    assert metadata_url == PUBLIC_PRM


@pytest.mark.parametrize("host", ["api.example.com", "api.example.com:443", "API.EXAMPLE.COM"])
def test_a_token_for_the_public_url_works_through_the_gateway(pod, idp, signer, host):
    response = via_gateway(
        pod,
        "POST",
        "/mcp",
        json=GET_ME,
        headers={**MCP_HEADERS, **bearer(token_for(idp, signer)), "Host": host, "X-Request-ID": "gw-call-1"},
    )
    assert response.status_code == 200, response.text
    identity = parse_mcp_response(response)["result"]["structuredContent"]
    assert identity["user_id"] == "gateway-user"
    assert PUBLIC_URL in identity["audience"]


def test_a_token_for_the_pod_address_is_refused(pod, idp, signer):
    token = token_for(idp, signer, aud=pod.mcp_url)
    response = via_gateway(pod, "POST", "/mcp", json=GET_ME, headers={**MCP_HEADERS, **bearer(token)})
    assert response.status_code == 401


def test_a_gateway_that_rewrites_host_to_the_pod_gets_421(pod, idp, signer):
    headers = {**MCP_HEADERS, **bearer(token_for(idp, signer)), "Host": "pod:8000"}
    assert via_gateway(pod, "POST", "/mcp", json=GET_ME, headers=headers).status_code == 421


# --- forwarded headers, only from trusted peers -------------------------------------------------------------------


def test_the_access_log_names_the_caller_behind_a_trusted_gateway(pod, idp, signer):
    request_id = f"gw-{uuid.uuid4().hex[:12]}"
    headers = {**MCP_HEADERS, **bearer(token_for(idp, signer)), "X-Request-ID": request_id}
    response = via_gateway(pod, "POST", "/mcp?debug=1", json=GET_ME, headers=headers)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    entry = access_entry(pod, request_id)
    assert entry["client"] == CALLER_IP
    assert entry["path"] == "/mcp"
    assert entry["status"] == 200 and entry["auth"] == "ok"
    assert entry["subject"] == "gateway-user" and entry["client_id"] == "gateway-client"


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(servers):
    server = servers["untrusting"]
    response = via_gateway(server, "GET", "/healthz", headers={"X-Request-ID": "untrusted-1"})
    assert response.status_code == 200
    assert access_entry(server, "untrusted-1")["client"] == LOOPBACK


@pytest.mark.parametrize(("name", "scheme"), [("trusting", "https"), ("untrusting", "http")])
def test_x_forwarded_proto_sets_the_scheme_only_from_trusted_peers(servers, idp, signer, name, scheme):
    # The slash redirect is built from the request's scheme (an https->http downgrade breaks SDK clients).
    # It is built from the pod's path too, without the gateway's prefix: publish the exact URL.
    headers = {**MCP_HEADERS, **bearer(token_for(idp, signer))}
    response = via_gateway(servers[name], "POST", "/mcp/", json=GET_ME, headers=headers, follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == f"{scheme}://api.example.com/mcp"


@pytest.mark.parametrize(("name", "status"), [("trusting", 200), ("untrusting", 401)])
def test_a_certificate_bound_token_with_the_certificate_the_gateway_forwards(servers, idp, signer, name, status):
    """The header is judged by the gateway's address, not by the caller's that X-Forwarded-For names."""
    certificate = client_certificate("gateway-caller")
    token = token_for(idp, signer, cnf={"x5t#S256": x5t_s256(certificate)})
    headers = {**MCP_HEADERS, **bearer(token), "Client-Cert": rfc9440(certificate)}
    response = via_gateway(servers[name], "POST", "/mcp", json=GET_ME, headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.json()["error_description"] == "certificate-bound token sent without a client certificate"


def test_every_log_line_is_json(pod):
    lines = [line for line in pod.stderr().splitlines() if line.strip()]
    assert lines
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(entry)


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("10.0.0.0/8, ,192.168.1.10", ["10.0.0.0/8", "192.168.1.10"]),
        ("*", ["*"]),
        (" ", []),
        ("fd00::/8", ["fd00::/8"]),
    ],
)
def test_forwarded_allow_ips_setting(monkeypatch, raw, parsed):
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", raw)
    assert load_settings().forwarded_allow_ips == parsed


def test_forwarded_allow_ips_defaults_to_loopback_and_refuses_names(monkeypatch):
    assert load_settings().forwarded_allow_ips == ["127.0.0.1", "::1"]
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "gateway.internal")
    with pytest.raises(SettingsError, match=r"^FORWARDED_ALLOW_IPS: expected IP addresses or CIDR networks"):
        load_settings()


def test_uvicorn_leaves_the_forwarded_headers_to_the_app():
    """The app believes X-Forwarded-* itself (web/forwarded.py): uvicorn would hide the direct peer from it."""
    config = uvicorn_config(Starlette(), make_settings(forwarded_allow_ips="10.0.0.0/8"))
    assert config.proxy_headers is False
    assert config.access_log is False


# --- health probes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.parametrize("host", ["10.0.0.5:8000", "pod", "api.example.com"])
def test_probes_answer_any_host_without_a_token(pod, path, host):
    started = time.perf_counter()
    response = httpx.get(pod.base_url + path, headers={"Host": host}, timeout=5)
    assert response.status_code == 200, response.text
    assert time.perf_counter() - started < 1.0
    assert response.headers["cache-control"] == "no-store"


def test_readiness_follows_the_first_jwks_fetch(idp_failing_then_up):
    client, keys, go_up = idp_failing_then_up
    assert keys.ready is False
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "signing keys not fetched yet" in response.json()["reason"]
    assert client.get("/healthz").status_code == 200  # liveness never depends on the IdP
    go_up()
    for _ in range(200):
        if client.get("/readyz").status_code == 200:
            break
        time.sleep(0.01)
    assert client.get("/readyz").json() == {"status": "ready"}


@pytest.fixture
def idp_failing_then_up(idp_mock) -> Iterator[tuple[TestClient, Any, Any]]:
    up = False
    idp_mock.jwks_route.mock(
        side_effect=lambda _: httpx.Response(200, json={"keys": idp_mock.keys}) if up else httpx.Response(503)
    )

    def go_up() -> None:
        nonlocal up
        up = True

    app = build_app(make_settings(oauth_jwks_refresh_cooldown_seconds=0))
    with TestClient(app, base_url=BASE_URL) as client:
        yield client, app.state.components.keys, go_up


@pytest.fixture
def idp_mock(rsa_private_key: rsa.RSAPrivateKey) -> Iterator[Any]:
    """The respx-served IdP of tests/conftest.py (the name `idp` is the real one in this module)."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        mocked = MockedIdP(router)
        mocked.publish(Signer(rsa_private_key, "rsa-1", "RS256"))
        yield mocked


def test_readiness_is_false_while_the_notes_store_is_unreachable(idp_mock, tmp_path: Path):
    app = build_app(make_settings(notes_db_path=str(tmp_path / "notes.db")))
    store = app.state.components.store
    with TestClient(app, base_url=BASE_URL) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.01)
        assert client.get("/readyz").status_code == 200
        client.portal.call(store.close)
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["reason"] == "notes store unreachable"
        assert client.get("/healthz").status_code == 200
        client.portal.call(store.open)
        assert client.get("/readyz").status_code == 200


class StuckStore:
    """A database that never answers."""

    async def ping(self) -> bool:
        await asyncio.sleep(30)
        return True


class ReadyKeys:
    ready = True

    def prefetch(self) -> None:  # pragma: no cover - never called while ready
        raise AssertionError


def test_readiness_answers_fast_even_with_a_stuck_store():
    app = Starlette(routes=health_routes({ISSUER: ReadyKeys()}, StuckStore()))  # type: ignore[arg-type]
    with TestClient(app) as client:
        started = time.perf_counter()
        response = client.get("/readyz")
        elapsed = time.perf_counter() - started
    assert response.status_code == 503
    assert elapsed < 2.0

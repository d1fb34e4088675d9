"""Certificate-bound tokens (RFC 8705) through the real app: the forwarded certificate must be the token's."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.testclient import TestClient

from auth.client_cert import MAX_CERT_BYTES, certificate_thumbprint, thumbprint
from auth.errors import InvalidRequest, Reason
from settings import SettingsError, load_settings
from tests.client_certs import client_certificate, escaped_pem, rfc9440, x5t_s256
from tests.support import BASE_URL, MCP_HEADERS, FakeIdP, Signer, bearer, make_settings, rpc_body
from web.app import build_app

GET_ME = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
GATEWAY = ("127.0.0.1", 40000)  # in the default FORWARDED_ALLOW_IPS
STRANGER = ("203.0.113.5", 40000)


@pytest.fixture(scope="module")
def cert() -> x509.Certificate:
    return client_certificate("alice-laptop")


@pytest.fixture(scope="module")
def other_cert() -> x509.Certificate:
    return client_certificate("mallory")


def app_client(peer: tuple[str, int] = GATEWAY, **settings: Any) -> TestClient:
    values = {"oauth_mtls_client_cert_header": "Client-Cert", **settings}
    return TestClient(build_app(make_settings(**values)), base_url=BASE_URL, client=peer)


@pytest.fixture
def mtls(idp: FakeIdP) -> Iterator[TestClient]:
    with app_client() as client:
        yield client


def bound_token(signer: Signer, certificate: x509.Certificate) -> str:
    return signer.token(cnf={"x5t#S256": x5t_s256(certificate)})


def get_me(client: TestClient, token: str, *cert_headers: tuple[str, str]) -> Any:
    headers = [*MCP_HEADERS.items(), *bearer(token).items(), *cert_headers]
    return client.post("/mcp", json=GET_ME, headers=headers)


def assert_refused(response: Any, status: int, error: str, reason: Reason) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": error, "error_description": reason.value}
    assert f'error="{error}"' in response.headers["www-authenticate"]


# --- the thumbprint ---------------------------------------------------------------------------------------------


def test_the_thumbprint_is_rfc_8705_x5t_s256(cert):
    der = cert.public_bytes(Encoding.DER)
    assert thumbprint(der) == x5t_s256(cert)
    assert "=" not in thumbprint(der) and len(thumbprint(der)) == 43


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(lambda c: rfc9440(c), id="rfc9440"),
        pytest.param(lambda c: rfc9440(c).rstrip("=:") + ":", id="rfc9440-unpadded"),
        pytest.param(lambda c: f"  {rfc9440(c)}\t", id="rfc9440-with-whitespace"),
    ],
)
def test_an_rfc_9440_byte_sequence_gives_the_certificate_thumbprint(cert, value):
    headers = [(b"client-cert", value(cert).encode())]
    assert certificate_thumbprint(headers, "Client-Cert") == x5t_s256(cert)


@pytest.mark.parametrize("safe", ["", "+=/"], ids=["nginx-envoy", "aws-alb"])
def test_url_encoded_pem_gives_the_same_thumbprint(cert, safe):
    headers = [(b"x-client-cert", escaped_pem(cert, safe).encode())]
    assert certificate_thumbprint(headers, "X-Client-Cert", "pem-urlencoded") == x5t_s256(cert)


def test_no_header_or_a_blank_one_is_no_certificate(cert):
    assert certificate_thumbprint([(b"other", rfc9440(cert).encode())], "Client-Cert") is None
    assert certificate_thumbprint([(b"client-cert", b"  ")], "Client-Cert") is None


def test_two_headers_are_refused_not_one_picked(cert, other_cert):
    headers = [(b"client-cert", rfc9440(cert).encode()), (b"client-cert", rfc9440(other_cert).encode())]
    with pytest.raises(InvalidRequest) as caught:
        certificate_thumbprint(headers, "Client-Cert")
    assert caught.value.reason is Reason.CERT_DUPLICATE


def test_a_chain_in_url_encoded_pem_is_refused(cert, other_cert):
    chain = escaped_pem(cert) + escaped_pem(other_cert)
    with pytest.raises(InvalidRequest) as caught:
        certificate_thumbprint([(b"client-cert", chain.encode())], "Client-Cert", "pem-urlencoded")
    assert caught.value.reason is Reason.CERT_MALFORMED


def test_pem_in_rfc_9440_mode_is_refused_with_a_hint(cert):
    with pytest.raises(InvalidRequest) as caught:
        certificate_thumbprint([(b"client-cert", escaped_pem(cert).encode())], "Client-Cert")
    assert "OAUTH_MTLS_CLIENT_CERT_FORMAT" in caught.value.detail


# --- through the app ----------------------------------------------------------------------------------------------


def test_a_token_bound_to_the_forwarded_certificate_is_accepted(mtls, signer, cert):
    response = get_me(mtls, bound_token(signer, cert), ("Client-Cert", rfc9440(cert)))
    assert response.status_code == 200, response.text
    assert response.json()["result"]["structuredContent"]["user_id"] == "user-123"


def test_a_token_bound_to_another_certificate_is_refused(mtls, signer, cert, other_cert):
    response = get_me(mtls, bound_token(signer, cert), ("Client-Cert", rfc9440(other_cert)))
    assert_refused(response, 401, "invalid_token", Reason.CERT_MISMATCH)


def test_a_certificate_bound_token_without_a_certificate_is_refused(mtls, signer, cert):
    assert_refused(get_me(mtls, bound_token(signer, cert)), 401, "invalid_token", Reason.CERT_MISSING)


def test_the_header_from_a_peer_outside_forwarded_allow_ips_is_ignored(idp, signer, cert, caplog):
    caplog.set_level(logging.WARNING, logger="web.forwarded")
    with app_client(peer=STRANGER) as client:
        response = get_me(client, bound_token(signer, cert), ("Client-Cert", rfc9440(cert)))
    assert_refused(response, 401, "invalid_token", Reason.CERT_MISSING)
    assert "client-cert header from 203.0.113.5 ignored" in caplog.text


def test_a_listed_network_is_a_trusted_gateway(idp, signer, cert):
    with app_client(peer=("10.4.5.6", 5000), forwarded_allow_ips="10.0.0.0/8") as client:
        assert get_me(client, bound_token(signer, cert), ("Client-Cert", rfc9440(cert))).status_code == 200
    with app_client(peer=GATEWAY, forwarded_allow_ips="10.0.0.0/8") as client:  # loopback no longer listed
        response = get_me(client, bound_token(signer, cert), ("Client-Cert", rfc9440(cert)))
    assert_refused(response, 401, "invalid_token", Reason.CERT_MISSING)


def test_the_certificate_is_judged_by_the_gateway_not_the_forwarded_caller(idp, signer, cert):
    """X-Forwarded-For names the caller, an address no one listed: the header still came from the gateway."""
    with app_client() as client:
        response = get_me(
            client, bound_token(signer, cert), ("Client-Cert", rfc9440(cert)), ("X-Forwarded-For", "198.51.100.7")
        )
    assert response.status_code == 200, response.text


def test_two_certificate_headers_are_a_bad_request(mtls, signer, cert):
    response = get_me(mtls, bound_token(signer, cert), ("Client-Cert", rfc9440(cert)), ("Client-Cert", rfc9440(cert)))
    assert_refused(response, 400, "invalid_request", Reason.CERT_DUPLICATE)


@pytest.mark.parametrize(
    "value",
    [
        "not a byte sequence",
        ":not*base64:",
        ":QUJD",  # no closing colon
        ":QUJD:;param=1",  # RFC 9440 defines no parameters
        ":" + base64.b64encode(b"not a certificate").decode() + ":",
        ":A:",  # one base64 character decodes to nothing
        ":" + "A" * (2 * MAX_CERT_BYTES) + ":",
    ],
)
def test_a_malformed_certificate_header_is_a_bad_request(mtls, signer, cert, value):
    response = get_me(mtls, bound_token(signer, cert), ("Client-Cert", value))
    assert_refused(response, 400, "invalid_request", Reason.CERT_MALFORMED)


def test_url_encoded_pem_through_the_app(idp, signer, cert, other_cert):
    with app_client(oauth_mtls_client_cert_format="pem-urlencoded") as client:
        token = bound_token(signer, cert)
        assert get_me(client, token, ("Client-Cert", escaped_pem(cert))).status_code == 200
        response = get_me(client, token, ("Client-Cert", escaped_pem(other_cert)))
        assert_refused(response, 401, "invalid_token", Reason.CERT_MISMATCH)
        response = get_me(client, token, ("Client-Cert", rfc9440(cert)))
        assert_refused(response, 400, "invalid_request", Reason.CERT_MALFORMED)


def test_without_the_setting_a_certificate_bound_token_stays_refused(client, signer, cert):
    response = get_me(client, bound_token(signer, cert), ("Client-Cert", rfc9440(cert)))
    assert_refused(response, 401, "invalid_token", Reason.KEY_BOUND)


def test_an_unbound_token_needs_no_certificate_and_ignores_the_header(mtls, signer):
    assert get_me(mtls, signer.token()).status_code == 200
    assert get_me(mtls, signer.token(), ("Client-Cert", "garbage")).status_code == 200


@pytest.mark.parametrize(
    "cnf",
    [
        {"x5t#S256": 42},
        {"x5t#S256": ""},
        {"x5t#S256": "\ud800"},
        {"x5t#S256": "x", "jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},  # DPoP's as well: not this check's
    ],
)
def test_a_malformed_or_mixed_certificate_binding_is_refused(mtls, signer, cert, cnf):
    response = get_me(mtls, signer.token(cnf=cnf), ("Client-Cert", rfc9440(cert)))
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


# --- the setting --------------------------------------------------------------------------------------------------


def test_client_cert_header_setting(monkeypatch):
    assert load_settings().oauth_mtls_client_cert_header == ""
    monkeypatch.setenv("OAUTH_MTLS_CLIENT_CERT_HEADER", " Client-Cert ")
    assert load_settings().oauth_mtls_client_cert_header == "Client-Cert"
    assert load_settings().oauth_mtls_client_cert_format == "rfc9440"
    monkeypatch.setenv("OAUTH_MTLS_CLIENT_CERT_FORMAT", "PEM-URLencoded")
    assert load_settings().oauth_mtls_client_cert_format == "pem-urlencoded"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("OAUTH_MTLS_CLIENT_CERT_HEADER", "Client Cert", "expected an HTTP header name like Client-Cert"),
        ("OAUTH_MTLS_CLIENT_CERT_HEADER", "Client-Cert:", "expected an HTTP header name like Client-Cert"),
        ("OAUTH_MTLS_CLIENT_CERT_HEADER", "Authorization", "read by this server for another purpose"),
        ("OAUTH_MTLS_CLIENT_CERT_HEADER", "x-forwarded-for", "read by this server for another purpose"),
        ("OAUTH_MTLS_CLIENT_CERT_FORMAT", "xfcc", "expected rfc9440 or pem-urlencoded"),
    ],
)
def test_a_bad_client_cert_setting_is_one_line_naming_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=rf"^{name}: .*{message}") as caught:
        load_settings()
    assert "\n" not in str(caught.value)


def test_the_client_cert_header_needs_a_trusted_gateway(monkeypatch):
    monkeypatch.setenv("OAUTH_MTLS_CLIENT_CERT_HEADER", "Client-Cert")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "")
    with pytest.raises(SettingsError, match=r"^OAUTH_MTLS_CLIENT_CERT_HEADER: set, but FORWARDED_ALLOW_IPS is empty"):
        load_settings()

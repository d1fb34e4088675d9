"""No client-certificate header value gives a 5xx: property-based, through the whole app, both header formats.

A certificate-bound token (signed with the test IdP's real key) is sent with any header value: the answer is
the 400 of an unreadable header or the 401 of a missing or other certificate, never a 5xx and never a 200
unless the value holds the very certificate the token is bound to.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import quote

import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from auth.client_cert import certificate_thumbprint
from auth.errors import InvalidRequest
from settings import ClientCertFormat
from tests.client_certs import client_certificate, escaped_pem, rfc9440, x5t_s256
from tests.support import BASE_URL, MCP_HEADERS, FakeIdP, Signer, bearer, make_claims, make_settings, rpc_body
from web.app import build_app

GET_ME = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
BOUNDED = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
CERT = client_certificate("property-client")
DER = CERT.public_bytes(Encoding.DER)
PEM = CERT.public_bytes(Encoding.PEM).decode()
GATEWAY = ("127.0.0.1", 40000)  # a FORWARDED_ALLOW_IPS peer: its header is read
FORMATS: tuple[ClientCertFormat, ...] = ("rfc9440", "pem-urlencoded")


def without_line_breaks(raw: bytes) -> bytes:
    return raw.replace(b"\r", b"").replace(b"\n", b"")


def flipped(data: bytes, index: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# Any bytes; and values near a real one: the certificate with one bit changed, cut short, or re-encoded oddly.
header_values = (
    st.binary(max_size=300).map(without_line_breaks)
    | st.integers(min_value=0).map(lambda i: (":" + base64.b64encode(flipped(DER, i)).decode() + ":").encode())
    | st.integers(min_value=0, max_value=len(rfc9440(CERT))).map(lambda n: rfc9440(CERT)[:n].encode())
    | st.integers(min_value=0).map(lambda i: quote(PEM[: i % len(PEM)], safe="").encode())
    | st.binary(max_size=120).map(lambda raw: quote(raw, safe="").encode())
)


@pytest.fixture(scope="module")
def worlds() -> Iterator[dict[str, tuple[TestClient, Signer]]]:
    """One app per header format, sharing the IdP."""
    signer = Signer(rsa.generate_private_key(public_exponent=65537, key_size=2048), "rsa-1", "RS256")
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router, ExitStack() as stack:
        FakeIdP(router).publish(signer)
        worlds = {}
        for fmt in FORMATS:
            app = build_app(
                make_settings(oauth_mtls_client_cert_header="Client-Cert", oauth_mtls_client_cert_format=fmt)
            )
            client = stack.enter_context(
                TestClient(app, base_url=BASE_URL, client=GATEWAY, raise_server_exceptions=False)
            )
            worlds[fmt] = (client, signer)
        yield worlds


def call(client: TestClient, token: str, value: bytes) -> Any:
    headers = [*MCP_HEADERS.items(), *bearer(token).items(), ("Client-Cert", value)]
    return client.post("/mcp", json=GET_ME, headers=headers)


@BOUNDED
@given(fmt=st.sampled_from(FORMATS), value=header_values)
@example(fmt="rfc9440", value=rfc9440(CERT).encode())
@example(fmt="pem-urlencoded", value=escaped_pem(CERT).encode())
@example(fmt="rfc9440", value=b"::")
@example(fmt="pem-urlencoded", value=b"%ff%fe-----BEGIN CERTIFICATE-----")
@example(fmt="rfc9440", value=b"\xff:\x00:")
def test_any_certificate_header_gets_a_4xx_or_the_bound_certificates_200(
    worlds: dict[str, tuple[TestClient, Signer]], fmt: ClientCertFormat, value: bytes
) -> None:
    client, signer = worlds[fmt]
    response = call(client, signer.sign(make_claims(cnf={"x5t#S256": x5t_s256(CERT)})), value)
    assert response.status_code == expected_status(value, fmt), response.text
    if response.status_code != 200:
        assert set(response.json()) == {"error", "error_description"}
        assert response.headers["www-authenticate"].startswith("Bearer ")


def expected_status(value: bytes, fmt: ClientCertFormat) -> int:
    """200 for the bound certificate itself, 400 for an unreadable header, 401 for none or another one."""
    try:
        presented = certificate_thumbprint([(b"client-cert", value)], "Client-Cert", fmt)
    except InvalidRequest:
        return 400
    return 200 if presented == x5t_s256(CERT) else 401


@BOUNDED
@given(fmt=st.sampled_from(FORMATS), values=st.lists(header_values, min_size=1, max_size=3))
def test_reading_any_headers_gives_a_thumbprint_none_or_a_bad_request(
    fmt: ClientCertFormat, values: list[bytes]
) -> None:
    headers = [(b"client-cert", value) for value in values]
    try:
        result = certificate_thumbprint(headers, "Client-Cert", fmt)
    except InvalidRequest:
        return
    assert result is None or len(result) == 43

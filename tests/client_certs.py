"""Test support for certificate-bound tokens: real self-signed client certificates and the header values a
gateway writes for them (RFC 9440 byte sequence, URL-encoded PEM)."""

from __future__ import annotations

import base64
import datetime
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID


def client_certificate(name: str) -> x509.Certificate:
    """A fresh self-signed client certificate (P-256), as a client brings to mutual TLS."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def x5t_s256(certificate: x509.Certificate) -> str:
    """The certificate's RFC 8705 thumbprint, computed apart from the code under test."""
    return base64.urlsafe_b64encode(certificate.fingerprint(hashes.SHA256())).rstrip(b"=").decode()


def rfc9440(certificate: x509.Certificate) -> str:
    """The `Client-Cert` value: an RFC 8941 byte sequence of the DER certificate."""
    return ":" + base64.b64encode(certificate.public_bytes(Encoding.DER)).decode() + ":"


def escaped_pem(certificate: x509.Certificate, safe: str = "") -> str:
    """URL-encoded PEM, as NGINX's $ssl_client_escaped_cert (safe="") or AWS ALB (safe="+=/") write it."""
    return quote(certificate.public_bytes(Encoding.PEM).decode(), safe=safe)

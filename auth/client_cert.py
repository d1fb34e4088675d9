"""Certificate-bound tokens (RFC 8705) behind a gateway that terminates client TLS: the client certificate the
gateway forwards in a request header, its `x5t#S256` thumbprint, and the check of a token's `cnf` against it.

The header is believed only from FORWARDED_ALLOW_IPS peers: web/forwarded.py removes it from every other request
before anything here reads it, so a header present in the scope came from a trusted gateway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.types import Scope

from auth.credential import single_header
from auth.errors import InvalidRequest, InvalidToken, Reason
from settings import ClientCertFormat, Settings

CONFIRMATION_MEMBER = "x5t#S256"  # RFC 8705 section 3.1
# A certificate far larger than any real one is refused before it is decoded or parsed.
MAX_CERT_BYTES = 32 * 1024
# RFC 8941 section 3.3.5: sf-binary = ":" *(base64) ":"; base64 = ALPHA / DIGIT / "+" / "/" / "="
_BYTE_SEQUENCE = re.compile(rb"^:([A-Za-z0-9+/]*={0,2}):$")
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


class MalformedCertificate(InvalidRequest):
    """The gateway's header cannot be read as a certificate: a gateway misconfiguration, answered 400."""

    def __init__(self, detail: str) -> None:
        super().__init__(Reason.CERT_MALFORMED, detail=f"client certificate header: {detail}")


def thumbprint(der: bytes) -> str:
    """RFC 8705 section 3.1: the base64url (unpadded) SHA-256 of the certificate's DER encoding."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def der_of_byte_sequence(value: bytes) -> bytes:
    """RFC 9440 `Client-Cert`: an RFC 8941 Byte Sequence, `:` base64 of the DER `:`. Missing `=` padding is
    accepted, as RFC 8941 section 4.2.7 asks of parsers; anything else around or in it is refused."""
    match = _BYTE_SEQUENCE.match(value)
    if match is None:
        hint = " (it looks like URL-encoded PEM: see OAUTH_MTLS_CLIENT_CERT_FORMAT)" if b"BEGIN" in value else ""
        raise MalformedCertificate(f"expected an RFC 9440 byte sequence :base64:{hint}")
    encoded = match.group(1).rstrip(b"=")
    try:
        return base64.b64decode(encoded + b"=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise MalformedCertificate("the base64 between the colons does not decode") from None


def der_of_escaped_pem(value: bytes) -> bytes:
    """URL-encoded PEM (NGINX's $ssl_client_escaped_cert, Envoy's %DOWNSTREAM_PEER_CERT%): exactly one
    certificate, so a forwarded chain cannot leave it open which one is the client's."""
    pem = unquote_to_bytes(value)
    if pem.count(_PEM_BEGIN) != 1:
        raise MalformedCertificate("expected URL-encoded PEM holding exactly one certificate")
    try:
        return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    except ValueError:
        raise MalformedCertificate("the PEM does not hold a readable certificate") from None


def certificate_der(value: bytes, fmt: ClientCertFormat) -> bytes:
    """The DER certificate in one header value, as the configured format writes it."""
    if len(value) > 2 * MAX_CERT_BYTES:
        raise MalformedCertificate(f"longer than {2 * MAX_CERT_BYTES} bytes")
    if fmt == "pem-urlencoded":
        return der_of_escaped_pem(value)
    der = der_of_byte_sequence(value)
    try:
        x509.load_der_x509_certificate(der)  # a thumbprint of anything but a certificate would be meaningless
    except ValueError:
        raise MalformedCertificate("the bytes are not a DER X.509 certificate") from None
    return der


def header_value(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The single value of the header `name` (lower case); None when absent or blank. RFC 9440 section 2.2:
    the field is a singleton, so two of them are refused rather than one picked."""
    found = single_header(headers, name, Reason.CERT_DUPLICATE)
    if found is None:
        return None
    found = found.strip(b" \t")
    return found or None


def certificate_thumbprint(
    headers: Iterable[tuple[bytes, bytes]], header_name: str, fmt: ClientCertFormat = "rfc9440"
) -> str | None:
    """The `x5t#S256` of the certificate forwarded in the request's header `header_name`; None without one."""
    value = header_value(headers, header_name.lower().encode("ascii"))
    return None if value is None else thumbprint(certificate_der(value, fmt))


@dataclass(frozen=True, slots=True)
class CertificateBinding:
    """Checks a certificate-bound token against the client certificate the gateway forwards (RFC 8705 section 3).
    Built only when OAUTH_MTLS_CLIENT_CERT_HEADER is set; without it, certificate-bound tokens are refused."""

    header_name: str
    fmt: ClientCertFormat = "rfc9440"

    @classmethod
    def from_settings(cls, settings: Settings) -> CertificateBinding | None:
        if not settings.oauth_mtls_client_cert_header:
            return None
        return cls(settings.oauth_mtls_client_cert_header, settings.oauth_mtls_client_cert_format)

    def __call__(self, scope: Scope, confirmation_x5t: str) -> None:
        """The bind step's certificate check (auth.binding.CertificateCheck)."""
        self.check(confirmation_x5t, scope)

    def check(self, confirmation_x5t: str, scope: Scope) -> None:
        """Nothing when the forwarded certificate is the one the token is bound to; InvalidToken otherwise
        (InvalidRequest when the header is repeated or unreadable)."""
        presented = certificate_thumbprint(scope["headers"], self.header_name, self.fmt)
        if presented is None:
            detail = f"cnf.x5t#S256: no {self.header_name} header (does the gateway forward the client certificate?)"
            raise InvalidToken(Reason.CERT_MISSING, detail=detail)
        # Constant time: the comparison must not tell a caller how much of a thumbprint it got right.
        if not hmac.compare_digest(presented.encode("ascii"), confirmation_x5t.encode("utf-8", "surrogatepass")):
            raise InvalidToken(Reason.CERT_MISMATCH, detail="cnf.x5t#S256 differs from the forwarded certificate's")

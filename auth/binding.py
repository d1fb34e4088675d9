"""The "bind" step, after verification: is this request allowed to use this token the way it presents it?

A token bound to a key (`cnf`, RFC 7800) is never a plain bearer token: whoever stole it would not need the key.
- `cnf.jkt` (RFC 9449): the DPoP scheme and a valid proof, signed by that key, for this request, on every request.
- `cnf["x5t#S256"]` (RFC 8705): the client certificate a trusted gateway forwards (a CertificateCheck); with none
  configured such tokens are refused.
- no `cnf`: the Bearer scheme (not in OAUTH_DPOP=required mode); an unbound token sent with the DPoP scheme is refused.
Verification results are cached (auth.verification_cache); the proof is checked afresh on every request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Literal, Protocol

from starlette.types import Scope

from auth.credential import Credential
from auth.dpop_nonce import NonceSource
from auth.dpop_proof import ProofKeys, ProofPolicy, proof_header, verify_proof
from auth.dpop_replay import ReplayGuard
from auth.errors import InvalidDpopProof, InvalidToken, MissingToken, Reason, UseDpopNonce
from auth.principal import Principal
from settings import DpopMode

Binding = Literal["bearer", "dpop", "mtls"]
DPOP_THUMBPRINT = "jkt"
CERTIFICATE_THUMBPRINT = "x5t#S256"


class CertificateCheck(Protocol):
    """The mTLS hook (auth.client_cert): nothing when the certificate forwarded for this request has the token's
    thumbprint; an AuthError (e.g. InvalidToken) when it is absent, untrusted or another certificate."""

    def __call__(self, scope: Scope, thumbprint: str) -> None: ...


def describe_confirmation(confirmation: Mapping[str, str] | None) -> str:
    """What a token's binding asks of the request, as the doctor and the refusal log say it."""
    if confirmation is None:
        return "not bound to a key (no cnf claim): a bearer token"
    if DPOP_THUMBPRINT in confirmation:
        return "bound to a DPoP key (cnf.jkt): must be sent with the DPoP scheme and a proof (RFC 9449)"
    if CERTIFICATE_THUMBPRINT in confirmation:
        return "bound to a client certificate (cnf.x5t#S256): must come with that certificate (RFC 8705)"
    return "bound to a key this server cannot check (cnf): refused (RFC 7800)"


def _bearer_refusal(confirmation: Mapping[str, str]) -> InvalidToken:
    if DPOP_THUMBPRINT in confirmation:
        why = "cnf.jkt: a DPoP-bound token sent with the Bearer scheme (RFC 9449 section 7)"
    elif CERTIFICATE_THUMBPRINT in confirmation:
        why = "cnf.x5t#S256: a certificate-bound token sent without its certificate (RFC 8705 section 3)"
    else:
        why = "cnf: a key-bound token sent as a bearer token (RFC 7800)"
    return InvalidToken(Reason.KEY_BOUND, detail=why)


class KeyBinding:
    """The bind step for one server: the DPoP mode and proof rules, its replay guard and nonces, the mTLS hook."""

    def __init__(
        self,
        *,
        mode: DpopMode = "off",
        policy: ProofPolicy | None = None,
        server_url: str = "",
        endpoint_path: str = "/mcp",
        nonces: NonceSource | None = None,
        replay: ReplayGuard | None = None,
        certificate: CertificateCheck | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode != "off" and (policy is None or not server_url):
            raise ValueError("DPoP needs a proof policy and the server's public URL")
        self.mode = mode
        self.policy = policy
        self.nonces = nonces
        self.certificate = certificate
        self._clock = clock
        self._proof_keys = ProofKeys()
        self._replay = replay or ReplayGuard(window=policy.max_age if policy else 0, clock=clock)
        self._server_url = server_url
        self._endpoint_path = endpoint_path
        # The public URL of any other path: the server URL's origin and gateway prefix, then the pod's path.
        self._public_base = server_url.removesuffix(endpoint_path) if server_url.endswith(endpoint_path) else ""

    def public_url(self, path: str) -> str:
        """The URL a client addressed for `path`, as it must write it in `htu`: from MCP_SERVER_URL, never from
        the request's Host (behind a gateway the pod sees another host, scheme and path)."""
        if path == self._endpoint_path or not self._public_base:
            return self._server_url
        return self._public_base + path

    def admit(self, credential: Credential) -> None:
        """The checks that need no verified token (run before verification, so a refused scheme costs nothing)."""
        if credential.scheme == "dpop" and self.mode == "off":
            raise MissingToken(Reason.OTHER_SCHEME)
        if credential.scheme == "bearer" and self.mode == "required":
            raise InvalidToken(Reason.DPOP_REQUIRED)

    async def check(self, principal: Principal, credential: Credential, scope: Scope) -> Binding:
        """Nothing to say when the request may use the token as presented (the binding it used is returned);
        an AuthError when not. Called after verification, on every request."""
        self.admit(credential)
        confirmation = principal.confirmation
        if credential.scheme == "dpop":
            if confirmation is None or DPOP_THUMBPRINT not in confirmation:
                raise InvalidToken(Reason.DPOP_NOT_BOUND, detail="DPoP scheme with a token that has no cnf.jkt")
            self._check_proof(confirmation[DPOP_THUMBPRINT], credential.token, scope)
            if CERTIFICATE_THUMBPRINT in confirmation:
                self._check_certificate(confirmation, scope)
            return "dpop"
        if confirmation is None:
            return "bearer"
        if DPOP_THUMBPRINT not in confirmation and CERTIFICATE_THUMBPRINT in confirmation:
            self._check_certificate(confirmation, scope)
            return "mtls"
        raise _bearer_refusal(confirmation)

    def _check_certificate(self, confirmation: Mapping[str, str], scope: Scope) -> None:
        if self.certificate is None:
            raise _bearer_refusal({CERTIFICATE_THUMBPRINT: ""})
        self.certificate(scope, confirmation[CERTIFICATE_THUMBPRINT])

    def _check_proof(self, thumbprint: str, token: str, scope: Scope) -> None:
        assert self.policy is not None  # admit() refused the DPoP scheme when DPoP is off
        proof_text = proof_header(scope["headers"])
        if proof_text is None:
            raise InvalidDpopProof(Reason.DPOP_MISSING_PROOF)
        proof = verify_proof(
            proof_text,
            method=scope["method"],
            url=self.public_url(scope["path"]),
            policy=self.policy,
            now=self._clock(),
            access_token=token,
            keys=self._proof_keys,
        )
        if proof.thumbprint != thumbprint:
            raise InvalidDpopProof(Reason.DPOP_KEY_MISMATCH)
        if self.nonces is not None and self.nonces.age(proof.nonce) is None:
            detail = "DPoP proof without a nonce" if proof.nonce is None else "DPoP nonce not issued here, or expired"
            raise UseDpopNonce(self.nonces.issue(), detail=detail)
        if not self._replay.first_use(proof.thumbprint, proof.jti, proof.issued_at):
            raise InvalidDpopProof(Reason.DPOP_REPLAY)

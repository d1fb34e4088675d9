"""A local OAuth issuer for development only: discovery, a JWKS and a client-credentials token endpoint; with
the opaque token format, an introspection (RFC 7662) and a revocation (RFC 7009) endpoint too.

Its tokens are checked by the same JWKS cache and verifier (or introspector) as any real IdP's; it is mounted
only by `python server.py --dev`, which binds to loopback.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from auth.dpop_proof import ProofPolicy, proof_header, verify_proof
from auth.dpop_replay import ReplayGuard
from auth.errors import AuthError, Reason, Refusal
from auth.refusal import refusal_response
from settings import DEFAULT_DPOP_ALGORITHMS

DEV_ISSUER_PATH = "/dev-issuer"
_MAX_FORM_BYTES = 16 * 1024
MAX_OPAQUE_TOKENS = 10_000  # the oldest issued opaque token is forgotten (then inactive) beyond this
# DPoP proofs at the token endpoint (RFC 9449 section 5): the server's default algorithms and window.
DPOP_POLICY = ProofPolicy(algorithms=frozenset(DEFAULT_DPOP_ALGORITHMS), max_age=300)


class TokenRequestError(Refusal):
    """An RFC 6749 section 5.2 error of the token endpoint."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(Reason.BAD_REQUEST, description=description, status=status, error=error)


class DevIssuer:
    """Holds a fresh RSA key per process; tokens last `lifetime` seconds and name `audience`."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        scopes: Iterable[str],
        client_id: str,
        client_secret: str,
        lifetime: int = 3600,
        opaque: bool = False,  # DEV_TOKEN_FORMAT=opaque
    ) -> None:
        self.issuer = issuer
        self.opaque = opaque
        self._opaque: OrderedDict[str, dict[str, Any]] = OrderedDict()  # issued opaque token -> its claims
        self.audience = audience
        self.scopes = tuple(scopes)
        self.client_id = client_id
        self._client_secret = client_secret
        self.lifetime = lifetime
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "dev-" + secrets.token_hex(8)
        self._dpop_replay = ReplayGuard(window=DPOP_POLICY.max_age)

    # --- documents -----------------------------------------------------------------------------
    def jwks(self) -> dict[str, object]:
        jwk = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def metadata(self) -> dict[str, object]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks",
            "token_endpoint": f"{self.issuer}/token",
            # Only for clients whose metadata model requires it: this issuer runs no login flow.
            "authorization_endpoint": f"{self.issuer}/authorize",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
            ],
            "response_types_supported": ["token"],
            "scopes_supported": list(self.scopes),
            "id_token_signing_alg_values_supported": ["RS256"],
            "dpop_signing_alg_values_supported": sorted(DPOP_POLICY.algorithms),
            "subject_types_supported": ["public"],
            **self._opaque_metadata(),
        }

    def _opaque_metadata(self) -> dict[str, object]:
        if not self.opaque:
            return {}
        methods = ["client_secret_basic", "client_secret_post"]
        return {
            "introspection_endpoint": f"{self.issuer}/introspect",
            "introspection_endpoint_auth_methods_supported": methods,
            "revocation_endpoint": f"{self.issuer}/revoke",
            "revocation_endpoint_auth_methods_supported": methods,
        }

    # --- tokens --------------------------------------------------------------------------------
    def mint(self, scopes: Iterable[str] | None = None, *, lifetime: int | None = None, jkt: str | None = None) -> str:
        """An access token; bound to the DPoP key with thumbprint `jkt` when given (RFC 9449 section 6)."""
        now = int(time.time())
        granted = self.scopes if scopes is None else tuple(scopes)
        claims = {
            "iss": self.issuer,
            "sub": self.client_id,
            "aud": self.audience,
            "client_id": self.client_id,
            "scope": " ".join(granted),
            "iat": now,
            "nbf": now,
            "exp": now + (lifetime or self.lifetime),
            "jti": secrets.token_urlsafe(16),
        }
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        if self.opaque:
            return self._mint_opaque(claims)
        return jwt.encode(
            claims,
            self._key,
            algorithm="RS256",
            headers={"kid": self.kid, "typ": "at+jwt"},
        )

    def _mint_opaque(self, claims: dict[str, Any]) -> str:
        token = secrets.token_urlsafe(32)
        self._opaque[token] = claims
        while len(self._opaque) > MAX_OPAQUE_TOKENS:
            self._opaque.popitem(last=False)
        return token

    def introspection_response(self, form: dict[str, list[str]], authorization: str | None) -> dict[str, object]:
        """RFC 7662 section 2.2: the claims of a live opaque token this issuer issued, else only active false."""
        token = self._authenticated_token(form, authorization)
        claims = self._opaque.get(token)
        if claims is None or claims["exp"] <= time.time():
            return {"active": False}
        return {"active": True, "token_type": "DPoP" if "cnf" in claims else "Bearer", **claims}

    def revoke(self, form: dict[str, list[str]], authorization: str | None) -> dict[str, object]:
        """RFC 7009: the token is inactive from now on (an unknown token is no error); the answer is empty."""
        self._opaque.pop(self._authenticated_token(form, authorization), None)
        return {}

    def _authenticated_token(self, form: dict[str, list[str]], authorization: str | None) -> str:
        if any(len(items) > 1 for items in form.values()):
            raise TokenRequestError("invalid_request", "parameters must not repeat")
        values = {name: items[0] for name, items in form.items()}
        self._authenticate(values, authorization)
        token = values.get("token")
        if not token:
            raise TokenRequestError("invalid_request", "the token parameter is required")
        return token

    def dpop_thumbprint(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The key thumbprint of the token request's DPoP proof (htm POST, htu this token endpoint), or None when
        the request carries none; TokenRequestError invalid_dpop_proof when it is not valid (RFC 9449 section 5)."""
        try:
            proof_text = proof_header(headers)
            if proof_text is None:
                return None
            url = f"{self.issuer}/token"
            proof = verify_proof(proof_text, method="POST", url=url, policy=DPOP_POLICY, now=time.time())
        except AuthError as exc:
            raise TokenRequestError("invalid_dpop_proof", exc.description) from None
        if not self._dpop_replay.first_use(proof.thumbprint, proof.jti, proof.issued_at):
            raise TokenRequestError("invalid_dpop_proof", Reason.DPOP_REPLAY.value)
        return proof.thumbprint

    def token_response(
        self, form: dict[str, list[str]], authorization: str | None, *, jkt: str | None = None
    ) -> dict[str, object]:
        """RFC 6749 section 4.4 with client_secret_basic or client_secret_post, RFC 8707 `resource`; with `jkt`
        (the request's DPoP proof key) a DPoP-bound token."""
        values = {name: items[0] for name, items in form.items() if len(items) == 1}
        if any(len(items) > 1 for items in form.values()):
            raise TokenRequestError("invalid_request", "parameters must not repeat")
        self._authenticate(values, authorization)
        if values.get("grant_type") != "client_credentials":
            raise TokenRequestError(
                "unsupported_grant_type",
                "only grant_type=client_credentials is supported",
            )
        for name in ("resource", "audience"):
            if name in values and values[name] != self.audience:
                raise TokenRequestError(
                    "invalid_target",
                    f"this issuer only issues tokens for {self.audience}",
                )
        requested = values.get("scope", "").split()
        unknown = [scope for scope in requested if scope not in self.scopes]
        if unknown:
            raise TokenRequestError("invalid_scope", f"unknown scope: {' '.join(unknown)}")
        granted = tuple(requested) if requested else self.scopes
        return {
            "access_token": self.mint(granted, jkt=jkt),
            "token_type": "Bearer" if jkt is None else "DPoP",
            "expires_in": self.lifetime,
            "scope": " ".join(granted),
        }

    def _authenticate(self, values: dict[str, str], authorization: str | None) -> None:
        client_id, secret = values.get("client_id"), values.get("client_secret")
        if authorization:
            if secret is not None:
                raise TokenRequestError("invalid_request", "use one client authentication method, not two")
            scheme, _, encoded = authorization.partition(" ")
            if scheme.lower() != "basic":
                raise TokenRequestError("invalid_client", "unsupported client authentication", 401)
            try:
                decoded = base64.b64decode(encoded, validate=True).decode()
            except ValueError:
                raise TokenRequestError("invalid_client", "malformed Basic credentials", 401) from None
            basic_id, _, basic_secret = decoded.partition(":")
            if client_id is not None and client_id != unquote_plus(basic_id):
                raise TokenRequestError("invalid_request", "client_id does not match the Basic credentials")
            client_id, secret = unquote_plus(basic_id), unquote_plus(basic_secret)
        if client_id is None or secret is None:
            raise TokenRequestError("invalid_client", "client authentication required", 401)
        id_ok = hmac.compare_digest(client_id.encode(), self.client_id.encode())
        secret_ok = hmac.compare_digest(secret.encode(), self._client_secret.encode())
        if not (id_ok and secret_ok):
            raise TokenRequestError("invalid_client", "unknown client or wrong secret", 401)

    # --- HTTP ----------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        async def metadata(_: Request) -> Response:
            return JSONResponse(self.metadata())

        async def jwks(_: Request) -> Response:
            return JSONResponse(self.jwks(), headers={"Cache-Control": "public, max-age=300"})

        async def authorize(_: Request) -> Response:
            description = "the dev issuer only issues client-credentials tokens; POST to the token endpoint instead"
            return refusal_response(TokenRequestError("unsupported_response_type", description))

        async def token(request: Request) -> Response:
            def answer(form: dict[str, list[str]], authorization: str | None) -> dict[str, object]:
                return self.token_response(form, authorization, jkt=self.dpop_thumbprint(request.headers.raw))

            return await _form_endpoint(request, answer)

        async def introspect(request: Request) -> Response:
            return await _form_endpoint(request, self.introspection_response)

        async def revoke(request: Request) -> Response:
            return await _form_endpoint(request, self.revoke)

        base = DEV_ISSUER_PATH
        return [
            Route(f"{base}/.well-known/openid-configuration", metadata, methods=["GET"]),
            Route(
                f"{base}/.well-known/oauth-authorization-server",
                metadata,
                methods=["GET"],
            ),
            Route(f"{base}/jwks", jwks, methods=["GET"]),
            Route(f"{base}/authorize", authorize, methods=["GET"]),
            Route(f"{base}/token", token, methods=["POST"]),
            *(
                [
                    Route(f"{base}/introspect", introspect, methods=["POST"]),
                    Route(f"{base}/revoke", revoke, methods=["POST"]),
                ]
                if self.opaque
                else []
            ),
        ]


async def _form_endpoint(
    request: Request, answer_for: Callable[[dict[str, list[str]], str | None], dict[str, object]]
) -> Response:
    """A form POST answered with JSON (token, introspection, revocation), or an RFC 6749 section 5.2 error."""
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    raw_headers = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
    try:
        body = await _bounded_body(request)
        form = parse_qs(
            body.decode("utf-8", "strict"),
            keep_blank_values=True,
            strict_parsing=False,
        )
        answer = answer_for(form, request.headers.get("authorization"))
    except TokenRequestError as exc:
        if exc.status == 401:
            raw_headers.append((b"www-authenticate", b'Basic realm="dev-issuer"'))
        return refusal_response(exc, raw_headers)
    except UnicodeDecodeError:
        return refusal_response(TokenRequestError("invalid_request", "the form must be UTF-8"), raw_headers)
    return Response(json.dumps(answer), media_type="application/json", headers=headers)


async def _bounded_body(request: Request) -> bytes:
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise TokenRequestError("invalid_request", "expected an application/x-www-form-urlencoded body")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise TokenRequestError("invalid_request", "request body too large")
    return bytes(body)

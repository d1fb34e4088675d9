"""RFC 9728 protected resource metadata, and redirects from the authorization-server well-knowns to the IdP."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

PRM_PATH = "/.well-known/oauth-protected-resource"
_PUBLIC_HEADERS = {
    "Cache-Control": "public, max-age=300",
    "Access-Control-Allow-Origin": "*",
}


def resource_metadata_url(server_url: str) -> str:
    """RFC 9728 section 3.1: the well-known segment goes between the host and the resource's path."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, PRM_PATH + parts.path.rstrip("/"), "", ""))


def protected_resource_metadata(
    server_url: str,
    issuers: Iterable[str],
    scopes: Iterable[str],
    *,
    dpop_algorithms: Iterable[str] = (),
    dpop_required: bool = False,
) -> dict[str, object]:
    """`dpop_algorithms` empty: DPoP is off and not announced; `dpop_required`: OAUTH_DPOP=required."""
    document: dict[str, object] = {
        "resource": server_url,
        "authorization_servers": list(issuers),  # the exact issuer strings, never normalised, in file order
        "scopes_supported": list(scopes),
        "bearer_methods_supported": ["header"],
        "resource_name": "MCP resource server",
    }
    algorithms = list(dpop_algorithms)
    if algorithms:
        document["dpop_signing_alg_values_supported"] = algorithms  # RFC 9728 section 2
    if algorithms and dpop_required:
        document["dpop_bound_access_tokens_required"] = True
    return document


def well_known_routes(
    *,
    server_url: str,
    issuers: Iterable[str],
    scopes: Iterable[str],
    idp_metadata_url: str,
    dpop_algorithms: Iterable[str] = (),
    dpop_required: bool = False,
) -> list[Route]:
    """`idp_metadata_url`: where the authorization-server well-knowns redirect (the first issuer's metadata)."""
    document = protected_resource_metadata(
        server_url, issuers, scopes, dpop_algorithms=dpop_algorithms, dpop_required=dpop_required
    )
    public_path = urlsplit(server_url).path.rstrip("/")

    async def metadata(_: Request) -> Response:
        return JSONResponse(document, headers=_PUBLIC_HEADERS)

    async def to_idp(_: Request) -> Response:
        # Spec-following clients read authorization_servers; this helps older ones find the IdP.
        return RedirectResponse(
            idp_metadata_url,
            status_code=302,
            headers={"Cache-Control": "public, max-age=300"},
        )

    prm_paths = dict.fromkeys(
        [
            PRM_PATH,
            f"{PRM_PATH}/mcp",
            f"{PRM_PATH}{public_path}" if public_path else PRM_PATH,
        ]
    )
    routes = [Route(path, metadata, methods=["GET"]) for path in prm_paths]
    for name in ("oauth-authorization-server", "openid-configuration"):
        routes.append(Route(f"/.well-known/{name}", to_idp, methods=["GET"]))
        routes.append(Route(f"/.well-known/{name}/{{rest:path}}", to_idp, methods=["GET"]))
    return routes

"""The doctor explains configuration, IdP and token in plain words: in-process, and as `python server.py doctor`."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import respx

from auth.discovery import metadata_candidates
from auth.tooling import doctor
from auth.tooling.doctor import Doctor
from settings import Settings, load_settings
from tests.e2e.conftest import SERVER_SCRIPT, ServerLauncher, ServerProcess, server_environment
from tests.support import CLIENT_ID, DISCOVERY_URL, ISSUER, JWKS_URI, SERVER_URL, FakeIdP, Signer, make_settings

RFC8414_URL = "https://idp.example.com/.well-known/oauth-authorization-server"
TENANT = "6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
API_CLIENT_ID = "0b5d2a4e-1c3f-4e6a-9b8d-7f0e1d2c3b4a"
COGNITO_ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123"
COGNITO_CLIENT = "4d8f0c2e1a3b5c7d9e0f1a2b3c"
CLI_TIMEOUT = 30.0


# --- helpers ----------------------------------------------------------------------------------------
async def diagnose(settings: Settings, token: str | None) -> tuple[int, str]:
    """Exit code and report of one doctor run; the report never contains the token."""
    lines: list[str] = []
    code = await Doctor(settings, lines.append).run(token)
    report = "\n".join(lines)
    if token:
        assert token not in report
        for part in token.split("."):
            if len(part) > 16:
                assert part not in report, "a token segment leaked into the report"
    return code, report


def failures(report: str) -> list[str]:
    return [line.strip() for line in report.splitlines() if line.strip().startswith("[FAIL]")]


def verdict(report: str) -> str:
    lines = [line.strip() for line in report.splitlines() if "VERDICT:" in line]
    assert len(lines) == 1, report
    return lines[0]


def serve_idp(router: respx.MockRouter, issuer: str, jwks_uri: str, *signers: Signer, names: str = "") -> None:
    """Another IdP on the same respx router: discovery naming `names` (default: the issuer) and a JWKS."""
    oidc, rfc8414 = metadata_candidates(issuer, None)
    router.get(oidc).respond(200, json={"issuer": names or issuer, "jwks_uri": jwks_uri})
    router.get(rfc8414).respond(404)
    router.get(jwks_uri).respond(200, json={"keys": [s.jwk() for s in signers]})


def tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    flipped = "A" if signature[10] != "A" else "B"
    return f"{header}.{payload}.{signature[:10]}{flipped}{signature[11:]}"


@pytest.fixture
def rfc8414(idp: FakeIdP) -> respx.Route:
    return idp.router.get(RFC8414_URL).respond(404)


# --- a healthy setup ----------------------------------------------------------------------------------
async def test_healthy_configuration_and_valid_token_are_accepted(idp: FakeIdP, signer: Signer) -> None:
    token = signer.token(scope="read:notes write:notes")

    code, report = await diagnose(make_settings(), token)

    assert code == 0
    assert failures(report) == []
    assert f"[ok] discovery names issuer '{ISSUER}'; jwks_uri {JWKS_URI}" in report
    assert f"[ok] JWKS {JWKS_URI}: 1 usable signing key(s)" in report
    assert "[info] key 'rsa-1': RSA 2048 bits" in report
    assert "[info] scopes: ['read:notes', 'write:notes']; client id: 'client-abc'" in report
    assert verdict(report) == "[ok] VERDICT: accepted: subject 'user-123', client 'client-abc', user"
    assert report.endswith("Result: all checks passed")


async def test_a_client_credentials_token_is_reported_as_a_machine(idp: FakeIdP, signer: Signer) -> None:
    token = signer.token(sub=f"{CLIENT_ID}@clients", gty="client-credentials")

    code, report = await diagnose(make_settings(), token)

    assert code == 0
    assert verdict(report) == f"[ok] VERDICT: accepted: subject '{CLIENT_ID}@clients', client '{CLIENT_ID}', machine"


async def test_a_dpop_bound_token_is_explained_as_needing_a_proof(idp: FakeIdP, signer: Signer) -> None:
    token = signer.token(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})

    code, report = await diagnose(make_settings(), token)

    assert code == 0
    bound = "bound to a DPoP key (cnf.jkt): must be sent with the DPoP scheme and a proof (RFC 9449)"
    assert f"[info] {bound}" in report
    assert verdict(report) == f"[ok] VERDICT: accepted: subject 'user-123', client 'client-abc', user; {bound}"


async def test_without_a_token_only_configuration_and_idp_are_checked(idp: FakeIdP) -> None:
    code, report = await diagnose(make_settings(oauth_jwks_uri=None), None)

    assert code == 0
    assert "[info] accepted issuers: ['https://idp.example.com/']" in report
    assert f"[info] accepted audiences: ['{SERVER_URL}']" in report
    assert f"[info] MCP server URL (RFC 9728 resource): {SERVER_URL}" in report
    assert "Token" not in report and "VERDICT" not in report
    assert idp.discovery_route.called and idp.jwks_fetches == 1


# --- the identity provider ------------------------------------------------------------------------
async def test_discovery_naming_another_issuer_is_a_failure_with_a_trailing_slash_hint(
    idp: FakeIdP, rfc8414: respx.Route
) -> None:
    idp.discovery_route.respond(200, json={"issuer": ISSUER.rstrip("/"), "jwks_uri": JWKS_URI})

    code, report = await diagnose(make_settings(oauth_jwks_uri=None), None)

    assert code == 1
    [failure] = failures(report)
    assert f"names issuer 'https://idp.example.com', not OAUTH_ISSUER '{ISSUER}'" in failure
    assert "trailing slash included" in failure
    assert "-> set OAUTH_ISSUER to the issuer the IdP publishes, exactly" in report
    assert idp.jwks_fetches == 0  # nothing to fetch: no JWKS URL is known


async def test_discovery_naming_another_issuer_fails_even_with_a_configured_jwks(
    idp: FakeIdP, rfc8414: respx.Route
) -> None:
    # The JWKS works, but tokens will carry the issuer discovery names, which OAUTH_ISSUER refuses.
    idp.discovery_route.respond(200, json={"issuer": ISSUER.rstrip("/"), "jwks_uri": JWKS_URI})

    code, report = await diagnose(make_settings(), None)

    assert code == 1
    assert len(failures(report)) == 1 and "trailing slash included" in failures(report)[0]
    assert f"[ok] JWKS {JWKS_URI}: 1 usable signing key(s)" in report


async def test_unreachable_discovery_with_a_configured_jwks_is_only_information(
    idp: FakeIdP, rfc8414: respx.Route, signer: Signer
) -> None:
    idp.discovery_route.side_effect = httpx.ConnectError("refused")

    code, report = await diagnose(make_settings(), signer.token())

    assert code == 0
    assert "[info] discovery unavailable (discovery failed: " in report
    assert "using OAUTH_JWKS_URI" in report
    assert verdict(report).startswith("[ok] VERDICT: accepted")


async def test_unreachable_discovery_without_a_jwks_is_a_failure(idp: FakeIdP, rfc8414: respx.Route) -> None:
    idp.discovery_route.respond(503)

    code, report = await diagnose(make_settings(oauth_jwks_uri=None), None)

    assert code == 1
    [failure] = failures(report)
    assert f"GET {DISCOVERY_URL} answered HTTP 503" in failure
    assert "-> set OAUTH_WELL_KNOWN_URL or OAUTH_JWKS_URI" in report


@pytest.mark.parametrize(
    "answer",
    [httpx.ConnectError("refused"), httpx.Response(500), httpx.Response(200, json={"keys": []})],
    ids=["connection-refused", "http-500", "no-usable-keys"],
)
async def test_unusable_jwks_fails_and_no_verdict_is_given(
    idp: FakeIdP, signer: Signer, answer: Exception | httpx.Response
) -> None:
    if isinstance(answer, Exception):
        idp.jwks_route.side_effect = answer
    else:
        idp.jwks_route.side_effect = None
        idp.jwks_route.return_value = answer

    code, report = await diagnose(make_settings(), signer.token())

    assert code == 1
    assert f"[FAIL] JWKS {JWKS_URI}: 0 usable signing key(s)" in report
    assert "[FAIL] kid 'rsa-1' is in the JWKS" in report
    assert verdict(report) == "[FAIL] VERDICT: cannot be checked without the IdP's signing keys (see above)"
    assert report.endswith(f"Result: {len(failures(report))} problem(s) found")


# --- refused tokens, each explained ----------------------------------------------------------------
async def test_expired_token(idp: FakeIdP, signer: Signer) -> None:
    now = int(time.time())
    token = signer.token(iat=now - 7200, exp=now - 3600)

    code, report = await diagnose(make_settings(), token)

    assert code == 1
    [expiry] = [line for line in failures(report) if line.startswith("[FAIL] expires ")]
    assert "(now " in expiry
    assert "-> get a fresh token" in report
    assert verdict(report) == "[FAIL] VERDICT: refused with 401: token has expired"


async def test_token_within_the_leeway_is_still_accepted(idp: FakeIdP, signer: Signer) -> None:
    now = int(time.time())
    token = signer.token(iat=now - 600, exp=now - 5)

    code, report = await diagnose(make_settings(oauth_leeway_seconds=60), token)

    assert code == 0, report
    assert verdict(report).startswith("[ok] VERDICT: accepted")


async def test_token_not_yet_valid(idp: FakeIdP, signer: Signer) -> None:
    token = signer.token(nbf=int(time.time()) + 3600)

    code, report = await diagnose(make_settings(), token)

    assert code == 1
    assert "-> clock skew? see OAUTH_LEEWAY_SECONDS" in report
    assert verdict(report) == "[FAIL] VERDICT: refused with 401: token is not yet valid"


async def test_wrong_audience(idp: FakeIdP, signer: Signer) -> None:
    code, report = await diagnose(make_settings(), signer.token(aud="https://other.example.com/mcp"))

    assert code == 1
    assert "[FAIL] audience 'https://other.example.com/mcp' is accepted" in report
    assert f"expected one of ['{SERVER_URL}']" in report
    assert verdict(report) == "[FAIL] VERDICT: refused with 401: token audience is not accepted"


@pytest.mark.parametrize(
    ("overrides", "hint"),
    [
        ({"aud": "https://graph.microsoft.com"}, "this is a Microsoft Graph token"),
        ({"aud": "00000003-0000-0000-c000-000000000000"}, "scope=api://<app-id>/.default"),
        ({"aud": CLIENT_ID, "nonce": "n-0S6_WzA2Mj"}, "this looks like an ID token: send the access token instead"),
        ({"aud": ["https://idp.example.com/userinfo"]}, "request it with audience=<your API identifier>"),
        ({"aud": None}, "the token has no aud claim: Cognito access tokens have none"),
    ],
    ids=["graph-url", "graph-app-id", "id-token", "auth0-userinfo-only", "no-aud"],
)
async def test_wrong_audience_names_the_usual_cause(
    idp: FakeIdP, signer: Signer, overrides: dict[str, object], hint: str
) -> None:
    claims = {name: value for name, value in overrides.items() if value is not None}
    token = signer.token(drop=tuple(name for name, value in overrides.items() if value is None), **claims)

    code, report = await diagnose(make_settings(), token)

    assert code == 1
    [audience_line] = [line for line in failures(report) if line.startswith("[FAIL] audience ")]
    assert hint in report.split(audience_line, 1)[1].splitlines()[1]  # the hint under that line
    assert verdict(report).startswith("[FAIL] VERDICT: refused with 401: token ")


async def test_id_token_is_flagged_as_not_an_access_token(idp: FakeIdP, signer: Signer) -> None:
    code, report = await diagnose(make_settings(), signer.token(aud=CLIENT_ID, at_hash="x", nonce="n"))

    assert code == 1
    assert "[FAIL] is an access token" in report


async def test_wrong_issuer_differing_by_a_trailing_slash(idp: FakeIdP, signer: Signer) -> None:
    code, report = await diagnose(make_settings(), signer.token(iss="https://idp.example.com"))

    assert code == 1
    assert "[FAIL] issuer 'https://idp.example.com' is accepted" in report
    assert "they differ only by a trailing slash: the issuer is compared exactly" in report
    assert verdict(report) == "[FAIL] VERDICT: refused with 401: token issuer is not accepted"


async def test_entra_v1_token_against_a_v2_issuer_names_the_manifest_setting(idp: FakeIdP, signer: Signer) -> None:
    v2 = f"https://login.microsoftonline.com/{TENANT}/v2.0"
    serve_idp(idp.router, v2, JWKS_URI, signer)
    token = signer.token(iss=f"https://sts.windows.net/{TENANT}/")

    code, report = await diagnose(make_settings(oauth_issuer=v2), token)

    assert code == 1
    assert "this looks like an Entra v1 token: set accessTokenAcceptedVersion=2" in report
    assert verdict(report) == "[FAIL] VERDICT: refused with 401: token issuer is not accepted"


async def test_unknown_kid(idp: FakeIdP, rotated_signer: Signer) -> None:
    code, report = await diagnose(make_settings(), rotated_signer.token())

    assert code == 1
    assert "[FAIL] kid 'rsa-2' is in the JWKS" in report
    assert "-> a rotated key? a token from another IdP?" in report
    assert verdict(report) == "[FAIL] VERDICT: refused with 401: token signing key is unknown"
    assert idp.jwks_fetches == 2  # the unknown kid was looked up once more before refusing


async def test_tampered_signature(idp: FakeIdP, signer: Signer) -> None:
    code, report = await diagnose(make_settings(), tampered(signer.token()))

    assert code == 1
    assert verdict(report) == "[FAIL] VERDICT: refused with 401: token signature is invalid"
    assert failures(report) == [verdict(report)]  # every claim looked fine: only the signature is wrong


async def test_opaque_token_is_not_a_jwt(idp: FakeIdP) -> None:
    code, report = await diagnose(make_settings(), "8xLOxBtZp8-opaque-access-token-from-auth0")

    assert code == 1
    assert "[FAIL] is a signed JWT (header.payload.signature)" in report
    assert "this token is not a JWT (an opaque token)" in report
    assert "Auth0 issues opaque tokens when no audience is requested" in report
    assert "VERDICT: accepted" not in report


async def test_encrypted_token_is_recognised(idp: FakeIdP) -> None:
    # header {"alg":"RSA-OAEP","enc":"A256GCM"}, then encrypted key, IV, ciphertext and tag
    jwe = ".".join(
        [
            "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ",
            "OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGe",
            "48V1_ALb6US04U3b",
            "5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6ji",
            "XFBoMYUZodetZdvTiFvSkQ",
        ]
    )

    code, report = await diagnose(make_settings(), jwe)

    assert code == 1
    assert "this is an encrypted token (JWE): ask the IdP for a signed JWT access token" in report


async def test_token_with_four_parts_is_explained(idp: FakeIdP, signer: Signer) -> None:
    code, report = await diagnose(make_settings(), signer.token() + ".extra")

    assert code == 1
    assert "a JWT has 3 dot-separated parts, this token has 4" in report


async def test_algorithm_outside_the_allow_list(idp: FakeIdP, ec_signer: Signer) -> None:
    idp.publish(ec_signer)

    code, report = await diagnose(make_settings(oauth_algorithms=["RS256"]), ec_signer.token())

    assert code == 1
    assert "[FAIL] algorithm 'ES256' is allowed" in report
    assert "-> see OAUTH_ALGORITHMS" in report
    assert verdict(report) == "[FAIL] VERDICT: refused with 401: token algorithm is not accepted"


async def test_unsigned_token_is_refused(idp: FakeIdP) -> None:
    token = jwt.encode({"iss": ISSUER, "aud": SERVER_URL, "sub": "x", "exp": int(time.time()) + 60}, None, "none")

    code, report = await diagnose(make_settings(), token)

    assert code == 1
    assert "[FAIL] algorithm 'none' is allowed" in report
    assert verdict(report) == "[FAIL] VERDICT: refused with 401: token algorithm is not accepted"


async def test_critical_header_is_refused(idp: FakeIdP, signer: Signer) -> None:
    token = signer.token(headers={"crit": ["exp"]})

    code, report = await diagnose(make_settings(), token)

    assert code == 1
    assert "[FAIL] no critical header extensions" in report
    assert verdict(report).startswith("[FAIL] VERDICT: refused with 401: token ")  # PyJWT may call it malformed


async def test_required_typ_is_checked(idp: FakeIdP, signer: Signer) -> None:
    code, report = await diagnose(make_settings(oauth_required_typ="at+jwt"), signer.token(headers={"typ": "JWT"}))

    assert code == 1
    assert "[FAIL] typ 'JWT' is 'at+jwt'" in report
    assert verdict(report) == "[FAIL] VERDICT: refused with 401: token type is not accepted"


async def test_missing_required_scope_is_a_403(idp: FakeIdP, signer: Signer) -> None:
    token = signer.token(scope="read:notes")

    code, report = await diagnose(make_settings(oauth_required_scopes=["read:notes", "write:notes"]), token)

    assert code == 1
    assert verdict(report) == "[FAIL] VERDICT: valid, but refused with 403: missing required scope(s) ['write:notes']"


@pytest.mark.parametrize(
    ("drop", "claims", "line", "refusal"),
    [
        (("exp",), {}, "[FAIL] has an exp claim", "token is missing a required claim"),
        ((), {"exp": "tomorrow"}, "exp 'tomorrow' is not a number", "token claims have unexpected types"),
        ((), {"exp": 10**20}, "is not a date between 1970 and 9999", "token claims have unexpected types"),
        ((), {"scope": 42}, "scope 42 is not a string", "token claims have unexpected types"),
    ],
    ids=["no-exp", "text-exp", "exp-beyond-year-9999", "numeric-scope"],
)
async def test_malformed_claims_are_explained_without_crashing(
    idp: FakeIdP, signer: Signer, drop: tuple[str, ...], claims: dict[str, object], line: str, refusal: str
) -> None:
    code, report = await diagnose(make_settings(), signer.token(drop=drop, **claims))

    assert code == 1
    assert line in report
    assert verdict(report) == f"[FAIL] VERDICT: refused with 401: {refusal}"


# --- presets -------------------------------------------------------------------------------------------
def cognito_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "oauth_provider": "cognito",
        "oauth_region": "eu-west-1",
        "oauth_user_pool_id": "eu-west-1_AbCdEf123",
        "oauth_client_ids": [COGNITO_CLIENT],
        "oauth_scope_prefix": "notes-api/",
        "oauth_issuer": "",
        "oauth_jwks_uri": None,
    }
    values.update(overrides)
    return make_settings(**values)


def cognito_token(signer: Signer, **overrides: object) -> str:
    values: dict[str, object] = {
        "iss": COGNITO_ISSUER,
        "sub": COGNITO_CLIENT,
        "client_id": COGNITO_CLIENT,
        "token_use": "access",
        "scope": "notes-api/read:notes notes-api/write:notes",
    }
    values.update(overrides)
    present = {name: value for name, value in values.items() if value is not None}
    dropped = ("azp", *(name for name, value in values.items() if value is None))
    return signer.token(drop=("aud", *dropped) if "aud" not in present else dropped, **present)


async def test_cognito_access_token_is_accepted_without_an_audience(idp: FakeIdP, signer: Signer) -> None:
    serve_idp(idp.router, COGNITO_ISSUER, f"{COGNITO_ISSUER}/.well-known/jwks.json", signer)

    code, report = await diagnose(cognito_settings(oauth_required_scopes=["read:notes"]), cognito_token(signer))

    assert code == 0, report
    assert f"when present (Cognito); client ids: ['{COGNITO_CLIENT}']" in report
    assert "'read:notes'" in report and "'notes-api/read:notes'" in report
    assert verdict(report) == f"[ok] VERDICT: accepted: subject '{COGNITO_CLIENT}', client '{COGNITO_CLIENT}', machine"


async def test_cognito_id_token_is_refused(idp: FakeIdP, signer: Signer) -> None:
    serve_idp(idp.router, COGNITO_ISSUER, f"{COGNITO_ISSUER}/.well-known/jwks.json", signer)
    token = cognito_token(signer, token_use="id", aud=COGNITO_CLIENT, sub="b3f1c2d4-user", scope=None)

    code, report = await diagnose(cognito_settings(), token)

    assert code == 1
    assert "[FAIL] is an access token" in report
    assert verdict(report) == "[FAIL] VERDICT: refused with 401: token is not an access token"
    [verdict_hint] = report.split(verdict(report), 1)[1].splitlines()[1:2]
    assert "this looks like an ID token" in verdict_hint


async def test_cognito_token_from_another_app_client_is_refused(idp: FakeIdP, signer: Signer) -> None:
    serve_idp(idp.router, COGNITO_ISSUER, f"{COGNITO_ISSUER}/.well-known/jwks.json", signer)
    token = cognito_token(signer, client_id="someone-else", sub="someone-else")

    code, report = await diagnose(cognito_settings(), token)

    assert code == 1
    assert verdict(report) == "[FAIL] VERDICT: refused with 401: token client is not accepted"
    assert "is not in OAUTH_CLIENT_IDS" in report


async def test_okta_org_authorization_server_token_is_explained(idp: FakeIdP, signer: Signer) -> None:
    issuer = "https://example.okta.com/oauth2/default"
    serve_idp(idp.router, issuer, f"{issuer}/v1/keys", signer)
    settings = make_settings(
        oauth_provider="okta", oauth_domain="example.okta.com", oauth_issuer="", oauth_jwks_uri=None
    )
    token = signer.token(iss="https://example.okta.com", aud="https://example.okta.com", cid=CLIENT_ID)

    code, report = await diagnose(settings, token)

    assert code == 1
    assert "Okta org authorization server tokens cannot be validated: use a custom authorization server" in report
    assert verdict(report).startswith("[FAIL] VERDICT: refused with 401: token ")


async def test_entra_multi_tenant_template_issuer_in_discovery_is_expected(idp: FakeIdP, signer: Signer) -> None:
    serve_idp(
        idp.router,
        "https://login.microsoftonline.com/organizations/v2.0",
        "https://login.microsoftonline.com/organizations/discovery/v2.0/keys",
        signer,
        names="https://login.microsoftonline.com/{tenantid}/v2.0",
    )
    settings = make_settings(
        oauth_provider="entra",
        oauth_tenant_id="organizations",
        oauth_allowed_tenants=[TENANT],
        oauth_audience=[API_CLIENT_ID],
        oauth_issuer="",
        oauth_jwks_uri=None,
    )
    token = signer.token(
        iss=f"https://login.microsoftonline.com/{TENANT}/v2.0", tid=TENANT, aud=API_CLIENT_ID, roles=["use:calculator"]
    )

    code, report = await diagnose(settings, token)

    assert code == 0, report
    assert "[info] accepted issuers: per tenant, from the token tid" in report
    assert f"[info] allowed tenants: ['{TENANT}']" in report
    assert "[info] discovery unavailable" in report  # the {tenantid} template is not a failure
    assert verdict(report).startswith("[ok] VERDICT: accepted")


async def test_entra_preset_accepts_a_v1_token_of_its_tenant(idp: FakeIdP, signer: Signer) -> None:
    serve_idp(
        idp.router,
        f"https://login.microsoftonline.com/{TENANT}/v2.0",
        f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys",
        signer,
    )
    settings = make_settings(
        oauth_provider="entra",
        oauth_tenant_id=TENANT,
        oauth_audience=["api://mcp-notes"],
        oauth_issuer="",
        oauth_jwks_uri=None,
    )
    token = signer.token(iss=f"https://sts.windows.net/{TENANT}/", aud="api://mcp-notes", appid=CLIENT_ID)

    code, report = await diagnose(settings, token)

    assert code == 0, report
    assert verdict(report).startswith("[ok] VERDICT: accepted")


# --- the command line ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real issuer: `python server.py --dev` on a free loopback port."""
    launcher = ServerLauncher(tmp_path_factory.mktemp("doctor-issuer"))
    try:
        yield launcher.start("--dev")
    finally:
        launcher.close()


@pytest.fixture(scope="module")
def dev_token(dev_server: ServerProcess) -> str:
    response = httpx.post(
        f"{dev_server.base_url}/dev-issuer/token",
        data={"grant_type": "client_credentials"},
        auth=("dev-client", "dev-secret"),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def run_doctor(
    *args: str, cwd: Path, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(SERVER_SCRIPT), "doctor", *args],
        cwd=cwd,
        env=server_environment(env),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    return result


def issuer_env(server: ServerProcess) -> dict[str, str]:
    return {"OAUTH_ISSUER": f"{server.base_url}/dev-issuer", "MCP_SERVER_URL": server.mcp_url}


@pytest.mark.e2e
@pytest.mark.parametrize("how", ["argument", "piped", "dash"])
def test_cli_accepts_a_real_issuers_token(dev_server: ServerProcess, dev_token: str, tmp_path: Path, how: str) -> None:
    args, stdin = {"argument": ((dev_token,), None), "piped": ((), dev_token + "\n"), "dash": (("-",), dev_token)}[how]

    result = run_doctor(*args, cwd=tmp_path, env=issuer_env(dev_server), stdin=stdin)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ok] VERDICT: accepted: subject 'dev-client', client 'dev-client', machine" in result.stdout
    assert f"[ok] discovery names issuer '{dev_server.base_url}/dev-issuer'" in result.stdout
    assert result.stdout.rstrip().endswith("Result: all checks passed")
    assert dev_token not in result.stdout + result.stderr


@pytest.mark.e2e
def test_cli_without_a_token_checks_the_issuer(dev_server: ServerProcess, tmp_path: Path) -> None:
    result = run_doctor(cwd=tmp_path, env=issuer_env(dev_server))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "VERDICT" not in result.stdout
    assert "usable signing key(s)" in result.stdout


@pytest.mark.e2e
def test_cli_tampered_token_exits_1_naming_the_signature(
    dev_server: ServerProcess, dev_token: str, tmp_path: Path
) -> None:
    token = tampered(dev_token)

    result = run_doctor(token, cwd=tmp_path, env=issuer_env(dev_server))

    assert result.returncode == 1
    assert "[FAIL] VERDICT: refused with 401: token signature is invalid" in result.stdout
    assert "1 problem(s) found" in result.stdout
    assert token not in result.stdout + result.stderr


@pytest.mark.e2e
def test_cli_token_for_another_server_exits_1(dev_server: ServerProcess, dev_token: str, tmp_path: Path) -> None:
    env = {**issuer_env(dev_server), "MCP_SERVER_URL": "https://elsewhere.example.com/mcp"}

    result = run_doctor(dev_token, cwd=tmp_path, env=env)

    assert result.returncode == 1
    assert "[FAIL] VERDICT: refused with 401: token audience is not accepted" in result.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "configuration error: OAUTH_ISSUER: missing;"),
        ({"OAUTH_PROVIDER": "cognito", "OAUTH_REGION": "eu-west-1"}, "configuration error: OAUTH_USER_POOL_ID"),
    ],
    ids=["no-issuer", "incomplete-preset"],
)
def test_cli_bad_configuration_exits_2_with_one_line(tmp_path: Path, env: dict[str, str], message: str) -> None:
    result = run_doctor("a.b.c", cwd=tmp_path, env=env)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr


# --- several issuers (OAUTH_ISSUERS_FILE) ---------------------------------------------------------------------
PARTNER = "https://login.partner.example.org/"
PARTNER_JWKS = "https://login.partner.example.org/keys"


def several_issuers(tmp_path: Path) -> Settings:
    text = f'[[issuer]]\nissuer = "{ISSUER}"\n\n[[issuer]]\nissuer = "{PARTNER}"\nclient_ids = ["partner-app"]\n'
    (tmp_path / "issuers.toml").write_text(text, encoding="utf-8")
    return load_settings(oauth_issuers_file=str(tmp_path / "issuers.toml"), mcp_server_url=SERVER_URL, _env_file=None)


async def test_with_several_issuers_a_token_is_explained_by_the_issuer_it_names(tmp_path, idp, rotated_signer):
    serve_idp(idp.router, PARTNER, PARTNER_JWKS, rotated_signer)
    settings = several_issuers(tmp_path)
    lines: list[str] = []
    code = await doctor.run_doctor(settings, lines.append, rotated_signer.token(iss=PARTNER, azp="other-app"))
    report = "\n".join(lines)
    assert code == 1 and report.startswith(f"Issuer {PARTNER} (the token's iss)")
    assert f"discovery names issuer {PARTNER!r}" in report
    assert "VERDICT: refused with 401: token client is not accepted" in verdict(report)

    lines.clear()
    assert await doctor.run_doctor(settings, lines.append, rotated_signer.token(iss=PARTNER, azp="partner-app")) == 0
    assert "VERDICT: accepted" in verdict("\n".join(lines))


async def test_with_several_issuers_an_unknown_issuer_is_named_and_each_issuer_checked_without_a_token(
    tmp_path, idp, signer, rotated_signer
):
    serve_idp(idp.router, PARTNER, PARTNER_JWKS, rotated_signer)
    settings = several_issuers(tmp_path)
    lines: list[str] = []
    assert await doctor.run_doctor(settings, lines.append, signer.token(iss="https://evil.example.com/")) == 1
    assert "the token names no trusted issuer" in "\n".join(lines)

    lines.clear()
    assert await doctor.run_doctor(settings, lines.append, None) == 0
    report = "\n".join(lines)
    assert f"Issuer [[issuer]] #1: {ISSUER}" in report and f"Issuer [[issuer]] #2: {PARTNER}" in report
    assert report.count("Result: all checks passed") == 2


async def test_with_several_issuers_the_hints_name_the_tables_keys_not_variables(tmp_path, idp, rotated_signer):
    idp.router.get(metadata_candidates(PARTNER, None)[0]).respond(503)
    idp.router.get(metadata_candidates(PARTNER, None)[1]).respond(503)
    lines: list[str] = []
    assert await doctor.run_doctor(several_issuers(tmp_path), lines.append, None) == 1
    report = "\n".join(lines)
    assert "-> set well_known_url or jwks_uri in [[issuer]] #2" in report
    assert "OAUTH_WELL_KNOWN_URL" not in report and "OAUTH_JWKS_URI" not in report

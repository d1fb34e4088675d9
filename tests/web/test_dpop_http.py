"""DPoP through the real app over HTTP: real signed access tokens (the respx IdP), real proofs, every mode,
each refusal with its exact challenge, nonces across replicas, a gateway's public URL, PRM, CORS and the logs."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from auth.dpop_nonce import NonceSource
from auth.dpop_proof import b64url, token_hash
from tests.support import (
    BASE_URL,
    MCP_HEADERS,
    PRM_URL,
    DpopKey,
    FakeIdP,
    Signer,
    bearer,
    dpop_headers,
    make_settings,
    parse_mcp_response,
    rpc_body,
)
from web.app import build_app

GET_ME = rpc_body("tools/call", {"name": "get_me", "arguments": {}})
CREATE_NOTE = rpc_body("tools/call", {"name": "create_note", "arguments": {"title": "t", "content": "c"}})
ALGS = "ES256 ES384 RS256 PS256 EdDSA"
SCOPES = "read:notes write:notes use:calculator"
NONCE_SECRET = "s" * 32


@contextmanager
def app_client(base_url: str = BASE_URL, **overrides: Any) -> Iterator[TestClient]:
    with TestClient(build_app(make_settings(**overrides)), base_url=base_url) as client:
        yield client


@pytest.fixture
def key(ec_private_key) -> DpopKey:
    return DpopKey(ec_private_key, "ES256")


@pytest.fixture
def client(idp: FakeIdP) -> Iterator[TestClient]:
    with app_client() as test_client:
        yield test_client


@pytest.fixture
def bound(signer: Signer, key: DpopKey) -> str:
    """An access token bound to `key` (cnf.jkt), as a DPoP-issuing IdP signs it."""
    return signer.token(cnf={"jkt": key.thumbprint}, scope="read:notes")


def dpop_call(client: TestClient, token: str, proof: str, body: dict[str, Any] = GET_ME, path: str = "/mcp") -> Any:
    return client.post(path, json=body, headers=dpop_headers(token, proof))


def challenges(response: Any) -> list[str]:
    return response.headers.get_list("www-authenticate")


def dpop_refusal(error: str, description: str, scope: str = SCOPES) -> list[str]:
    """The one challenge of a refused DPoP request: the DPoP scheme's, with the error."""
    return [
        f'DPoP algs="{ALGS}", error="{error}", error_description="{description}", '
        f'resource_metadata="{PRM_URL}", scope="{scope}"'
    ]


def assert_ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    result = parse_mcp_response(response)["result"]
    assert not result.get("isError"), result
    return result["structuredContent"]


# --- allowed mode (the default) ----------------------------------------------------------------------


def test_a_bound_token_with_its_proof_calls_the_tools(client, bound, key):
    response = dpop_call(client, bound, key.proof(token=bound))
    assert assert_ok(response)["user_id"] == "user-123"
    assert "dpop-nonce" not in response.headers  # nonces are off by default
    assert assert_ok(dpop_call(client, bound, key.proof(token=bound)))  # a fresh proof for every request


@pytest.mark.parametrize("alg", ["ES384", "RS256", "PS256", "EdDSA"])
def test_every_default_algorithm_works(idp, signer, alg, ec384_private_key, rsa_private_key, ed_private_key):
    private = {"ES384": ec384_private_key, "RS256": rsa_private_key, "PS256": rsa_private_key}.get(alg, ed_private_key)
    key = DpopKey(private, alg)
    token = signer.token(cnf={"jkt": key.thumbprint})
    with app_client() as client:
        assert_ok(dpop_call(client, token, key.proof(token=token)))


def test_unbound_bearer_tokens_still_work(client, signer):
    assert_ok(client.post("/mcp", json=GET_ME, headers={**MCP_HEADERS, **bearer(signer.token())}))


def test_the_no_token_401_carries_both_challenges(client):
    response = client.post("/mcp", json=GET_ME, headers=MCP_HEADERS)
    assert response.status_code == 401
    assert challenges(response) == [f'Bearer resource_metadata="{PRM_URL}", scope="{SCOPES}"', f'DPoP algs="{ALGS}"']


def test_the_bound_token_as_bearer_is_refused(client, bound):
    response = client.post("/mcp", json=GET_ME, headers={**MCP_HEADERS, **bearer(bound)})
    assert response.status_code == 401
    description = "token is bound to a key and cannot be used as a bearer token"
    assert challenges(response) == [
        f'Bearer error="invalid_token", error_description="{description}", '
        f'resource_metadata="{PRM_URL}", scope="{SCOPES}"',
        f'DPoP algs="{ALGS}"',
    ]


def test_an_unbound_token_with_the_dpop_scheme_is_refused(client, signer, key):
    token = signer.token()
    response = dpop_call(client, token, key.proof(token=token))
    assert response.status_code == 401
    description = "token is not bound to a DPoP key: send it with the Bearer scheme"
    assert challenges(response) == dpop_refusal("invalid_token", description)


def test_a_missing_proof_is_refused(client, bound):
    response = client.post("/mcp", json=GET_ME, headers={**MCP_HEADERS, "Authorization": f"DPoP {bound}"})
    assert response.status_code == 401
    assert challenges(response) == dpop_refusal("invalid_dpop_proof", "a DPoP proof is required with the DPoP scheme")


@pytest.mark.parametrize("value", ["DPoP", "dpop  ", "DPoP \t"])
def test_the_dpop_scheme_without_a_token_gets_the_dpop_challenge(client, key, value):
    response = client.post("/mcp", json=GET_ME, headers={**MCP_HEADERS, "Authorization": value, "DPoP": key.proof()})
    assert response.status_code == 401
    assert challenges(response) == dpop_refusal("invalid_token", "access token is empty")


def test_an_invalid_token_with_the_dpop_scheme_gets_the_dpop_challenge(client, signer, key):
    expired = signer.token(cnf={"jkt": key.thumbprint}, exp=int(time.time()) - 3600)
    response = dpop_call(client, expired, key.proof(token=expired))
    assert response.status_code == 401
    assert challenges(response) == dpop_refusal("invalid_token", "token has expired")


def test_two_dpop_headers_are_a_400(client, bound, key):
    headers = [*dpop_headers(bound, key.proof(token=bound)).items(), ("DPoP", key.proof(token=bound))]
    response = client.post("/mcp", json=GET_ME, headers=headers)
    assert response.status_code == 400
    assert response.json()["error_description"] == "more than one DPoP header"


def hmac_proof(key: DpopKey, token: str) -> str:
    """A proof "signed" with HS256 under a secret, naming the client's public key."""
    payload = {"htm": "POST", "htu": PRM_URL.replace("/.well-known/oauth-protected-resource", ""), "jti": "h"}
    payload |= {"iat": int(time.time()), "ath": token_hash(token)}
    return jwt.encode(payload, "s" * 32, algorithm="HS256", headers={"typ": "dpop+jwt", "jwk": key.public_jwk()})


def unsigned_proof(key: DpopKey, token: str) -> str:
    """A proof with `alg: none` and an empty signature, naming the client's public key."""
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": key.public_jwk()}
    payload = {"htm": "POST", "htu": BASE_URL + "/mcp", "jti": "n", "iat": int(time.time()), "ath": token_hash(token)}
    return ".".join(b64url(json.dumps(part).encode()) for part in (header, payload)) + "."


def private_jwk(key: DpopKey) -> dict[str, Any]:
    """The client's key as a JWK with its private part (`d`): a proof must never carry it."""
    return json.loads(jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256).to_jwk(key.private_key))


def proof_faults(key: DpopKey, other: DpopKey, token: str) -> dict[str, tuple[str, str]]:
    now = int(time.time())
    impostor = DpopKey(ec.generate_private_key(ec.SECP256R1()), "ES256")  # signs, naming the client's key
    return {
        "typ": (key.proof(token=token, headers={"typ": "JWT"}), "DPoP proof typ must be dpop+jwt"),
        "alg": (hmac_proof(key, token), "DPoP proof algorithm is not accepted"),
        "alg-none": (unsigned_proof(key, token), "DPoP proof algorithm is not accepted"),
        "private-jwk": (
            key.proof(token=token, headers={"jwk": private_jwk(key)}),
            "DPoP proof jwk is not an acceptable public key",
        ),
        "signature": (
            impostor.proof(token=token, headers={"jwk": key.public_jwk()}),
            "DPoP proof signature is invalid",
        ),
        "htm": (key.proof("GET", token=token), "DPoP proof htm does not match the request method"),
        "htu": (key.proof(htu=BASE_URL + "/other", token=token), "DPoP proof htu does not match this endpoint's URL"),
        "iat-old": (key.proof(token=token, iat=now - 400), "DPoP proof iat is outside the accepted window"),
        "iat-ahead": (key.proof(token=token, iat=now + 400), "DPoP proof iat is outside the accepted window"),
        "ath": (key.proof(token="another"), "DPoP proof ath does not match the access token"),
        "other-key": (other.proof(token=token), "DPoP proof key is not the key the token is bound to"),
        "garbage": ("not-a-jwt", "DPoP proof is malformed"),
    }


@pytest.mark.parametrize(
    "fault",
    [
        "typ",
        "alg",
        "alg-none",
        "private-jwk",
        "signature",
        "htm",
        "htu",
        "iat-old",
        "iat-ahead",
        "ath",
        "other-key",
        "garbage",
    ],
)
def test_each_proof_fault_is_a_401_invalid_dpop_proof(client, bound, key, ed_private_key, fault):
    proof, description = proof_faults(key, DpopKey(ed_private_key, "EdDSA"), bound)[fault]
    response = dpop_call(client, bound, proof)
    assert response.status_code == 401
    assert challenges(response) == dpop_refusal("invalid_dpop_proof", description)
    assert response.json() == {"error": "invalid_dpop_proof", "error_description": description}


@pytest.mark.parametrize("offset", [-200, 200])
def test_a_proof_200_seconds_old_or_ahead_passes(client, bound, key, offset):
    assert_ok(dpop_call(client, bound, key.proof(token=bound, iat=int(time.time()) + offset)))


def test_the_query_string_is_ignored(client, bound, key):
    assert_ok(dpop_call(client, bound, key.proof(token=bound), path="/mcp?x=1"))


def test_a_replayed_proof_is_refused(client, bound, key):
    proof = key.proof(token=bound)
    assert_ok(dpop_call(client, bound, proof))
    response = dpop_call(client, bound, proof)
    assert response.status_code == 401
    assert challenges(response) == dpop_refusal("invalid_dpop_proof", "DPoP proof has been used before")


def test_insufficient_scope_with_dpop_gets_the_dpop_challenge(client, bound, key):
    response = dpop_call(client, bound, key.proof(token=bound), body=CREATE_NOTE)
    assert response.status_code == 403
    assert challenges(response) == dpop_refusal(
        "insufficient_scope", "required scope: write:notes", scope="write:notes"
    )


def test_the_configured_algorithms_are_announced_exactly(idp):
    with app_client(oauth_dpop_algorithms="EdDSA,ES256") as client:
        response = client.post("/mcp", json=GET_ME, headers=MCP_HEADERS)
        assert challenges(response)[1] == 'DPoP algs="EdDSA ES256"'
        document = client.get("/.well-known/oauth-protected-resource/mcp").json()
        assert document["dpop_signing_alg_values_supported"] == ["EdDSA", "ES256"]
        assert "dpop_bound_access_tokens_required" not in document


def test_the_metadata_announces_dpop(client):
    document = client.get("/.well-known/oauth-protected-resource/mcp").json()
    assert document["dpop_signing_alg_values_supported"] == ALGS.split()
    assert "dpop_bound_access_tokens_required" not in document


# --- required and off ------------------------------------------------------------------------------


def test_required_mode_refuses_bearer_and_says_so_in_the_metadata(idp, signer, key, bound):
    with app_client(oauth_dpop="required") as client:
        document = client.get("/.well-known/oauth-protected-resource").json()
        assert document["dpop_bound_access_tokens_required"] is True
        missing = client.post("/mcp", json=GET_ME, headers=MCP_HEADERS)
        assert missing.status_code == 401
        assert challenges(missing) == [f'DPoP algs="{ALGS}", resource_metadata="{PRM_URL}", scope="{SCOPES}"']
        for token in (signer.token(), bound):
            response = client.post("/mcp", json=GET_ME, headers={**MCP_HEADERS, **bearer(token)})
            assert response.status_code == 401
            description = "this server accepts only DPoP-bound tokens, sent with the DPoP scheme and a proof"
            assert challenges(response) == dpop_refusal("invalid_token", description)
        assert_ok(dpop_call(client, bound, key.proof(token=bound)))


def test_off_mode_refuses_the_dpop_scheme_and_bound_tokens_but_serves_bearer(idp, signer, key, bound):
    with app_client(oauth_dpop="off") as client:
        document = client.get("/.well-known/oauth-protected-resource").json()
        assert "dpop_signing_alg_values_supported" not in document
        response = dpop_call(client, bound, key.proof(token=bound))
        assert response.status_code == 401
        assert challenges(response) == [f'Bearer resource_metadata="{PRM_URL}", scope="{SCOPES}"']
        refused = client.post("/mcp", json=GET_ME, headers={**MCP_HEADERS, **bearer(bound)})
        assert refused.status_code == 401 and "bound to a key" in refused.json()["error_description"]
        assert_ok(client.post("/mcp", json=GET_ME, headers={**MCP_HEADERS, **bearer(signer.token())}))


# --- nonces ----------------------------------------------------------------------------------------


def test_nonce_round_trip_and_a_nonce_from_another_replica(idp, bound, key):
    with app_client(oauth_dpop_nonce=True, oauth_dpop_nonce_secret=NONCE_SECRET) as one:
        asked = dpop_call(one, bound, key.proof(token=bound))
        assert asked.status_code == 401
        assert challenges(asked) == dpop_refusal(
            "use_dpop_nonce", "a fresh DPoP nonce is required: retry with the nonce in the DPoP-Nonce header"
        )
        nonce = asked.headers["dpop-nonce"]
        served = dpop_call(one, bound, key.proof(token=bound, nonce=nonce))
        assert_ok(served)
        renewed = served.headers["dpop-nonce"]  # each DPoP answer carries a fresh nonce for the next request
        assert_ok(dpop_call(one, bound, key.proof(token=bound, nonce=renewed)))
        with app_client(oauth_dpop_nonce=True, oauth_dpop_nonce_secret=NONCE_SECRET) as another_replica:
            assert_ok(dpop_call(another_replica, bound, key.proof(token=bound, nonce=nonce)))
        with app_client(oauth_dpop_nonce=True, oauth_dpop_nonce_secret="t" * 32) as other_secret:
            refused = dpop_call(other_secret, bound, key.proof(token=bound, nonce=nonce))
            assert refused.status_code == 401 and refused.json()["error"] == "use_dpop_nonce"
            assert_ok(dpop_call(other_secret, bound, key.proof(token=bound, nonce=refused.headers["dpop-nonce"])))


def test_a_nonce_never_issued_gets_a_fresh_one(idp, bound, key, caplog):
    with caplog.at_level(logging.WARNING), app_client(oauth_dpop_nonce=True) as client:
        response = dpop_call(client, bound, key.proof(token=bound, nonce="made-up-by-the-client"))
        assert response.status_code == 401
        assert response.json()["error"] == "use_dpop_nonce"
        fresh = response.headers["dpop-nonce"]
        assert_ok(dpop_call(client, bound, key.proof(token=bound, nonce=fresh)))
    assert "OAUTH_DPOP_NONCE_SECRET" in caplog.text  # no secret: this process's own, with a warning


def test_a_nonce_past_its_lifetime_gets_a_fresh_one(idp, bound, key):
    """A nonce this server's secret signed 301 s ago (the lifetime is OAUTH_DPOP_MAX_AGE_SECONDS, 300 s)."""
    old = NonceSource(NONCE_SECRET.encode(), lifetime=300, clock=lambda: time.time() - 301).issue()
    with app_client(oauth_dpop_nonce=True, oauth_dpop_nonce_secret=NONCE_SECRET) as client:
        refused = dpop_call(client, bound, key.proof(token=bound, nonce=old))
        assert refused.status_code == 401 and refused.json()["error"] == "use_dpop_nonce"
        fresh = refused.headers["dpop-nonce"]
        assert fresh != old
        assert_ok(dpop_call(client, bound, key.proof(token=bound, nonce=fresh)))


def test_every_dpop_refusal_announces_exactly_the_configured_algorithms(idp, signer, bound, key):
    with app_client(oauth_dpop_algorithms="EdDSA,ES256") as client:
        missing_proof = client.post("/mcp", json=GET_ME, headers={**MCP_HEADERS, "Authorization": f"DPoP {bound}"})
        as_bearer = client.post("/mcp", json=GET_ME, headers={**MCP_HEADERS, **bearer(bound)})
        plain = signer.token()
        unbound = dpop_call(client, plain, key.proof(token=plain))
        for response in (missing_proof, as_bearer, unbound):
            assert response.status_code == 401
            dpop = [value for value in challenges(response) if value.startswith("DPoP ")]
            assert len(dpop) == 1 and dpop[0].startswith('DPoP algs="EdDSA ES256"'), challenges(response)


# --- behind a gateway ------------------------------------------------------------------------------

PUBLIC_URL = "https://public.example/prefix/mcp"
PUBLIC_PRM = "https://public.example/.well-known/oauth-protected-resource/prefix/mcp"


@pytest.mark.parametrize(
    ("htu", "accepted"),
    [
        (PUBLIC_URL, True),
        ("http://pod.internal:8000/mcp", False),  # the pod's own URL
        ("https://public.example/mcp", False),  # the public host without the gateway's prefix
    ],
)
def test_behind_a_gateway_only_the_public_url_is_accepted(idp, signer, key, htu, accepted):
    token = signer.token(aud=PUBLIC_URL, cnf={"jkt": key.thumbprint})
    settings = {"mcp_server_url": PUBLIC_URL, "mcp_allowed_hosts": ["pod.internal"]}
    with app_client("http://pod.internal:8000", **settings) as pod:
        response = dpop_call(pod, token, key.proof(htu=htu, token=token))
        if accepted:
            assert_ok(response)
        else:
            assert response.status_code == 401
            assert challenges(response) == [
                f'DPoP algs="{ALGS}", error="invalid_dpop_proof", '
                f'error_description="DPoP proof htu does not match this endpoint\'s URL", '
                f'resource_metadata="{PUBLIC_PRM}", scope="{SCOPES}"'
            ]


# --- CORS, logs, metrics -----------------------------------------------------------------------------


def test_cors_allows_the_dpop_header_and_exposes_the_nonce(idp):
    origin = "https://app.example.com"
    with app_client(cors_allow_origins=[origin]) as client:
        preflight = client.options(
            "/mcp",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, dpop, content-type",
            },
        )
        assert preflight.status_code == 200
        assert "dpop" in preflight.headers["access-control-allow-headers"].lower()
        response = client.post("/mcp", json=GET_ME, headers={**MCP_HEADERS, "Origin": origin})
        assert "DPoP-Nonce" in response.headers["access-control-expose-headers"]


def test_the_binding_is_logged_and_counted_never_the_proof_or_token(client, bound, key, signer, caplog):
    proof = key.proof(token=bound)
    with caplog.at_level(logging.INFO):
        assert_ok(dpop_call(client, bound, proof))
        dpop_call(client, bound, proof)  # replayed: refused and logged
        client.post("/mcp", json=GET_ME, headers={**MCP_HEADERS, **bearer(signer.token())})
    lines = [record.getMessage() for record in caplog.records if record.name == "access"]
    assert "binding=dpop" in lines[0] and "binding=dpop" in lines[1] and "binding=bearer" in lines[2]
    for part in (*bound.split("."), *proof.split(".")):
        assert part not in caplog.text
    counted = client.app.state.components.metrics.auth_bindings
    assert counted == {("dpop", "ok"): 1, ("dpop", "invalid_dpop_proof"): 1, ("bearer", "ok"): 1}


# --- any DPoP header --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(rsa_private_key_module: Any, ec_module_key: Any) -> Iterator[tuple[TestClient, Signer, DpopKey]]:
    import respx

    signer = Signer(rsa_private_key_module, "rsa-1", "RS256")
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        FakeIdP(router).publish(signer)
        with TestClient(build_app(make_settings()), base_url=BASE_URL, raise_server_exceptions=False) as client:
            yield client, signer, DpopKey(ec_module_key, "ES256")


@pytest.fixture(scope="module")
def rsa_private_key_module() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_module_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(value=st.binary(max_size=300).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b"").strip()))
@example(value=b"a.b.c")
@example(value=b"\xff\xfe.\x00.x")
@example(value=b"eyJhbGciOiJub25lIn0.e30.")
def test_any_dpop_header_value_gets_a_4xx(world, value):
    client, signer, key = world
    token = signer.token(cnf={"jkt": key.thumbprint}, jti=uuid.uuid4().hex)
    headers = {**MCP_HEADERS, "Authorization": f"DPoP {token}", "DPoP": value}
    response = client.post("/mcp", json=GET_ME, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    if response.status_code == 401:
        assert challenges(response)[0].startswith(f'DPoP algs="{ALGS}", error=')

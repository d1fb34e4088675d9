"""Shared fixtures: real keys, real signed tokens, an IdP mocked with respx, and the real app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from starlette.testclient import TestClient

from secret_files import secret_fields
from settings import Settings
from tests import pg
from tests.support import BASE_URL, JWKS_B, JWKS_URI, FakeIdP, Signer, make_settings, user_token
from web.app import build_app


@pytest.fixture(scope="session")
def rsa_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def second_rsa_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def ec384_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="session")
def ed_private_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def signer(rsa_private_key: rsa.RSAPrivateKey) -> Signer:
    return Signer(rsa_private_key, "rsa-1", "RS256")


@pytest.fixture
def signer_b(second_rsa_private_key: rsa.RSAPrivateKey) -> Signer:
    """The second IdP's signer (several issuers: ISSUER_B, JWKS_B)."""
    return Signer(second_rsa_private_key, "rsa-2", "RS256")


@pytest.fixture
def idps(signer: Signer, signer_b: Signer) -> Iterator[respx.MockRouter]:
    """Both IdPs' JWKS (routes "a" and "b"); nothing else answers (an unexpected request fails the test)."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:
        mock.get(JWKS_URI, name="a").mock(return_value=httpx.Response(200, json={"keys": [signer.jwk()]}))
        mock.get(JWKS_B, name="b").mock(return_value=httpx.Response(200, json={"keys": [signer_b.jwk()]}))
        yield mock


@pytest.fixture
def alice(signer: Signer) -> str:
    """A person's token for the notes tools; `bob` is another person."""
    return user_token(signer, "alice")


@pytest.fixture
def bob(signer: Signer) -> str:
    return user_token(signer, "bob")


@pytest.fixture
def rotated_signer(second_rsa_private_key: rsa.RSAPrivateKey) -> Signer:
    return Signer(second_rsa_private_key, "rsa-2", "RS256")


@pytest.fixture
def ec_signer(ec_private_key: ec.EllipticCurvePrivateKey) -> Signer:
    return Signer(ec_private_key, "ec-1", "ES256")


@pytest.fixture
def ed_signer(ed_private_key: ed25519.Ed25519PrivateKey) -> Signer:
    return Signer(ed_private_key, "ed-1", "EdDSA")


@pytest.fixture
def idp(signer: Signer) -> Iterator[FakeIdP]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        fake = FakeIdP(router)
        fake.publish(signer)
        yield fake


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer's shell or .env leaks into a test: every Settings field is unset, cwd is empty."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name in secret_fields(Settings):
        monkeypatch.delenv(f"{name.upper()}_FILE", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def client(idp: FakeIdP, settings: Settings) -> Iterator[TestClient]:
    """The real app, lifespan running, behind the real middleware; talks to the mocked IdP."""
    with TestClient(build_app(settings), base_url=BASE_URL) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def postgres_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a fresh PostgreSQL database for this run (see tests/pg.py for where the server comes from)."""
    with pg.fresh_database(tmp_path_factory.mktemp("postgres")) as url:
        yield url


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """The run's database, emptied of the notes tables for this test."""
    return pg.empty(postgres_database)

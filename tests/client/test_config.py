"""The client's settings: OAUTH_CLIENT_SECRET_FILE (any SecretStr field's `<NAME>_FILE`) under the server's rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.config import ClientSettings, ConfigError, load_settings, resolve
from client.dpop import DPoPKey
from secret_files import secret_fields
from tests.support import secret_file

MARKER = "Zq7-client-secret-"


@pytest.fixture(autouse=True)
def _no_client_settings_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ClientSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(f"{name.upper()}_FILE", raising=False)


def test_the_client_secret_is_found_by_its_type() -> None:
    assert secret_fields(ClientSettings) == ["oauth_client_secret", "oauth_client_dpop_key"]


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n"])
def test_the_client_secret_comes_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: bytes) -> None:
    monkeypatch.setenv("OAUTH_TOKEN_URL", "https://tenant.auth0.com/oauth/token")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "m2m-client")
    monkeypatch.setenv("OAUTH_CLIENT_SECRET_FILE", str(secret_file(tmp_path, b"from-a-file " + ending)))

    config = resolve({"server_url": "https://mcp.example.com/mcp"}, load_settings())

    assert config.client_secret.get_secret_value() == "from-a-file "


def test_the_file_variable_can_come_from_dotenv(tmp_path: Path) -> None:
    path = secret_file(tmp_path, b"dotenv-secret\n")
    (tmp_path / ".env").write_text(f"OAUTH_CLIENT_SECRET_FILE={path}\n", encoding="utf-8")

    secret = load_settings().oauth_client_secret

    assert secret is not None
    assert secret.get_secret_value() == "dotenv-secret"


def test_the_secret_and_its_file_together_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", "plain")
    monkeypatch.setenv("OAUTH_CLIENT_SECRET_FILE", str(secret_file(tmp_path, b"filed")))

    with pytest.raises(ConfigError) as error:
        load_settings()

    assert str(error.value) == "OAUTH_CLIENT_SECRET and OAUTH_CLIENT_SECRET_FILE: both are set; set only one of them"


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "cannot read {path!r}: No such file or directory"), (b"\n", "{path!r} is empty")],
)
def test_file_problems_are_one_line_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes | None, problem: str
) -> None:
    path = secret_file(tmp_path, content, name="client-secret")
    monkeypatch.setenv("OAUTH_CLIENT_SECRET_FILE", str(path))

    with pytest.raises(ConfigError) as error:
        load_settings()

    assert str(error.value).startswith("OAUTH_CLIENT_SECRET_FILE: " + problem.format(path=str(path)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=128))
def test_any_bytes_give_the_secret_or_one_line_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    raw = MARKER.encode() + content
    monkeypatch.setenv("OAUTH_CLIENT_SECRET_FILE", str(secret_file(tmp_path, raw)))
    try:
        loaded = load_settings()
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("OAUTH_CLIENT_SECRET_FILE: ")
        assert "\n" not in message and "\r" not in message
        assert MARKER not in message
    else:
        text = raw.decode("utf-8")
        assert loaded.oauth_client_secret is not None
        assert loaded.oauth_client_secret.get_secret_value() == (
            text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
        )


# --- DPoP: OAUTH_CLIENT_DPOP, OAUTH_CLIENT_DPOP_KEY(_FILE), OAUTH_CLIENT_DPOP_ALG ------------------------

DEV = {"server_url": "http://127.0.0.1:8000/mcp"}


def ec_pem() -> tuple[bytes, str]:
    """A P-256 key as PKCS#8 PEM, and its thumbprint."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, DPoPKey(private).thumbprint


def test_dpop_is_off_by_default() -> None:
    assert resolve(DEV, load_settings()).dpop is None


@pytest.mark.parametrize("source", ["env", "flag"])
def test_dpop_from_the_environment_or_the_flag_makes_a_key_in_memory(monkeypatch, source) -> None:
    flags = dict(DEV)
    if source == "env":
        monkeypatch.setenv("OAUTH_CLIENT_DPOP", "true")
    else:
        flags["dpop"] = True

    key = resolve(flags, load_settings()).dpop

    assert key is not None
    assert key.algorithm == "ES256"


def test_the_algorithm_of_a_generated_key_is_configurable(monkeypatch) -> None:
    monkeypatch.setenv("OAUTH_CLIENT_DPOP", "1")
    monkeypatch.setenv("OAUTH_CLIENT_DPOP_ALG", "EdDSA")

    key = resolve(DEV, load_settings()).dpop

    assert key is not None
    assert key.algorithm == "EdDSA"


def test_the_key_comes_from_the_file_the_user_names(tmp_path: Path, monkeypatch) -> None:
    pem, thumbprint = ec_pem()
    monkeypatch.setenv("OAUTH_CLIENT_DPOP", "true")
    monkeypatch.setenv("OAUTH_CLIENT_DPOP_KEY_FILE", str(secret_file(tmp_path, pem)))

    config = resolve(DEV, load_settings())

    assert config.dpop is not None
    assert config.dpop.thumbprint == thumbprint
    assert pem.decode().splitlines()[1] not in repr(config)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OAUTH_CLIENT_DPOP_KEY_FILE": b"not a pem\n"}, "OAUTH_CLIENT_DPOP_KEY (from OAUTH_CLIENT_DPOP_KEY_FILE): "),
        ({"OAUTH_CLIENT_DPOP_KEY": "garbage"}, "OAUTH_CLIENT_DPOP_KEY: expected a PEM private key"),
        ({"OAUTH_CLIENT_DPOP_ALG": "HS256"}, "OAUTH_CLIENT_DPOP_ALG: algorithm: expected one of ES256"),
        (
            {"OAUTH_CLIENT_DPOP_ALG": "RS256", "OAUTH_CLIENT_DPOP_KEY_FILE": None},
            "OAUTH_CLIENT_DPOP_ALG: algorithm RS256",
        ),
    ],
    ids=["bad-file", "bad-env", "hmac-alg", "alg-not-fitting"],
)
def test_an_unusable_dpop_setting_is_one_line_naming_it(tmp_path: Path, monkeypatch, env, message) -> None:
    monkeypatch.setenv("OAUTH_CLIENT_DPOP", "true")
    for name, value in env.items():
        if name.endswith("_FILE"):
            value = ec_pem()[0] if value is None else value
            monkeypatch.setenv(name, str(secret_file(tmp_path, value)))
        else:
            monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as error:
        resolve(DEV, load_settings())

    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_a_key_without_dpop_on_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OAUTH_CLIENT_DPOP_KEY_FILE", str(secret_file(tmp_path, ec_pem()[0])))

    with pytest.raises(ConfigError, match="OAUTH_CLIENT_DPOP_KEY is set but DPoP is off"):
        resolve(DEV, load_settings())


def test_a_bad_boolean_names_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("OAUTH_CLIENT_DPOP", "sometimes")

    with pytest.raises(ConfigError, match=r"^OAUTH_CLIENT_DPOP: "):
        load_settings()

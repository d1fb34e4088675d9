"""What `python -m client` connects to: OAUTH_*/MCP_SERVER_URL from the environment and .env, then flags on top."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from client.discovery import endpoint_problem
from client.dpop import DPoPKey, DPoPKeyError
from client.token_request import AuthMethod
from secret_files import SecretFileError, SecretFileSettings, file_variable

# `make dev`: the server and its embedded issuer on 127.0.0.1:8000, with its default client.
DEV_SERVER_URL = "http://127.0.0.1:8000/mcp"
DEV_ISSUER_TOKEN_PATH = "/dev-issuer/token"  # noqa: S105 - a path, not a password
DEV_CLIENT_ID = "dev-client"
DEV_CLIENT_SECRET = "dev-secret"  # noqa: S105 - the documented secret of the local dev issuer

_AUTH_METHODS: dict[str, AuthMethod] = {
    "client_secret_basic": "client_secret_basic",
    "basic": "client_secret_basic",
    "client_secret_post": "client_secret_post",
    "post": "client_secret_post",
}


class ConfigError(Exception):
    """A missing or invalid setting; the message is one line naming the variable (and flag)."""


class ClientSettings(SecretFileSettings):
    """The CLI's environment. Field names are the variable names; empty values count as unset."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False)

    oauth_token_url: str | None = None
    oauth_issuer: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: SecretStr | None = None
    oauth_token_audience: str | None = None
    oauth_scope: str | None = None
    oauth_resource: str | None = None
    oauth_token_auth_method: str | None = None
    mcp_server_url: str | None = None
    # DPoP (RFC 9449): bind the tokens to a proof key; the key is generated in memory unless one is given
    # (a PEM private key: secret, so OAUTH_CLIENT_DPOP_KEY_FILE names a file holding it).
    oauth_client_dpop: bool | None = None
    oauth_client_dpop_key: SecretStr | None = None
    oauth_client_dpop_alg: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("oauth_client_dpop_key", mode="before")
    @classmethod
    def _a_private_key(cls, value: Any) -> Any:
        # Read here, where the error can still name OAUTH_CLIENT_DPOP_KEY_FILE; the key is made in resolve().
        if isinstance(value, str) and value.strip():
            try:
                DPoPKey.from_pem(value)
            except DPoPKeyError as exc:
                raise ValueError(str(exc)) from None
        return value


@dataclass(frozen=True)
class ClientConfig:
    """Everything the CLI needs, resolved once. The secret stays a SecretStr."""

    server_url: str
    token_url: str | None
    issuer: str | None
    client_id: str
    client_secret: SecretStr
    auth_method: AuthMethod
    audience: str | None
    scope: str | None
    resource: str | None
    dpop: DPoPKey | None = None  # None: Bearer tokens


def load_settings() -> ClientSettings:
    try:
        return ClientSettings()
    except SecretFileError as exc:
        raise ConfigError(str(exc)) from None
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]).upper() if error["loc"] else "configuration"
        if source := file_variable(error.get("input")):
            name = f"{name} (from {source})"
        raise ConfigError(f"{name}: {str(error['msg']).removeprefix('Value error, ')}") from None


def _is_local(url: str) -> bool:
    return urlsplit(url).scheme == "http" and endpoint_problem(url) is None


def _dev_token_url(server_url: str) -> str | None:
    """The dev issuer next to a loopback server; None for any other host."""
    return f"http://{urlsplit(server_url).netloc}{DEV_ISSUER_TOKEN_PATH}" if _is_local(server_url) else None


def resolve(flags: Mapping[str, Any], settings: ClientSettings | None) -> ClientConfig:
    """Flags win over the environment; with neither token URL nor issuer, `make dev`'s issuer and client."""
    env = settings or ClientSettings.model_construct()

    def pick(flag: str, value: Any) -> Any:
        return flags[flag] if flags.get(flag) not in (None, "") else value

    server_url = pick("server_url", env.mcp_server_url) or DEV_SERVER_URL
    if problem := endpoint_problem(server_url):
        raise ConfigError(f"MCP_SERVER_URL (--server-url): {problem}, got {server_url!r}")
    if flags.get("token_url") or flags.get("issuer"):
        token_url, issuer = flags.get("token_url"), flags.get("issuer")
    else:
        token_url, issuer = env.oauth_token_url, env.oauth_issuer
    client_id = pick("client_id", env.oauth_client_id)
    secret = flags.get("client_secret") or (
        env.oauth_client_secret.get_secret_value() if env.oauth_client_secret else None
    )
    if not token_url and not issuer:
        token_url = _dev_token_url(server_url)
        if token_url is None:
            raise ConfigError("OAUTH_TOKEN_URL or OAUTH_ISSUER (--token-url / --issuer): missing")
    if _is_local(token_url or issuer or ""):
        # Only a loopback issuer (`make dev`) gets the dev client by default; a real IdP never sees it.
        client_id, secret = client_id or DEV_CLIENT_ID, secret or DEV_CLIENT_SECRET
    if not client_id:
        raise ConfigError("OAUTH_CLIENT_ID (--client-id): missing")
    if not secret:
        raise ConfigError("OAUTH_CLIENT_SECRET (--client-secret): missing")
    method_name = pick("auth_method", env.oauth_token_auth_method) or "client_secret_basic"
    method = _AUTH_METHODS.get(str(method_name).strip().lower())
    if method is None:
        raise ConfigError(
            "OAUTH_TOKEN_AUTH_METHOD (--auth-method): expected client_secret_basic or client_secret_post, "
            f"got {method_name!r}"
        )
    return ClientConfig(
        dpop=_dpop_key(flags, env),
        server_url=server_url,
        token_url=token_url,
        issuer=issuer,
        client_id=client_id,
        client_secret=SecretStr(secret),
        auth_method=method,
        audience=pick("audience", env.oauth_token_audience),
        scope=pick("scope", env.oauth_scope),
        resource=pick("resource", env.oauth_resource),
    )


def _dpop_key(flags: Mapping[str, Any], env: ClientSettings) -> DPoPKey | None:
    """The proof key when DPoP is on (`--dpop` or OAUTH_CLIENT_DPOP): the one given, else a new one in memory."""
    if not (flags.get("dpop") or env.oauth_client_dpop):
        if env.oauth_client_dpop_key is not None or env.oauth_client_dpop_alg is not None:
            given = "OAUTH_CLIENT_DPOP_KEY" if env.oauth_client_dpop_key is not None else "OAUTH_CLIENT_DPOP_ALG"
            raise ConfigError(f"{given} is set but DPoP is off: set OAUTH_CLIENT_DPOP=true (or --dpop), or unset it")
        return None
    algorithm = env.oauth_client_dpop_alg
    try:
        if env.oauth_client_dpop_key is None:
            return DPoPKey.generate(algorithm or "ES256")
        return DPoPKey.from_pem(env.oauth_client_dpop_key.get_secret_value(), algorithm=algorithm)
    except DPoPKeyError as exc:  # the PEM itself was checked by ClientSettings: the algorithm is at fault
        raise ConfigError(f"OAUTH_CLIENT_DPOP_ALG: {exc}") from None

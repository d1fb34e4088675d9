"""One trusted issuer's settings (IssuerConfig), from the OAUTH_* variables or from a [[issuer]] table of the
TOML file OAUTH_ISSUERS_FILE; each table is validated by Settings' own validators and presets.

A bad file is one line naming OAUTH_ISSUERS_FILE, the table as `[[issuer]] #N` (1-based) and the key as written.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from auth import providers
from auth.providers import Provider
from auth.token_rules import ENTRA_ISSUER_TEMPLATES, TokenRules
from secret_files import SecretFileError, read_secret_file
from settings import DEFAULT_ALGORITHMS, IntrospectionAuthMethod, Settings

FILE_VARIABLE = "OAUTH_ISSUERS_FILE"
MAX_FILE_BYTES = 1024 * 1024  # a list of issuers, never a data file
SECRET_FILE_KEY = "introspection_client_secret_file"  # noqa: S105 - a key name, not a secret

# Table keys: the per-issuer OAUTH_* settings in lower case without the prefix (each is a Settings field
# `oauth_<key>`), plus the file variant of the one secret.
TABLE_KEYS = (
    "issuer",
    "provider",
    "domain",
    "auth_server_id",
    "tenant_id",
    "allowed_tenants",
    "region",
    "user_pool_id",
    "audience",
    "jwks_uri",
    "well_known_url",
    "algorithms",
    "client_ids",
    "required_typ",
    "scope_prefix",
    "leeway_seconds",
    "jwks_cache_seconds",
    "jwks_refresh_cooldown_seconds",
    "jwks_max_stale_seconds",
    "introspection_endpoint",
    "introspection_client_id",
    "introspection_client_secret",
    "introspection_auth_method",
    "introspection_cache_seconds",
    "introspection_audience_optional",
    "introspect_jwts",
)
# Every key a table may hold, in the order the unknown-key message lists them: the secret's file variant
# right after the secret.
KNOWN_KEYS = tuple(
    key
    for name in TABLE_KEYS
    for key in ((name, SECRET_FILE_KEY) if name == "introspection_client_secret" else (name,))
)
_BOOLEAN_KEYS = frozenset({"introspect_jwts", "introspection_audience_optional"})
_NAMED_VARIABLE = re.compile(r"^OAUTH_([A-Z_]+): ")


class IssuersFileError(ValueError):
    """A bad OAUTH_ISSUERS_FILE; the message is the one line start-up prints."""


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """Everything that is per issuer: the preset's values, the token rules' inputs, key-set timings, introspection."""

    issuer: str
    accepted_issuers: tuple[str, ...]  # exact iss values (a preset may accept more than `issuer`)
    audience: tuple[str, ...]
    provider: Provider = "oidc"
    domain: str = ""
    auth_server_id: str = "default"
    tenant_id: str = ""
    allowed_tenants: tuple[str, ...] = ()
    region: str = ""
    user_pool_id: str = ""
    jwks_uri: str | None = None
    well_known_url: str | None = None
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    client_ids: tuple[str, ...] = ()
    required_typ: str = ""
    scope_prefix: str = ""
    leeway_seconds: int = 30
    jwks_cache_seconds: int = 600
    jwks_refresh_cooldown_seconds: float = 10.0
    jwks_max_stale_seconds: int = 6 * 3600
    introspection_endpoint: str | None = None
    introspection_client_id: str = ""
    introspection_client_secret: SecretStr | None = None
    introspection_auth_method: IntrospectionAuthMethod = "client_secret_basic"
    introspection_cache_seconds: float = 60.0
    introspection_audience_optional: bool = False
    introspect_jwts: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> IssuerConfig:
        """The issuer the OAUTH_* variables describe (Settings has applied the preset and the defaults)."""
        return cls(
            issuer=settings.oauth_issuer,
            accepted_issuers=providers.accepted_issuers(settings),
            audience=tuple(settings.oauth_audience),
            provider=settings.oauth_provider,
            domain=settings.oauth_domain,
            auth_server_id=settings.oauth_auth_server_id,
            tenant_id=settings.oauth_tenant_id,
            allowed_tenants=tuple(settings.oauth_allowed_tenants),
            region=settings.oauth_region,
            user_pool_id=settings.oauth_user_pool_id,
            jwks_uri=settings.oauth_jwks_uri,
            well_known_url=settings.oauth_well_known_url,
            algorithms=tuple(settings.oauth_algorithms),
            client_ids=tuple(settings.oauth_client_ids),
            required_typ=settings.oauth_required_typ,
            scope_prefix=settings.oauth_scope_prefix,
            leeway_seconds=settings.oauth_leeway_seconds,
            jwks_cache_seconds=settings.oauth_jwks_cache_seconds,
            jwks_refresh_cooldown_seconds=settings.oauth_jwks_refresh_cooldown_seconds,
            jwks_max_stale_seconds=settings.oauth_jwks_max_stale_seconds,
            introspection_endpoint=settings.oauth_introspection_endpoint,
            introspection_client_id=settings.oauth_introspection_client_id,
            introspection_client_secret=settings.oauth_introspection_client_secret,
            introspection_auth_method=settings.oauth_introspection_auth_method,
            introspection_cache_seconds=settings.oauth_introspection_cache_seconds,
            introspection_audience_optional=settings.oauth_introspection_audience_optional,
            introspect_jwts=settings.oauth_introspect_jwts,
        )

    # --- derived views -------------------------------------------------------------------------
    @property
    def entra_multi_tenant(self) -> bool:
        return providers.is_entra_multi_tenant(self.provider, self.tenant_id)

    @property
    def checks_audience(self) -> bool:
        return providers.checks_audience(self.provider)

    @property
    def metadata_url(self) -> str:
        """Where the IdP's discovery document is (configured, else the OIDC location)."""
        return self.well_known_url or f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"

    @property
    def routing_issuers(self) -> tuple[str, ...]:
        """Every exact iss value this issuer's tokens may carry: the accepted issuers, or (Entra multi-tenant)
        each allowed tenant's issuers from the templates. A token is routed here only by one of these."""
        if self.entra_multi_tenant:
            return tuple(
                template.format(tid=tid) for tid in self.allowed_tenants for template in ENTRA_ISSUER_TEMPLATES
            )
        return self.accepted_issuers

    def token_rules(self) -> TokenRules:
        """The rules this issuer's tokens must pass."""
        return TokenRules.create(
            issuers=() if self.entra_multi_tenant else self.accepted_issuers,
            audiences=self.audience,
            audience_optional=not self.checks_audience,
            allowed_tenants=frozenset(self.allowed_tenants) if self.entra_multi_tenant else frozenset(),
            leeway=self.leeway_seconds,
            client_ids=frozenset(self.client_ids),
            token_use="access" if self.provider == "cognito" else None,
            required_typ=self.required_typ or None,
            scope_prefix=self.scope_prefix,
        )

    @property
    def introspects(self) -> bool:
        """Introspection is on when its client id is set."""
        return bool(self.introspection_client_id)


class IssuerTable(Settings):
    """One [[issuer]] table, validated by Settings' own validators and presets; the environment is never read."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


# The Settings fields a table sets: with the file, setting them in the environment is refused.
PER_ISSUER_FIELDS = frozenset(f"oauth_{key}" for key in TABLE_KEYS) & frozenset(Settings.model_fields)


def load_issuers_file(settings: Settings) -> tuple[IssuerConfig, ...]:
    """The issuers of OAUTH_ISSUERS_FILE, in file order; IssuersFileError (one line) for a bad file."""
    in_env = sorted(name.upper() for name in PER_ISSUER_FIELDS & settings.model_fields_set)
    if in_env:
        raise IssuersFileError(
            f"{FILE_VARIABLE}: {', '.join(in_env)} set too; with {FILE_VARIABLE} each issuer's settings go in "
            "its [[issuer]] table"
        )
    return parse_issuers(read_issuers_file(settings.oauth_issuers_file), server_url=settings.mcp_server_url)


def read_issuers_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise IssuersFileError(f"{FILE_VARIABLE}: cannot read {path!r}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_FILE_BYTES:
        raise IssuersFileError(f"{FILE_VARIABLE}: {path!r} is larger than {MAX_FILE_BYTES} bytes")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise IssuersFileError(
            f"{FILE_VARIABLE}: {path!r} is not UTF-8 text (bad byte at offset {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise IssuersFileError(f"{FILE_VARIABLE}: {path!r} is not valid TOML: {_one_line(str(exc))}") from None


def parse_issuers(document: Mapping[str, Any], *, server_url: str) -> tuple[IssuerConfig, ...]:
    """The [[issuer]] tables of a parsed TOML document as IssuerConfigs; a table's audience defaults to
    `server_url` (MCP_SERVER_URL), as without the file."""
    other = [key for key in document if key != "issuer"]
    if other:
        raise IssuersFileError(f"{FILE_VARIABLE}: unknown top-level key {other[0]!r}; expected [[issuer]] tables only")
    tables = document.get("issuer")
    if not isinstance(tables, list) or not tables or not all(isinstance(table, dict) for table in tables):
        raise IssuersFileError(f"{FILE_VARIABLE}: expected one [[issuer]] table per trusted issuer")
    configs: list[IssuerConfig] = []
    claimed: dict[str, int] = {}  # iss value -> the table that accepts it
    for number, table in enumerate(tables, start=1):
        config = table_config(table, number, server_url=server_url)
        for iss in config.routing_issuers:
            if iss in claimed:
                raise _table_error(number, "issuer", f"{iss!r} is already trusted by [[issuer]] #{claimed[iss]}")
            claimed[iss] = number
        configs.append(config)
    return tuple(configs)


def table_config(table: Mapping[str, Any], number: int, *, server_url: str) -> IssuerConfig:
    unknown = [key for key in table if key not in KNOWN_KEYS]
    if unknown:
        raise _table_error(number, unknown[0], f"unknown key; expected some of {', '.join(KNOWN_KEYS)}")
    # TOML has its own booleans: true is never a number or a text (pydantic would read it as 1).
    flag = next((key for key, value in table.items() if isinstance(value, bool) and key not in _BOOLEAN_KEYS), None)
    if flag is not None:
        raise _table_error(number, flag, "expected a value of this key's type, got a boolean")
    values: dict[str, Any] = {f"oauth_{key}": value for key, value in table.items() if key != SECRET_FILE_KEY}
    if SECRET_FILE_KEY in table:
        if "introspection_client_secret" in table:
            raise _table_error(number, SECRET_FILE_KEY, "introspection_client_secret is set too; set only one")
        path = table[SECRET_FILE_KEY]
        if not isinstance(path, str):
            raise _table_error(number, SECRET_FILE_KEY, "expected the path of the file holding the secret")
        try:
            values["oauth_introspection_client_secret"] = read_secret_file(f"key {SECRET_FILE_KEY!r}", path)
        except SecretFileError as exc:
            raise IssuersFileError(f"{FILE_VARIABLE}: [[issuer]] #{number}, {_one_line(str(exc))}") from None
    try:
        validated = IssuerTable(**values, mcp_server_url=server_url)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"]:
            key = str(error["loc"][0]).removeprefix("oauth_")
        else:  # a preset's own check: its message opens with the variable it names
            named = _NAMED_VARIABLE.match(message)
            key = named.group(1).lower() if named else "provider"
            message = message[named.end() :] if named else message
        raise _table_error(number, key, message) from None
    if not validated.oauth_issuer:
        raise _table_error(number, "issuer", "missing; expected the issuer URL exactly as in the tokens' iss claim")
    return IssuerConfig.from_settings(validated)


def _table_error(number: int, key: str, message: str) -> IssuersFileError:
    return IssuersFileError(f"{FILE_VARIABLE}: [[issuer]] #{number}, key {key!r}: {_one_line(message)}")


def _one_line(text: str) -> str:
    return " ".join(text.split())

"""Secrets from files: every SecretStr setting also reads `<NAME>_FILE`, as Docker and Kubernetes mount secrets."""

from __future__ import annotations

import types
from collections.abc import Collection
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

# A secret is a token, a password or a URL, never a data file: a larger file is a mistake (or /dev/zero).
MAX_SECRET_FILE_BYTES = 64 * 1024


class SecretFileError(ValueError):
    """A `<NAME>_FILE` cannot give a value; the message is one line naming it, never the file's content."""


class FileSecret(str):
    """A value read from a file; it remembers which variable named the file, for error messages."""

    variable: str

    def __new__(cls, value: str, variable: str) -> FileSecret:
        secret = super().__new__(cls, value)
        secret.variable = variable
        return secret


def is_secret(annotation: Any) -> bool:
    """SecretStr itself, optional, in a union or Annotated."""
    if annotation is SecretStr:
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return is_secret(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return any(is_secret(argument) for argument in get_args(annotation))
    return False


def secret_fields(model: type[BaseModel]) -> list[str]:
    """The names of the model's secret fields, keyed on the type so that a new SecretStr field needs no list."""
    return [name for name, field in model.model_fields.items() if is_secret(field.annotation)]


def read_secret_file(variable: str, path: str) -> str:
    """The file's text with one trailing newline (\\n or \\r\\n) removed; SecretFileError if there is none."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise SecretFileError(f"{variable}: cannot read {path!r}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise SecretFileError(f"{variable}: {path!r} is larger than {MAX_SECRET_FILE_BYTES} bytes; expected one secret")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SecretFileError(f"{variable}: {path!r} is not UTF-8 text (bad byte at offset {exc.start})") from None
    text = text.removesuffix("\r\n") if text.endswith("\r\n") else text.removesuffix("\n")
    if not text.strip():
        raise SecretFileError(f"{variable}: {path!r} is empty; expected the secret (or unset {variable})")
    return text


class SecretFilesSource(PydanticBaseSettingsSource):
    """`<NAME>_FILE` for every secret field, looked up where `<NAME>` is (the environment first, then `.env`)."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        lookups: Collection[PydanticBaseSettingsSource],
        given: Collection[str] = (),
    ) -> None:
        super().__init__(settings_cls)
        self.lookups = [source for source in lookups if isinstance(source, EnvSettingsSource)]
        self.given = set(given)  # fields passed as arguments: they win, their files are not read

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything happens in __call__

    def _lookup(self, variable: str) -> str | None:
        for source in self.lookups:
            value = source.env_vars.get(variable if source.case_sensitive else variable.lower())
            if value is not None and value.strip():
                return value
        return None

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name in secret_fields(self.settings_cls):
            if field_name in self.given:
                continue
            prefix = self.lookups[0].env_prefix if self.lookups else ""
            name = f"{prefix}{field_name}".upper()
            file_variable = f"{name}_FILE"
            path = self._lookup(file_variable)
            if path is None:
                continue
            if self._lookup(name) is not None:
                raise SecretFileError(f"{name} and {file_variable}: both are set; set only one of them")
            values[field_name] = FileSecret(read_secret_file(file_variable, path), file_variable)
        return values


class SecretFileSettings(BaseSettings):
    """A settings base whose SecretStr fields also read `<NAME>_FILE` (Docker and Kubernetes secret mounts).

    pydantic-settings' own sources with the secret files after the arguments: arguments, then files, then the
    environment and `.env` (a variable and its file together are refused, so their order never decides)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        given = getattr(init_settings, "init_kwargs", {}).keys()
        files = SecretFilesSource(settings_cls, [env_settings, dotenv_settings], given)
        return init_settings, files, env_settings, dotenv_settings, file_secret_settings


def file_variable(error_input: Any) -> str | None:
    """The `<NAME>_FILE` a refused value came from, if it came from one (for the error message)."""
    return error_input.variable if isinstance(error_input, FileSecret) else None

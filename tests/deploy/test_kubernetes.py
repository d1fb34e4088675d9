"""The kustomize base in deploy/kubernetes: every object valid under the Kubernetes schemas (strict, offline, with
kubernetes-validate's bundled schemas), then the operations contract read from the parsed YAML. Each rule is a
function returning its problems; the mutation tests break a copy of the base to prove every rule can fail."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import ValidationError, latest_version

from settings import Settings, SettingsError, load_settings
from tests.deploy.secret_names import URL_WITH_PASSWORD, is_secret_like
from web.well_known import resource_metadata_url

# The newest Kubernetes release kubernetes-validate's bundle (pinned in requirements-dev.txt) has schemas for.
KUBERNETES_VERSION = "1.37.0"

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = BASE / "kustomization.yaml"
APP_UID = 10001
TMP = "/tmp"  # where the image writes on its read-only root file system: an emptyDir
SECRET_ENV_NAMES = ("NOTES_DATABASE_URL", "METRICS_TOKEN")

Manifest = dict[str, Any]
Base = dict[str, Manifest]  # file name -> its one object

_FLAG = re.compile(r"^--?([A-Za-z0-9_.-]+)(?:=(.*))?$")


def manifest_files() -> list[Path]:
    return sorted(path for path in BASE.glob("*.y*ml") if path != KUSTOMIZATION)


def load_manifest(path: Path) -> Manifest:
    documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    assert len(documents) == 1, f"{path.name}: expected exactly one complete object, found {len(documents)} documents"
    assert isinstance(documents[0], dict) and {"apiVersion", "kind", "metadata"} <= documents[0].keys(), (
        f"{path.name}: expected a Kubernetes object with apiVersion, kind and metadata"
    )
    return documents[0]


def load_base() -> Base:
    return {path.name: load_manifest(path) for path in manifest_files()}


def kustomization() -> dict[str, Any]:
    return yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))


def objects_of(base: Base, kind: str) -> list[Manifest]:
    return [obj for obj in base.values() if obj.get("kind") == kind]


def the(base: Base, kind: str) -> Manifest:
    found = objects_of(base, kind)
    assert len(found) == 1, f"expected one {kind} in deploy/kubernetes, found {len(found)}"
    return found[0]


def pod_spec(base: Base) -> dict[str, Any]:
    return the(base, "Deployment")["spec"]["template"]["spec"]


def containers(base: Base) -> Iterator[dict[str, Any]]:
    spec = pod_spec(base)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def config_map_data(base: Base) -> dict[str, str]:
    data: dict[str, str] = {}
    for config_map in objects_of(base, "ConfigMap"):
        data.update(config_map.get("data") or {})
    return data


def server_url(base: Base) -> str:
    return config_map_data(base)["MCP_SERVER_URL"]


def declared_ports(container: dict[str, Any]) -> set[int | str]:
    ports: set[int | str] = set()
    for port in container.get("ports", []):
        ports.add(port["containerPort"])
        if "name" in port:
            ports.add(port["name"])
    return ports


def pre_stop_pause_seconds(container: dict[str, Any]) -> float:
    """The preStop pause: the lifecycle sleep action, or an exec of `sleep N`."""
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    if command and Path(command[0]).name == "sleep" and len(command) == 2:
        return float(command[1])
    return 0.0


def shutdown_grace_seconds(base: Base) -> float:
    """What the pods run with: the ConfigMap's SHUTDOWN_GRACE_SECONDS, else the server's default."""
    configured = config_map_data(base).get("SHUTDOWN_GRACE_SECONDS")
    if configured is not None:
        return float(configured)
    return float(Settings.model_fields["shutdown_grace_seconds"].default)


def pod_labels_match(selector: dict[str, Any], base: Base) -> bool:
    labels = the(base, "Deployment")["spec"]["template"]["metadata"]["labels"]
    wanted = selector.get("matchLabels", selector)
    return bool(wanted) and all(labels.get(key) == value for key, value in wanted.items())


# --- the rules: each returns its problems, an empty list when the base keeps it -------------------------------------


def replica_problems(base: Base) -> list[str]:
    problems = []
    replicas = the(base, "Deployment")["spec"].get("replicas", 1)
    if replicas < 2:
        problems.append(f"Deployment: replicas is {replicas}, expected at least 2")
    hpa = the(base, "HorizontalPodAutoscaler")
    if hpa["apiVersion"] != "autoscaling/v2":
        problems.append(f"HorizontalPodAutoscaler: apiVersion {hpa['apiVersion']}, expected autoscaling/v2")
    spec = hpa["spec"]
    if spec.get("minReplicas", 1) < 2:
        problems.append(f"HorizontalPodAutoscaler: minReplicas is {spec.get('minReplicas', 1)}, expected at least 2")
    if spec["maxReplicas"] < spec.get("minReplicas", 1):
        problems.append("HorizontalPodAutoscaler: maxReplicas is below minReplicas")
    target = spec["scaleTargetRef"]
    deployment = the(base, "Deployment")["metadata"]["name"]
    if (target["kind"], target["name"]) != ("Deployment", deployment):
        problems.append(f"HorizontalPodAutoscaler: scales {target['kind']}/{target['name']}, not the Deployment")
    return problems


def disruption_problems(base: Base) -> list[str]:
    """The PodDisruptionBudget must let a drain evict at least one pod when the fleet is at its minimum."""
    pdb = the(base, "PodDisruptionBudget")["spec"]
    fewest = min(
        the(base, "Deployment")["spec"].get("replicas", 1), the(base, "HorizontalPodAutoscaler")["spec"]["minReplicas"]
    )
    problems = []
    if not pod_labels_match(pdb.get("selector", {}), base):
        problems.append("PodDisruptionBudget: its selector does not select the Deployment's pods")
    # The disruption controller rounds percentages up, for maxUnavailable and minAvailable alike.
    if "maxUnavailable" in pdb:
        value = pdb["maxUnavailable"]
        evictable = -(-int(value[:-1]) * fewest // 100) if isinstance(value, str) else value
    elif "minAvailable" in pdb:
        value = pdb["minAvailable"]
        needed = -(-int(value[:-1]) * fewest // 100) if isinstance(value, str) else value
        evictable = fewest - needed
    else:
        evictable = fewest
    if evictable < 1:
        problems.append(f"PodDisruptionBudget: allows {evictable} evictions at {fewest} replicas, expected at least 1")
    return problems


def probe_problems(base: Base) -> list[str]:
    problems = []
    server = pod_spec(base)["containers"][0]
    for probe_name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        probe = server.get(probe_name)
        if probe is None:
            problems.append(f"container {server['name']}: no {probe_name}")
            continue
        if probe.get("httpGet", {}).get("path") != path:
            problems.append(f"container {server['name']}: {probe_name} should GET {path}")
    for container in containers(base):
        for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
            probe = container.get(probe_name)
            if probe is None:
                continue
            action = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc") or {}
            if "port" in action and action["port"] not in declared_ports(container):
                problems.append(
                    f"container {container['name']}: {probe_name} port {action['port']!r} is not a declared "
                    f"container port ({sorted(map(str, declared_ports(container)))})"
                )
    return problems


def resource_problems(base: Base) -> list[str]:
    problems = []
    for container in containers(base):
        resources = container.get("resources", {})
        for section, name in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
            if name not in resources.get(section, {}):
                problems.append(f"container {container['name']}: no resources.{section}.{name}")
    return problems


def shutdown_problems(base: Base) -> list[str]:
    spec = pod_spec(base)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    problems = []
    for container in spec["containers"]:
        pause = pre_stop_pause_seconds(container)
        if pause <= 0:
            problems.append(f"container {container['name']}: no preStop pause (lifecycle sleep or exec sleep)")
        needed = pause + shutdown_grace_seconds(base)
        if grace <= needed:
            problems.append(
                f"terminationGracePeriodSeconds is {grace}, expected more than preStop {pause:g} s + "
                f"SHUTDOWN_GRACE_SECONDS {shutdown_grace_seconds(base):g} s"
            )
    return problems


def literal_secret_problems(base: Base) -> list[str]:
    """No literal value for a secret-like name in env, command/args or ConfigMaps, and no Secret with values."""
    problems = []
    for container in containers(base):
        where = f"container {container['name']}"
        for item in container.get("env", []):
            if "value" in item and is_secret_like(item["name"]):
                problems.append(f"{where}: env {item['name']} has a literal value; use valueFrom.secretKeyRef")
            elif is_secret_like(item["name"]) and "secretKeyRef" not in item.get("valueFrom", {}):
                problems.append(f"{where}: env {item['name']} is not read from a Secret (valueFrom.secretKeyRef)")
            if URL_WITH_PASSWORD.search(str(item.get("value", ""))):
                problems.append(f"{where}: env {item['name']} holds a URL with a password")
        words = [str(word) for word in container.get("command", []) + container.get("args", [])]
        for index, word in enumerate(words):
            flag = _FLAG.match(word)
            name, _, value = word.partition("=")
            if flag and is_secret_like(flag.group(1)):
                if flag.group(2) is not None or (index + 1 < len(words) and not words[index + 1].startswith("-")):
                    problems.append(f"{where}: argument {flag.group(1)} is given a literal value")
            elif value and is_secret_like(name):
                problems.append(f"{where}: argument {name}= has a literal value")
            if URL_WITH_PASSWORD.search(word):
                problems.append(f"{where}: an argument holds a URL with a password")
    for key, value in config_map_data(base).items():
        if is_secret_like(key):
            problems.append(f"ConfigMap: key {key} is secret-like; it belongs in the Secret")
        if URL_WITH_PASSWORD.search(str(value)):
            problems.append(f"ConfigMap: {key} holds a URL with a password")
    for secret in objects_of(base, "Secret"):
        if secret.get("data") or secret.get("stringData"):
            problems.append(f"Secret {secret['metadata']['name']}: values in a manifest; create it with kubectl")
    return problems


def secret_reference_problems(base: Base) -> list[str]:
    """NOTES_DATABASE_URL and METRICS_TOKEN reach the server from a Secret, by secretKeyRef or a *_FILE mount."""
    server = pod_spec(base)["containers"][0]
    env = {item["name"]: item for item in server.get("env", [])}
    mounted = {mount["name"] for mount in server.get("volumeMounts", [])}
    secret_volumes = {volume["name"] for volume in pod_spec(base).get("volumes", []) if "secret" in volume}
    problems = []
    for name in SECRET_ENV_NAMES:
        by_ref = "secretKeyRef" in env.get(name, {}).get("valueFrom", {})
        by_file = f"{name}_FILE" in env and bool(mounted & secret_volumes)
        if not (by_ref or by_file):
            problems.append(
                f"{name}: expected from a Secret (valueFrom.secretKeyRef, or a secret volume + {name}_FILE)"
            )
    return problems


def config_map_problems(base: Base) -> list[str]:
    server = pod_spec(base)["containers"][0]
    referenced = {source["configMapRef"]["name"] for source in server.get("envFrom", []) if "configMapRef" in source}
    shipped = {config_map["metadata"]["name"] for config_map in objects_of(base, "ConfigMap")}
    problems = []
    if not referenced:
        problems.append(f"container {server['name']}: no envFrom configMapRef")
    if referenced - shipped:
        problems.append(f"envFrom names ConfigMaps the base does not ship: {sorted(referenced - shipped)}")
    data = config_map_data(base)
    known = {name.upper() for name in Settings.model_fields}
    for key in data:
        if key not in known and not key.startswith("OTEL_"):
            problems.append(f"ConfigMap: {key} is not a setting of the server (a typo is silently ignored)")
    # The probes and the Service reach the declared port only if the server listens there, on every interface.
    if data.get("HOST", "0.0.0.0") not in ("0.0.0.0", "::"):
        problems.append(f"ConfigMap: HOST is {data['HOST']}; the pod's probes and Service need 0.0.0.0 (or ::)")
    numbers = {port["containerPort"] for port in server.get("ports", [])}
    if "PORT" in data and int(data["PORT"]) not in numbers:
        problems.append(f"ConfigMap: PORT is {data['PORT']}, but the container declares {sorted(numbers)}")
    # The values as the server will read them (no .env; secrets come from the Secret at run time).
    fields = {key.lower(): value for key, value in data.items() if key.lower() in Settings.model_fields}
    try:
        load_settings(_env_file=None, **fields).require_issuer()
    except SettingsError as exc:
        problems.append(f"ConfigMap: the server refuses its values: {exc}")
    return problems


def security_problems(base: Base) -> list[str]:
    spec = pod_spec(base)
    pod = spec.get("securityContext", {})
    problems = []
    if pod.get("fsGroup") != APP_UID:
        problems.append(f"pod securityContext: fsGroup is {pod.get('fsGroup')}, expected {APP_UID}")
    for container in containers(base):
        context = {**pod, **container.get("securityContext", {})}
        where = f"container {container['name']} securityContext"
        expected = {
            "runAsNonRoot": True,
            "runAsUser": APP_UID,
            "runAsGroup": APP_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
        }
        for field, value in expected.items():
            if context.get(field) != value:
                problems.append(f"{where}: {field} is {context.get(field)!r}, expected {value!r}")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}: capabilities.drop should be [ALL]")
        if context.get("capabilities", {}).get("add"):
            problems.append(f"{where}: adds capabilities")
        if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile should be RuntimeDefault")
    return problems


def tmp_problems(base: Base) -> list[str]:
    empty_dirs = {volume["name"] for volume in pod_spec(base).get("volumes", []) if "emptyDir" in volume}
    problems = []
    for container in containers(base):
        mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
        if mounts.get(TMP) not in empty_dirs:
            problems.append(
                f"container {container['name']}: {TMP} is not an emptyDir (the root file system is read-only)"
            )
    return problems


def service_problems(base: Base) -> list[str]:
    service = the(base, "Service")
    server = pod_spec(base)["containers"][0]
    problems = []
    if not pod_labels_match(service["spec"].get("selector", {}), base):
        problems.append("Service: its selector does not select the Deployment's pods")
    for port in service["spec"]["ports"]:
        if port.get("targetPort", port["port"]) not in declared_ports(server):
            problems.append(f"Service: targetPort {port.get('targetPort')!r} is not a declared container port")
    return problems


def route_problems(base: Base) -> list[str]:
    """The example route sends MCP_SERVER_URL's path and its path-suffixed metadata to the Service, nothing broader."""
    url = server_url(base)
    public = urlsplit(url)
    metadata_path = urlsplit(resource_metadata_url(url)).path
    service = the(base, "Service")
    service_ports = {port["port"] for port in service["spec"]["ports"]} | {
        port["name"] for port in service["spec"]["ports"] if "name" in port
    }
    problems = []
    routed: dict[str, str] = {}
    for rule in the(base, "Ingress")["spec"]["rules"]:
        if rule.get("host") != public.hostname:
            problems.append(f"Ingress: host {rule.get('host')!r}, expected MCP_SERVER_URL's {public.hostname!r}")
        for path in rule["http"]["paths"]:
            routed[path["path"]] = path["pathType"]
            backend = path["backend"]["service"]
            port = backend["port"].get("number", backend["port"].get("name"))
            if backend["name"] != service["metadata"]["name"] or port not in service_ports:
                problems.append(f"Ingress: {path['path']} goes to {backend['name']}:{port}, not the Service")
    for wanted in (public.path, metadata_path):
        if routed.get(wanted) != "Exact":
            problems.append(f"Ingress: no Exact rule for {wanted}")
    for internal in ("/healthz", "/readyz", "/metrics"):
        for path, path_type in routed.items():
            if path == internal or (path_type != "Exact" and internal.startswith(path.rstrip("/") + "/")):
                problems.append(f"Ingress: {path} ({path_type}) exposes {internal} outside the cluster")
    return problems


def network_policy_problems(base: Base) -> list[str]:
    policy = the(base, "NetworkPolicy")["spec"]
    server = pod_spec(base)["containers"][0]
    problems = []
    if not pod_labels_match(policy.get("podSelector", {}), base):
        problems.append("NetworkPolicy: its podSelector does not select the Deployment's pods")
    if set(policy.get("policyTypes", [])) != {"Ingress", "Egress"}:
        problems.append("NetworkPolicy: policyTypes should be Ingress and Egress")
    for rule in policy.get("ingress", []):
        ports = {port.get("port") for port in rule.get("ports", [])}
        if not rule.get("from") or not ports or not ports <= declared_ports(server):
            problems.append(f"NetworkPolicy: ingress rule {rule} is not limited to given peers and the app port")
    allowed = {
        (port.get("protocol", "TCP"), port.get("port"))
        for rule in policy.get("egress", [])
        for port in rule.get("ports", [])
    }
    for needed, why in (
        (("UDP", 53), "DNS"),
        (("TCP", 5432), "PostgreSQL"),
        (("TCP", 443), "the IdP's JWKS over HTTPS"),
    ):
        if needed not in allowed:
            problems.append(f"NetworkPolicy: no egress to {needed[1]}/{needed[0]} ({why})")
    if any(not rule.get("ports") for rule in policy.get("egress", [])):
        problems.append("NetworkPolicy: an egress rule without ports allows everything")
    return problems


RULES: dict[str, Callable[[Base], list[str]]] = {
    rule.__name__: rule
    for rule in (
        replica_problems,
        disruption_problems,
        probe_problems,
        resource_problems,
        shutdown_problems,
        literal_secret_problems,
        secret_reference_problems,
        config_map_problems,
        security_problems,
        tmp_problems,
        service_problems,
        route_problems,
        network_policy_problems,
    )
}


# --- schema validation ------------------------------------------------------------------------------------------


def test_the_pinned_kubernetes_version_is_the_newest_in_the_bundle():
    # A newer kubernetes-validate brings newer schemas: move KUBERNETES_VERSION along with it.
    assert KUBERNETES_VERSION.rsplit(".", 1)[0] == latest_version().rsplit(".", 1)[0], (
        f"kubernetes-validate bundles schemas up to {latest_version()}; pin that in KUBERNETES_VERSION"
    )


def strict_schema_problem(obj: Manifest) -> str | None:
    """Why Kubernetes would refuse the object (unknown fields included), in one line; None when it is valid."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except ValidationError as exc:
        where = ".".join(str(part) for part in exc.path) or "(top level)"
        return f"{obj.get('kind')} {where}: {exc.message} (Kubernetes {exc.version}, strict)"
    return None


@pytest.mark.parametrize("name", [path.name for path in manifest_files()])
def test_every_manifest_is_valid_under_strict_schemas(name: str):
    problem = strict_schema_problem(load_manifest(BASE / name))
    assert problem is None, f"{name}: {problem}"


def test_strict_validation_refuses_an_unknown_field():
    # kubectl apply refuses unknown fields; so does this check (a misspelt securityContext key would otherwise pass).
    deployment = copy.deepcopy(the(load_base(), "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_file_of_the_folder():
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    for name in listed:
        assert (BASE / name).is_file(), f"kustomization.yaml lists {name}, which does not exist"
    on_disk = {path.name for path in BASE.glob("*.y*ml")} - {KUSTOMIZATION.name}
    assert set(listed) == on_disk, f"not listed: {sorted(on_disk - set(listed))}"


def generator_problems(config: dict[str, Any]) -> list[str]:
    """kustomize generators are manifests too: no Secret from them, no secret-like literal in a ConfigMap."""
    problems = [
        f"secretGenerator {item.get('name')}: secrets are created with kubectl"
        for item in config.get("secretGenerator", [])
    ]
    for item in config.get("configMapGenerator", []):
        for literal in item.get("literals", []):
            name = literal.partition("=")[0]
            if is_secret_like(name) or URL_WITH_PASSWORD.search(literal):
                problems.append(f"configMapGenerator {item.get('name')}: literal {name} is a secret")
    return problems


def test_the_kustomization_generates_no_secret():
    assert generator_problems(kustomization()) == []
    broken = {
        "secretGenerator": [{"name": "db", "literals": ["url=postgresql://a:b@c/d"]}],
        "configMapGenerator": [{"name": "config", "literals": ["METRICS_TOKEN=0123456789abcdef", "LOG_FORMAT=json"]}],
    }
    assert generator_problems(broken) == [
        "secretGenerator db: secrets are created with kubectl",
        "configMapGenerator config: literal METRICS_TOKEN is a secret",
    ]


def test_the_image_is_the_makefiles_and_settable_with_kustomize():
    built = re.search(r"docker build -t ([^:\s]+):", (ROOT / "Makefile").read_text(encoding="utf-8"))
    assert built, "the Makefile's image target names the image"
    image = pod_spec(load_base())["containers"][0]["image"]
    assert image.split(":")[0] == built.group(1)
    assert image.split(":")[0] in {entry["name"] for entry in kustomization().get("images", [])}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: the files are validated one by one")
def test_the_rendered_base_is_valid_too():
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    objects = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert len(objects) == len(kustomization()["resources"])
    problems = [problem for problem in map(strict_schema_problem, objects) if problem]
    assert problems == [], "\n".join(problems)


# --- the contract -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", sorted(RULES))
def test_the_base_keeps_the_contract(rule: str):
    problems = RULES[rule](load_base())
    assert problems == [], "\n".join(problems)


def test_the_grace_period_counts_the_servers_default_shutdown_grace_unless_configured():
    base = copy.deepcopy(load_base())
    the(base, "ConfigMap")["data"].pop("SHUTDOWN_GRACE_SECONDS", None)
    assert shutdown_grace_seconds(base) == Settings.model_fields["shutdown_grace_seconds"].default
    the(base, "ConfigMap")["data"]["SHUTDOWN_GRACE_SECONDS"] = "12.5"
    assert shutdown_grace_seconds(base) == 12.5


@pytest.mark.parametrize("budget", [{"maxUnavailable": "10%"}, {"minAvailable": "50%"}])
def test_a_percentage_budget_is_rounded_up_as_kubernetes_does(budget: dict[str, str]):
    base = copy.deepcopy(load_base())
    spec = the(base, "PodDisruptionBudget")["spec"]
    spec.pop("maxUnavailable")
    spec.update(budget)
    assert disruption_problems(base) == []  # 2 replicas: 10 % rounds up to 1 eviction, 50 % up to 1 kept


@pytest.mark.parametrize(
    ("name", "secret_like"),
    [
        ("NOTES_DATABASE_URL", True),
        ("METRICS_TOKEN", True),
        ("POSTGRES_PASSWORD", True),
        ("OAUTH_CLIENT_SECRET", True),
        ("SENTRY_DSN", True),
        ("API_KEY", True),
        ("metrics-token", True),
        ("NOTES_DATABASE_URL_FILE", False),
        ("METRICS_TOKEN_FILE", False),
        ("OAUTH_ISSUER", False),
        ("MCP_SERVER_URL", False),
        ("OAUTH_MAX_TOKEN_BYTES", False),
        ("NOTES_DB_POOL_MAX", False),
    ],
)
def test_secret_like_names(name: str, secret_like: bool):
    assert is_secret_like(name) is secret_like


def _server(base: Base) -> dict[str, Any]:
    return pod_spec(base)["containers"][0]


def _set_env(base: Base, name: str, value: str) -> None:
    env = _server(base)["env"]
    env[:] = [item for item in env if item["name"] != name] + [{"name": name, "value": value}]


# Each breaks a copy of the base in one way; the named rule must report it, with text naming what is wrong.
BREAKAGES: list[tuple[str, str, Callable[[Base], None], str]] = [
    ("one replica", "replica_problems", lambda b: the(b, "Deployment")["spec"].update(replicas=1), "replicas is 1"),
    (
        "HPA minimum 1",
        "replica_problems",
        lambda b: the(b, "HorizontalPodAutoscaler")["spec"].update(minReplicas=1),
        "minReplicas is 1",
    ),
    (
        "PDB allows none",
        "disruption_problems",
        lambda b: the(b, "PodDisruptionBudget")["spec"].update(maxUnavailable=0),
        "allows 0 evictions",
    ),
    (
        "PDB minAvailable = replicas",
        "disruption_problems",
        lambda b: (
            the(b, "PodDisruptionBudget")["spec"].pop("maxUnavailable"),
            the(b, "PodDisruptionBudget")["spec"].update(minAvailable="100%"),
        ),
        "allows 0 evictions",
    ),
    (
        "probe on an undeclared port",
        "probe_problems",
        lambda b: _server(b)["readinessProbe"]["httpGet"].update(port=9000),
        "port 9000 is not a declared container port",
    ),
    (
        "liveness on /readyz",
        "probe_problems",
        lambda b: _server(b)["livenessProbe"]["httpGet"].update(path="/readyz"),
        "livenessProbe should GET /healthz",
    ),
    (
        "no cpu request",
        "resource_problems",
        lambda b: _server(b)["resources"]["requests"].pop("cpu"),
        "no resources.requests.cpu",
    ),
    (
        "no memory limit",
        "resource_problems",
        lambda b: _server(b)["resources"].pop("limits"),
        "no resources.limits.memory",
    ),
    (
        "grace too short",
        "shutdown_problems",
        lambda b: pod_spec(b).update(terminationGracePeriodSeconds=35),
        "terminationGracePeriodSeconds is 35",
    ),
    (
        "longer server grace in the ConfigMap",
        "shutdown_problems",
        lambda b: the(b, "ConfigMap")["data"].update(SHUTDOWN_GRACE_SECONDS="60"),
        "SHUTDOWN_GRACE_SECONDS 60 s",
    ),
    (
        "no preStop",
        "shutdown_problems",
        lambda b: _server(b).pop("lifecycle"),
        "no preStop pause",
    ),
    (
        "literal database URL",
        "literal_secret_problems",
        lambda b: _set_env(b, "NOTES_DATABASE_URL", "postgresql://app:hunter2@db:5432/notes"),
        "env NOTES_DATABASE_URL has a literal value",
    ),
    (
        "literal token in args",
        "literal_secret_problems",
        lambda b: _server(b).update(args=["serve", "--metrics-token", "0123456789abcdef"]),
        "argument metrics-token is given a literal value",
    ),
    (
        "NAME=value in args",
        "literal_secret_problems",
        lambda b: _server(b).update(command=["env", "METRICS_TOKEN=0123456789abcdef", "python", "server.py"]),
        "argument METRICS_TOKEN= has a literal value",
    ),
    (
        "secret key in the ConfigMap",
        "literal_secret_problems",
        lambda b: the(b, "ConfigMap")["data"].update(OAUTH_CLIENT_SECRET="s3cret"),
        "key OAUTH_CLIENT_SECRET is secret-like",
    ),
    (
        "password in a ConfigMap URL",
        "literal_secret_problems",
        lambda b: the(b, "ConfigMap")["data"].update(PROXY="http://user:pw@proxy:3128"),
        "PROXY holds a URL with a password",
    ),
    (
        "a Secret with values",
        "literal_secret_problems",
        lambda b: b.update(
            {"secret.yaml": {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}}
        ),
        "values in a manifest",
    ),
    (
        "token from nowhere",
        "secret_reference_problems",
        lambda b: _server(b).update(env=[e for e in _server(b)["env"] if e["name"] != "METRICS_TOKEN"]),
        "METRICS_TOKEN: expected from a Secret",
    ),
    (
        "misspelt setting",
        "config_map_problems",
        lambda b: the(b, "ConfigMap")["data"].update(OAUTH_ISUER="https://idp.example.com/"),
        "OAUTH_ISUER is not a setting",
    ),
    (
        "database URL from a ConfigMap key",
        "literal_secret_problems",
        lambda b: _server(b)["env"][0].update(valueFrom={"configMapKeyRef": {"name": "c", "key": "url"}}),
        "env NOTES_DATABASE_URL is not read from a Secret",
    ),
    (
        "server on loopback only",
        "config_map_problems",
        lambda b: the(b, "ConfigMap")["data"].update(HOST="127.0.0.1"),
        "HOST is 127.0.0.1",
    ),
    (
        "server on another port",
        "config_map_problems",
        lambda b: the(b, "ConfigMap")["data"].update(PORT="9000"),
        "PORT is 9000, but the container declares [8000]",
    ),
    (
        "plain http public URL",
        "config_map_problems",
        lambda b: the(b, "ConfigMap")["data"].update(MCP_SERVER_URL="http://mcp.example.com/mcp"),
        "the server refuses its values: MCP_SERVER_URL: expected https://",
    ),
    (
        "no issuer",
        "config_map_problems",
        lambda b: the(b, "ConfigMap")["data"].pop("OAUTH_ISSUER"),
        "the server refuses its values: OAUTH_ISSUER: missing",
    ),
    (
        "no envFrom",
        "config_map_problems",
        lambda b: _server(b).pop("envFrom"),
        "no envFrom configMapRef",
    ),
    (
        "root user",
        "security_problems",
        lambda b: _server(b)["securityContext"].update(runAsUser=0),
        "runAsUser is 0, expected 10001",
    ),
    (
        "writable root file system",
        "security_problems",
        lambda b: _server(b)["securityContext"].update(readOnlyRootFilesystem=False),
        "readOnlyRootFilesystem is False",
    ),
    (
        "capabilities kept",
        "security_problems",
        lambda b: _server(b)["securityContext"].pop("capabilities"),
        "capabilities.drop should be [ALL]",
    ),
    (
        "no fsGroup",
        "security_problems",
        lambda b: pod_spec(b)["securityContext"].pop("fsGroup"),
        "fsGroup is None, expected 10001",
    ),
    (
        "/tmp not mounted",
        "tmp_problems",
        lambda b: _server(b).pop("volumeMounts"),
        "/tmp is not an emptyDir",
    ),
    (
        "Service misses the pods",
        "service_problems",
        lambda b: the(b, "Service")["spec"].update(selector={"app.kubernetes.io/name": "other"}),
        "does not select",
    ),
    (
        "metadata rule missing",
        "route_problems",
        lambda b: the(b, "Ingress")["spec"]["rules"][0]["http"]["paths"].pop(1),
        "no Exact rule for /.well-known/oauth-protected-resource/mcp",
    ),
    (
        "server URL moved under a prefix",
        "route_problems",
        lambda b: the(b, "ConfigMap")["data"].update(MCP_SERVER_URL="https://mcp.example.com/team-a/mcp"),
        "no Exact rule for /.well-known/oauth-protected-resource/team-a/mcp",
    ),
    (
        "catch-all route",
        "route_problems",
        lambda b: the(b, "Ingress")["spec"]["rules"][0]["http"]["paths"][0].update(path="/", pathType="Prefix"),
        "exposes /metrics",
    ),
    (
        "other host",
        "route_problems",
        lambda b: the(b, "Ingress")["spec"]["rules"][0].update(host="other.example.com"),
        "expected MCP_SERVER_URL's 'mcp.example.com'",
    ),
    (
        "no DNS egress",
        "network_policy_problems",
        lambda b: the(b, "NetworkPolicy")["spec"]["egress"].pop(0),
        "no egress to 53/UDP",
    ),
    (
        "egress open to all",
        "network_policy_problems",
        lambda b: the(b, "NetworkPolicy")["spec"]["egress"].append({}),
        "allows everything",
    ),
]


@pytest.mark.parametrize(
    ("rule", "breakage", "expected"), [(r, f, e) for _, r, f, e in BREAKAGES], ids=[b[0] for b in BREAKAGES]
)
def test_each_rule_reports_a_broken_base(rule: str, breakage: Callable[[Base], None], expected: str):
    base = copy.deepcopy(load_base())
    breakage(base)
    problems = RULES[rule](base)
    assert any(expected in problem for problem in problems), problems

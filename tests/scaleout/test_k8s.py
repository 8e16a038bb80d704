"""deploy/k8s rendered by `kubectl kustomize` (Debian's kubectl), every object validated offline against the
Kubernetes schemas (kubernetes-validate), and checked against the code as the compose test does: commands,
ports, the settings each process reads, probes, roles, and what may reach what."""

from __future__ import annotations

import importlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.foundation.test_compose import PROCESSES, env_names, settings_class

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s"
MANAGED = BASE / "overlays" / "managed"
KUBERNETES_VERSION = "1.30.0"


def render(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (Debian's kubectl package; .ci/run installs it with apt-get)")
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(BASE)


@pytest.fixture(scope="module")
def managed() -> list[dict[str, Any]]:
    return render(MANAGED)


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.mark.parametrize("which", ["base", "managed"])
def test_every_object_is_valid_against_the_kubernetes_schemas(which: str, request: pytest.FixtureRequest) -> None:
    objects = request.getfixturevalue(which)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_no_secret_is_written(base: list[dict[str, Any]], managed: list[dict[str, Any]]) -> None:
    assert not of_kind(base, "Secret") and not of_kind(managed, "Secret")
    for obj in (*base, *managed):
        for container in containers(obj):
            for env in container.get("env", []):
                if any(word in env["name"] for word in ("PASSWORD", "SECRET", "TOKEN", "KEY")) or env["name"] in (
                    "DATABASE_URL",
                    "DATABASE_DIRECT_URL",
                ):
                    assert "secretKeyRef" in env.get("valueFrom", {}), f"{obj['metadata']['name']}: {env['name']}"


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] not in ("Deployment", "Job"):
        return []
    spec = obj["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize("name", PROCESSES)
@pytest.mark.parametrize("role", ["api", "worker"])
def test_each_deployment_matches_its_code(base: list[dict[str, Any]], name: str, role: str) -> None:
    deployments = of_kind(base, "Deployment")
    deployment = deployments[name if role == "api" else f"{name}-worker"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == role
    (container,) = pod["spec"]["containers"]
    port = PROCESSES[name]
    assert container["command"] == ["python", "-m", name, "serve", "--host", "0.0.0.0"]
    assert importlib.util.find_spec(f"{name}.__main__") is not None
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    assert container["image"] == f"reciprocity/{name}:latest"
    assert (
        f"EXPOSE {port}" in (ROOT / ("gateway" if name == "gateway" else f"services/{name}") / "Dockerfile").read_text()
    )

    env = {e["name"]: e for e in container["env"]}
    reads, required = env_names(settings_class(name))
    assert not set(env) - reads, f"{name} is given settings it never reads: {set(env) - reads}"
    assert not required - set(env), f"{name} cannot start without {required - set(env)}"
    assert env["PROCESS_ROLE"]["value"] == role
    assert env[f"{name.upper()}_PORT"]["value"] == str(port)
    assert env["MIGRATE_ON_START"]["value"] == "false", "the migration job migrates"
    assert ("REDIS_URL" in env) == (name in ("gateway", "coupon"))

    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]

    (wait,) = pod["spec"]["initContainers"]
    assert wait["command"][:4] == ["python", "-m", name, "wait-migrated"]
    assert wait["image"] == container["image"]


def test_the_migration_job_migrates_every_process_directly(base: list[dict[str, Any]]) -> None:
    job = of_kind(base, "Job")["reciprocity-migrate"]
    steps = containers(job)
    assert [c["command"] for c in steps] == [["python", "-m", n, "migrate"] for n in PROCESSES]
    for step in steps:
        env = {e["name"]: e for e in step["env"]}
        assert env["DATABASE_DIRECT_URL"]["valueFrom"]["secretKeyRef"]["optional"] is True
        _, required = env_names(settings_class(step["command"][2]))
        assert not required - set(env)


def test_services_autoscalers_and_budgets_point_at_the_api_pods(base: list[dict[str, Any]]) -> None:
    deployments = of_kind(base, "Deployment")
    services = of_kind(base, "Service")
    for name, port in PROCESSES.items():
        pods = deployments[name]["spec"]["template"]["metadata"]["labels"]
        service = services[name]
        assert service["spec"]["selector"].items() <= pods.items()
        assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]
        assert of_kind(base, "PodDisruptionBudget")[name]["spec"]["selector"]["matchLabels"].items() <= pods.items()
        assert of_kind(base, "HorizontalPodAutoscaler")[name]["spec"]["scaleTargetRef"]["name"] == name
    # the services the gateway and workers are pointed at exist, on the ports the code serves
    gateway_env = {
        e["name"]: e.get("value") for e in deployments["gateway"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    for name, port in PROCESSES.items():
        if name != "gateway":
            assert gateway_env[f"{name.upper()}_URL"] == f"http://{name}:{port}"
    assert not {n for n in of_kind(base, "HorizontalPodAutoscaler") if n.endswith("-worker")}


def test_from_outside_only_the_gateway_is_reachable(base: list[dict[str, Any]]) -> None:
    policies = of_kind(base, "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and not deny.get("ingress")
    open_to_anyone = [p for p in policies.values() for rule in p["spec"].get("ingress", []) if not rule.get("from")]
    assert [p["metadata"]["name"] for p in open_to_anyone] == ["gateway-from-anywhere"]
    assert open_to_anyone[0]["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "gateway"


def test_the_managed_overlay_uses_its_own_redis_and_registry(managed: list[dict[str, Any]]) -> None:
    assert "redis" not in of_kind(managed, "Deployment")
    settings = of_kind(managed, "ConfigMap")["reciprocity-settings"]["data"]
    assert settings["redis-url"].startswith("rediss://")
    images = {c["image"] for o in managed for c in containers(o)}
    assert images and all(i.startswith("registry.example.com/reciprocity/") for i in images)
    assert {o["metadata"].get("namespace") for o in managed} == {"reciprocity"}


def test_the_rendered_base_is_what_deploy_k8s_documents() -> None:
    text = (BASE / "base" / "settings.yaml").read_text()
    for secret in ("reciprocity-secrets", "reciprocity-database", "reciprocity-smtp"):
        assert secret in text
    assert yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"] == ["base"]


def test_the_recommender_trains_in_its_worker_with_the_memory_for_it(base: list[dict[str, Any]]) -> None:
    deployments = of_kind(base, "Deployment")
    (api,) = deployments["recommend"]["spec"]["template"]["spec"]["containers"]
    (worker,) = deployments["recommend-worker"]["spec"]["template"]["spec"]["containers"]
    # the same settings (training, polling, the direct database URL its LISTEN and training reads use) but the role
    same = {e["name"]: e for e in api["env"] if e["name"] != "PROCESS_ROLE"}
    assert same == {e["name"]: e for e in worker["env"] if e["name"] != "PROCESS_ROLE"}
    assert "DATABASE_DIRECT_URL" in same
    # training reads the whole history: the worker gets at least the api's memory
    for kind in ("requests", "limits"):
        assert memory(worker["resources"][kind]["memory"]) >= memory(api["resources"][kind]["memory"])


def memory(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)

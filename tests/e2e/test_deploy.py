"""The container image and the Kubernetes manifests, checked without a registry or a cluster:
hadolint on the Dockerfile; the image runs the launcher with the options of ``tasks.py serve``,
and its exact command line (read from the Dockerfile) serves, passes its own HEALTHCHECK,
enforces the connection limits and drains on SIGTERM as a real process; every manifest
validates (offline, strict) against a pinned Kubernetes version and keeps the server's shutdown
and probe contract.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml
from multiworker import CONTAINER_COMMAND, DOCKERFILE, WorkerServer, image_env, json_lines

from serving import serve
from serving.settings import Settings
from serving.stages import FINAL_STAGE

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.34.0"  # the schemas kubernetes-validate ships for it; no network


def tool(name: str) -> str:
    """A command-line tool installed in this environment (next to its python)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    assert found, f"{name} is missing: pip install -r requirements.txt"
    return found


def test_hadolint_passes():
    result = subprocess.run(
        [tool("hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_the_launcher_as_tasks_serve_does_as_a_non_root_user(monkeypatch):
    import tasks

    # The launcher, with the options `python3 tasks.py serve` gives it (the protocol class and
    # its limits are the launcher's defaults), on every address of the container.
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    served = [str(a) for a in tasks.server_argv(FINAL_STAGE, "0.0.0.0", 8000, [])]
    assert CONTAINER_COMMAND[:3] == ["python", *served[1:3]] == ["python", "-m", "serving.serve"]
    assert serve.parse_args(CONTAINER_COMMAND[3:]) == serve.parse_args(served[3:])
    assert serve.parse_args(CONTAINER_COMMAND[3:]).http == serve.PROTOCOL
    assert re.search(r"^WORKDIR /app$", DOCKERFILE, re.MULTILINE)  # --app-dir . is /app
    assert int(image_env()["WEB_CONCURRENCY"]) > 1  # read by the launcher
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


def healthcheck_command(port: int) -> list[str]:
    """The Dockerfile's HEALTHCHECK command, with this interpreter and ``port``."""
    [line] = re.findall(r"^HEALTHCHECK .*\\\n\s+CMD (\[.*\])$", DOCKERFILE, re.MULTILINE)
    command = json.loads(line.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_image_command_serves_with_the_launchers_limits_and_drains_as_pid_1(
    tmp_path, small_model_dir
):
    # The Dockerfile's own command line and environment (WEB_CONCURRENCY=2), as a real process
    # on 127.0.0.1; only the paths and the port are local.
    workers = int(image_env()["WEB_CONCURRENCY"])
    server = WorkerServer(tmp_path, workers=workers, env={"MODEL_DIR": small_model_dir})
    try:
        server.start()
        assert len(server.worker_pids()) == workers > 1
        health = subprocess.run(healthcheck_command(server.port), timeout=30, check=False)
        assert health.returncode == 0

        # A connection-level limit of the protocol class (plain uvicorn reads any head size).
        big = {"x-big": "a" * (Settings().max_header_bytes + 1)}
        assert httpx.get(server.url + "/health", headers=big, timeout=10).status_code == 431
        assert httpx.post(server.url + "/predict", json={"text": "good"}).status_code == 200

        server.proc.send_signal(signal.SIGTERM)  # what `docker stop` sends to PID 1
        assert server.proc.wait(timeout=60) == 0, server.output()
    finally:
        server.stop()
    for events in map(json_lines, server.log_files().values()):
        [shutdown] = [e for e in events if e["event"] == "shutdown"]
        assert shutdown["drain_complete"] is True
    assert not server.metrics_dir.exists()  # the launcher created it: removed at exit


def manifests() -> list[Path]:
    return [
        *sorted(K8S.glob("*.yaml")),
        *(p for d in ("optional", "canary") for p in sorted((K8S / d).glob("*.yaml"))),
    ]


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


def test_the_canary_is_the_stable_deployment_on_the_candidate_behind_the_same_service():
    stable = yaml.safe_load((K8S / "deployment.yaml").read_text())
    canary = yaml.safe_load((K8S / "canary" / "deployment.yaml").read_text())
    service = yaml.safe_load((K8S / "service.yaml").read_text())
    labels = canary["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()  # the Service sends it traffic
    assert canary["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert labels["track"] == "canary" and canary["metadata"]["name"] != stable["metadata"]["name"]
    assert canary["spec"]["replicas"] < stable["spec"]["replicas"]  # a minority of the pods
    [c], [s] = (
        canary["spec"]["template"]["spec"]["containers"],
        stable["spec"]["template"]["spec"]["containers"],
    )
    env = {e["name"]: e["value"] for e in c["env"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert env["INFERENCE_MODEL_DIR"].startswith(mounts["models"]["mountPath"] + "/")
    assert mounts["models"]["readOnly"] is True
    # Everything else is the stable pod's: image, probes, shutdown budget, resources.
    for key in (
        "image",
        "readinessProbe",
        "livenessProbe",
        "startupProbe",
        "lifecycle",
        "resources",
    ):
        assert c[key] == s[key], key
    assert {k: v for k, v in env.items() if k != "INFERENCE_MODEL_DIR"} == {
        e["name"]: e["value"] for e in s["env"]
    }
    pod, stable_pod = canary["spec"]["template"]["spec"], stable["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == stable_pod["terminationGracePeriodSeconds"]


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

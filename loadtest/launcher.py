"""Real server processes for the benchmark, the notebooks and the end-to-end tests.

:class:`StageServer` starts one stage (or any ASGI app of the repository) as a ``uvicorn``
process on 127.0.0.1 and a free port, waits until it is ready, and stops it by PID::

    from loadtest.launcher import StageServer, free_port
    with StageServer("naive", env={"INFERENCE_MODEL_DIR": "models/x"}) as server:
        print(server.post("/predict", {"text": "A gem."}).json())

The stage names, and where each stage's code lives, come from :mod:`serving.stages`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from serving.stages import STAGES

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU, CLIENT_CPU = 0, 1  # the server under test and the load generator, one core each


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin_prefix(cpu: int) -> list[str]:
    """``taskset -c cpu`` when taskset exists and the CPU is available, else nothing."""
    taskset = shutil.which("taskset")
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    return [taskset, "-c", str(cpu)] if taskset and cpu in cpus and len(cpus) > 1 else []


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> int | None:
    """SIGTERM ``proc`` by PID (graceful shutdown), SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def trim_log(path: Path, head: int = 40, tail: int = 40) -> None:
    """Keep the start-up and shutdown lines of a server log (per-request lines are many)."""
    if not path.is_file():
        return
    lines = path.read_text(errors="replace").splitlines()
    if len(lines) > head + tail:
        skipped = f"... {len(lines) - head - tail} lines skipped ..."
        lines = [*lines[:head], skipped, *lines[-tail:]]
    path.write_text("\n".join(lines) + "\n")


COURSE_LAUNCHER = ("-m", "serving.serve")  # what `python3 tasks.py serve` runs
# The final stage as the layers benchmark serves it (from the repository root): the only app
# that reads INFERENCE_BENCH_OFF (loadtest/bench_app.py).
BENCH_APP = "loadtest.bench_app:app"


class StageServer:
    """One stage as a real server process on 127.0.0.1, stopped by PID.

    Use as a context manager, or call :meth:`start` and :meth:`stop` (a notebook's way). ``env``
    adds environment variables (``INFERENCE_MODEL_DIR``, ``INFERENCE_MAX_BATCH_WAIT_MS`` ...). The
    server's output (stdout and stderr) goes to ``log_path`` (a temporary file by default), and its
    JSON log file (``INFERENCE_LOG_PATH``, :attr:`request_log`) next to it, ``<log_path
    stem>.requests.log``, unless ``env`` names one: a benchmark or a notebook never writes into the
    student's ``logs/requests.log``. ``app_dir`` and ``app`` serve something else under the name
    ``stage`` (a modified copy of a stage, the benchmark's reference app); ``label`` names it in
    results (default: ``stage``); ``launcher`` is how Python runs the server: by default the
    course's launcher ``-m serving.serve``, as ``python3 tasks.py serve`` runs every stage (uvicorn
    with the hardened HTTP protocol, exit 0 after a complete drain); ``("-m", "uvicorn")`` runs
    plain uvicorn, and ``loadtest.profile`` puts pyinstrument in front. ``cpu=None`` leaves the
    process unpinned (tests).
    """

    def __init__(
        self,
        stage: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        cpu: int | None = SERVER_CPU,
        ready_timeout: float = 120.0,
        app_dir: str | Path | None = None,
        launcher: Sequence[str] = COURSE_LAUNCHER,
        app: str | None = None,
        label: str | None = None,
    ):
        known = STAGES.get(stage)
        if known is None and app_dir is None:
            raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
        self.stage = stage
        self.label = label or stage
        self.app_dir = ROOT / (app_dir or known.app_dir)
        self.app = app or (known.app if known else "inference_server:app")
        self.env = dict(env or {})
        self.launcher = list(launcher)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path) if log_path else None
        self.cpu = cpu
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.request_log: Path | None = None
        self.paths: set[str] = set()
        self._log = None

    @property
    def pid(self) -> int | None:
        """The uvicorn process id (taskset execs, so it is the server itself)."""
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        """The command line that runs the server."""
        pin = pin_prefix(self.cpu) if self.cpu is not None else []
        cmd = [*pin, sys.executable, *self.launcher, "--app-dir", str(self.app_dir), self.app]
        return [*cmd, "--host", "127.0.0.1", "--port", str(self.port)]

    def spawn(self) -> StageServer:
        """Start the process without waiting for it (a test of a failing start-up)."""
        module_file = self.app_dir / (self.app.split(":")[0].replace(".", "/") + ".py")
        if not module_file.is_file():
            raise FileNotFoundError(f"{self.label}: {module_file} missing")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"server-{self.label}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = os.environ | {"PYTHONUNBUFFERED": "1"} | self.server_env()
        self.proc = subprocess.Popen(
            self.command(), cwd=ROOT, env=env, stdout=self._log, stderr=self._log
        )
        return self

    def server_env(self) -> dict[str, str]:
        """``env``, with ``INFERENCE_LOG_PATH`` beside ``log_path`` unless ``env`` names one
        (sets :attr:`request_log`). Not inherited from the caller's environment: a student's
        ``INFERENCE_LOG_PATH`` is for their own server."""
        if self.log_path is None:
            raise RuntimeError("log_path is not known yet: spawn() chooses it")
        default = self.log_path.with_suffix(".requests.log")
        self.request_log = Path(self.env.get("INFERENCE_LOG_PATH") or default)
        return self.env | {"INFERENCE_LOG_PATH": str(self.request_log)}

    def start(self) -> StageServer:
        """Start uvicorn and wait until the stage is ready; raise with its log if it is not."""
        self.spawn()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Poll until the app answers, then its readiness route, then one real prediction."""
        deadline = time.monotonic() + self.ready_timeout
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while True:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    raise RuntimeError(f"{self.label} server exited ({code}):\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.label} server not ready:\n{self.log_tail()}")
                try:
                    if self._answers(client):
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)

    def _answers(self, client: httpx.Client) -> bool:
        resp = client.get("/openapi.json")
        if resp.status_code == 200:
            self.paths = set(resp.json().get("paths", {}))
            check = "/ready" if "/ready" in self.paths else "/health"
            if check not in self.paths or client.get(check).status_code == 200:
                resp = client.post("/predict", json={"text": "A warm, funny film."})
                return resp.status_code == 200
            return False
        # OpenAPI switched off: a prediction tells whether it is up.
        ok = resp.status_code == 404 and client.post("/predict", json={"text": "Fine."}).is_success
        if ok:
            self.paths = {"/predict"}
        return ok

    @property
    def has_batch_route(self) -> bool:
        """Whether the stage serves ``POST /predict/batch``."""
        return "/predict/batch" in self.paths

    @property
    def has_metrics(self) -> bool:
        """Whether the stage serves ``GET /metrics``."""
        return "/metrics" in self.paths

    def post(self, path: str, body: object, **kw) -> httpx.Response:
        """One request to the server (for demonstrations; the load comes from locust)."""
        return httpx.post(self.url + path, json=body, timeout=kw.pop("timeout", 10.0), **kw)

    def get(self, path: str, **kw) -> httpx.Response:
        """``GET path`` on the server."""
        return httpx.get(self.url + path, timeout=kw.pop("timeout", 10.0), **kw)

    def scrape(self) -> str | None:
        """The ``/metrics`` text, or None where the stage has none."""
        if not self.has_metrics:
            return None
        resp = self.get("/metrics")
        return resp.text if resp.status_code == 200 else None

    def log_text(self) -> str:
        """Everything the server printed so far."""
        if self._log:
            self._log.flush()
        if not self.log_path or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server printed."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM by PID and wait (SIGKILL after ``timeout`` s); idempotent. The exit code."""
        code = None
        if self.proc is not None:
            code = stop_process(self.proc, timeout)
        if self._log:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> StageServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

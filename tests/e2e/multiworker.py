"""Start the final stage with several worker processes, as the container does, for the e2e tests.

The command is the image's, read from the Dockerfile (ENTRYPOINT + CMD), with this interpreter,
a local host and a free port; the number of workers comes from ``WEB_CONCURRENCY``, as in the
image. Everything is bounded: waits have deadlines, and :meth:`WorkerServer.stop` kills the
parent and every worker by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from loadgen import predict_outcome
from prometheus_client.parser import text_string_to_metric_families

from loadtest.launcher import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instruction(name: str) -> list[str]:
    """The exec-form (JSON) arguments of the Dockerfile's last ``name`` instruction."""
    [*_, line] = re.findall(rf"^{name} (\[.*\])$", DOCKERFILE, re.MULTILINE)
    return json.loads(line)


def image_env() -> dict[str, str]:
    """Every ``ENV`` of the Dockerfile (``KEY=value`` pairs, continuation lines joined)."""
    env: dict[str, str] = {}
    joined = DOCKERFILE.replace("\\\n", " ")
    for line in re.findall(r"^ENV (.+)$", joined, re.MULTILINE):
        env |= dict(pair.split("=", 1) for pair in shlex.split(line))
    return env


# The image's command, exactly as the Dockerfile says (ENTRYPOINT + CMD).
CONTAINER_COMMAND = instruction("ENTRYPOINT") + instruction("CMD")


def local_command(port: int) -> list[str]:
    """The container's command with this interpreter, 127.0.0.1 and ``port``."""
    assert CONTAINER_COMMAND[0] == "python"
    command = [sys.executable, *CONTAINER_COMMAND[1:]]
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    return command


def json_lines(path: Path) -> list[dict]:
    """Every line of a JSON-lines file, parsed (fails on a torn or interleaved line)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class WorkerServer:
    """The image's command (``python -m serving.serve``) with N workers.

    The image's environment too, with its paths moved under ``tmp_path``; ``metrics_dir=False``
    leaves ``PROMETHEUS_MULTIPROC_DIR`` unset (the launcher makes a temporary directory, under
    ``tmp_path / "tmp"``).
    """

    def __init__(
        self,
        tmp_path: Path,
        workers: int,
        env: dict[str, object],
        metrics_dir: bool = True,
        args: tuple[str, ...] = (),
    ) -> None:
        self.tmp_path = tmp_path
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = tmp_path / "logs"
        self.metrics_dir = tmp_path / "metrics"
        self.temp_dir = tmp_path / "tmp"
        self.temp_dir.mkdir(exist_ok=True)
        self.env = (
            {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            | image_env()
            | {f"INFERENCE_{k}": str(v) for k, v in env.items()}
            | {
                "INFERENCE_LOG_PATH": str(self.log_dir / "requests.log"),
                "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
                "WEB_CONCURRENCY": str(workers),
                "TMPDIR": str(self.temp_dir),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.getenv("PYTHONPATH")])),
            }
        )
        if not metrics_dir:
            del self.env["PROMETHEUS_MULTIPROC_DIR"]
        self.args = args  # more options for the command (``--app-dir`` of another stage)
        self.proc: subprocess.Popen | None = None
        self.seen: dict[int, psutil.Process] = {}  # every worker seen, to kill in stop()

    def start(self, timeout: float = 90) -> WorkerServer:
        """Start the server; return once every worker has loaded the model."""
        out = open(self.tmp_path / "server.out", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [*local_command(self.port), *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        self.wait_for(lambda: len(self.loaded_workers()) >= self.workers, timeout, "workers load")
        self.wait_for(self.ready, timeout, "/ready")
        return self

    def output(self) -> str:
        """What the parent and the workers printed (uvicorn's own log lines, tracebacks)."""
        return (self.tmp_path / "server.out").read_text(errors="replace")[-4000:]

    def wait_for(self, condition, timeout: float, what: str) -> None:
        """Poll ``condition`` every 0.1 s; fail with the server's output after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"server exited ({self.proc.returncode}):\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.output()}")
            time.sleep(0.1)

    def ready(self) -> bool:
        """Whether /ready answers 200."""
        try:
            return httpx.get(self.url + "/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def log_files(self) -> dict[int, Path]:
        """pid -> that worker's log file (``requests.<pid>.log``)."""
        files = {}
        for path in self.log_dir.glob("requests.*.log"):
            pid = path.name.split(".")[1]
            if pid.isdigit():
                files[int(pid)] = path
        return files

    def events(self, pid: int) -> list[dict]:
        """The JSON lines worker ``pid`` logged so far."""
        path = self.log_files().get(pid)
        return json_lines(path) if path else []

    def loaded_workers(self) -> set[int]:
        """Workers that are running and have logged ``model_loaded``."""
        running = set(self.worker_pids())
        return {
            pid
            for pid in self.log_files()
            if pid in running and any(e["event"] == "model_loaded" for e in self.events(pid))
        }

    def worker_pids(self) -> list[int]:
        """The parent's child processes that are running workers."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            return []
        pids = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                # Workers, not multiprocessing's resource tracker; a zombie has exited.
                if "spawn_main" in " ".join(child.cmdline()):
                    pids.append(child.pid)
                    self.seen.setdefault(child.pid, child)
        return pids

    def scrape(self) -> dict[tuple[str, tuple], float]:
        """One GET /metrics: (sample name, sorted labels) -> value."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def predictions_counted(self, sample: dict | None = None) -> float:
        """``http_requests_total`` of ``POST /predict`` (any status), summed over workers."""
        sample = self.scrape() if sample is None else sample
        return sum(
            value
            for (name, labels), value in sample.items()
            if name == "http_requests_total" and ("route", "/predict") in labels
        )

    def stop(self) -> None:
        """Kill the parent and every worker it had, by PID, if still running."""
        self.worker_pids()
        if self.proc is not None:
            stop_process(self.proc, timeout=20)  # SIGTERM, SIGKILL after 20 s
        for child in self.seen.values():
            # is_running() also compares the start time: a reused pid is never killed.
            with contextlib.suppress(psutil.Error):
                if child.is_running():
                    child.kill()


def send_predictions(url: str, count: int, clients: int = 4) -> list[object]:
    """``count`` POST /predict from ``clients`` threads, a new connection each (so the kernel
    spreads them over the workers); returns every status code or transport error name."""
    import threading

    results: list[object] = []
    lock = threading.Lock()
    todo = iter(range(count))

    def client() -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=url, timeout=10, limits=limits) as http:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                result = predict_outcome(http, f"review {i}: good")
                with lock:
                    results.append(result)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results

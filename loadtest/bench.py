"""Benchmark runner: every stage under the same locust load, results in one tidy table.

``python -m loadtest.bench`` (``make bench``) runs, for each chosen stage, a real uvicorn
server (one worker, pinned to CPU 0 with ``taskset`` where available) and headless locust
(pinned to CPU 1) for a ladder of user counts, then plots. A full run takes about 13 minutes;
``--quick`` takes about a minute per stage. Examples::

    python -m loadtest.bench                                  # everything, the README's run
    python -m loadtest.bench --quick --stages naive batched --profiles short
    python -m loadtest.bench --users 1 16 64 --duration 5 --no-sweep

Each run writes ``benchmarks/results/<run-id>/``:

- ``summary.csv``: one row per step: stage, profile, kind (``ladder``, ``mixed``,
  ``half_load``, ``wait_sweep``), users, requests, failures, rps, texts/s, exact latency
  percentiles (ms), server CPU (% of one core), server RSS (MB), load-generator CPU, mean batch
  size (from ``/metrics`` where the stage has it);
- ``ceiling.csv`` (the model alone, in-process), ``batch_sizes.csv`` (the batched stage's
  batch-size histogram per step), ``targets.csv`` (the course's performance targets, met or
  not), ``report.md``, ``machine.json``;
- ``raw/``: locust's own CSV files, exact latencies and ``/metrics`` scrapes, per step.

The building blocks are importable, so a notebook can drive one stage in a few lines::

    from loadtest import bench, plots
    with bench.StageServer("naive") as server:          # starts uvicorn, waits until ready
        print(server.post("/predict", {"text": "A gem."}))
        df = bench.run_ladder(server, "short", users=[1, 8, 32], duration=3)
    plots.throughput_vs_users(df)

Load kinds. ``ladder``: closed loop (each user sends its next request when the previous one is
answered), ``/predict`` only, the same for every stage: it finds each stage's maximum
throughput. ``mixed``: the same with a 10 % share of ``/predict/batch`` (stages that have it).
``half_load``: an offered load of half the naive stage's maximum: a fixed number of users, each
paced to ``rate = offered / users`` requests per second (see the locustfile), so every stage
faces the same arrival rate rather than the same number of callers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import httpx
import pandas as pd
import psutil
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
RESULTS_ROOT = ROOT / "benchmarks" / "results"
PLOTS_DIR = ROOT / "benchmarks" / "plots"
PROFILES = ("short", "long")
SERVER_CPU, CLIENT_CPU = 0, 1

# stage -> directory uvicorn imports ``inference_server:app`` from (as in tasks.py)
STAGES: dict[str, str] = {
    "naive": "lessons/01_naive",
    "validated": "lessons/02_validated",
    "metrics": "lessons/03_metrics",
    "batched": ".",
}
FINAL_STAGE, BASELINE_STAGE = "batched", "naive"


@dataclass
class BenchConfig:
    """Everything a run depends on (written to machine.json)."""

    stages: list[str] = field(default_factory=lambda: list(STAGES))
    profiles: list[str] = field(default_factory=lambda: list(PROFILES))
    users: list[int] = field(default_factory=lambda: [1, 4, 16, 64, 256])
    duration: float = 8.0
    mixed_users: int | None = 64  # None: no mixed step
    batch_share: float = 0.1  # share of /predict/batch in the mixed step
    half_load_users: int | None = 32  # None: no half-load step
    sweep_ms: list[float] = field(default_factory=lambda: [0, 1, 2, 5, 10])
    sweep_users: list[int] = field(default_factory=lambda: [4, 64])  # few callers, many
    sweep_profiles: list[str] = field(default_factory=lambda: list(PROFILES))
    ceiling_seconds: float = 2.0  # 0: skip the ceiling
    model_dir: str | None = None
    quick: bool = False
    plots_dir: str | None = None
    out_root: str | None = None  # results root (default benchmarks/results)

    @classmethod
    def quick_config(cls, **overrides) -> BenchConfig:
        """A few seconds per step, three steps: for CI and notebooks."""
        base = dict(
            users=[1, 8, 32],
            duration=3.0,
            mixed_users=32,
            half_load_users=16,
            sweep_ms=[0, 5],
            sweep_users=[32],
            sweep_profiles=["short"],
            ceiling_seconds=0.5,
            quick=True,
        )
        return cls(**(base | overrides))


# --------------------------------------------------------------------------------------------
# helpers


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


def final_stage_settings() -> dict[str, object]:
    """The final stage's defaults (``serving/settings.py``), or {} before it exists."""
    try:
        from serving import settings as settings_module
    except ImportError:
        return {}
    for obj in vars(settings_module).values():
        fields = getattr(obj, "model_fields", None)
        if isinstance(fields, dict) and "max_batch_wait_ms" in fields:
            return {name: f.default for name, f in fields.items()}
    return {}


def configured_batch_size() -> int:
    """``INFERENCE_MAX_BATCH_SIZE`` if set, else the final stage's default (32)."""
    env = os.environ.get("INFERENCE_MAX_BATCH_SIZE")
    return int(env) if env else int(final_stage_settings().get("max_batch_size") or 32)


def configured_wait_ms() -> float | None:
    """``INFERENCE_MAX_BATCH_WAIT_MS`` if set, else the final stage's default (None if unknown)."""
    env = os.environ.get("INFERENCE_MAX_BATCH_WAIT_MS")
    value = env if env else final_stage_settings().get("max_batch_wait_ms")
    return None if value is None else float(value)


def ensure_payload_file(run_dir: Path) -> Path:
    """``run_dir/payloads.json`` (the test split's texts per profile), written if missing."""
    from loadtest.payloads import write_payload_file

    path = Path(run_dir) / "payloads.json"
    return path if path.is_file() else write_payload_file(path)


# --------------------------------------------------------------------------------------------
# the server under test


class StageServer:
    """One stage as a real uvicorn process on 127.0.0.1, stopped by PID.

    Use as a context manager, or call :meth:`start` and :meth:`stop` (a notebook's way).
    ``env`` adds environment variables (``INFERENCE_MODEL_DIR``, ``INFERENCE_MAX_BATCH_WAIT_MS``
    ...). The server's output goes to ``log_path`` (a temporary file by default). ``app_dir``
    serves a modified copy of the stage (an experiment) under the stage's name; ``launcher``
    replaces ``-m uvicorn`` (``loadtest.profile`` puts pyinstrument in front of it).
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
        launcher: Sequence[str] = ("-m", "uvicorn"),
    ):
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
        self.stage = stage
        self.app_dir = ROOT / (app_dir or STAGES[stage])  # app_dir: a variant, for experiments
        self.env = dict(env or {})
        self.launcher = list(launcher)  # what runs uvicorn: e.g. a profiler in front of it
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path) if log_path else None
        self.cpu = cpu
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.paths: set[str] = set()
        self._log = None

    @property
    def pid(self) -> int | None:
        """The uvicorn process id (taskset execs, so it is the server itself)."""
        return self.proc.pid if self.proc else None

    def start(self) -> StageServer:
        """Start uvicorn and wait until the stage is ready; raise with its log if it is not."""
        app_dir = self.app_dir
        if not (app_dir / "inference_server.py").is_file():
            raise FileNotFoundError(f"stage {self.stage!r}: {app_dir}/inference_server.py missing")
        pin = pin_prefix(self.cpu) if self.cpu is not None else []
        cmd = [*pin, sys.executable, *self.launcher, "--app-dir", str(app_dir)]
        cmd += ["inference_server:app", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"server-{self.stage}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = os.environ | {"PYTHONUNBUFFERED": "1"} | self.env
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log, stderr=self._log)
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
                    raise RuntimeError(f"{self.stage} server exited ({code}):\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.stage} server not ready:\n{self.log_tail()}")
                try:
                    resp = client.get("/openapi.json")
                    if resp.status_code == 200:
                        self.paths = set(resp.json().get("paths", {}))
                        check = "/ready" if "/ready" in self.paths else "/health"
                        if check not in self.paths or client.get(check).status_code == 200:
                            resp = client.post("/predict", json={"text": "A warm, funny film."})
                            if resp.status_code == 200:
                                return
                    elif (  # OpenAPI switched off: a prediction tells whether it is up
                        resp.status_code == 404
                        and client.post("/predict", json={"text": "Fine."}).status_code == 200
                    ):
                        self.paths = {"/predict"}
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.2)

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

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server printed."""
        if self._log:
            self._log.flush()
        if not self.log_path or not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        """SIGTERM by PID and wait (SIGKILL if it does not exit); idempotent."""
        code = None
        if self.proc is not None:
            code = stop_process(self.proc)
        if self._log:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> StageServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def trim_log(path: Path, head: int = 40, tail: int = 40) -> None:
    """Keep the start-up and shutdown lines of a server log (per-request lines are many)."""
    if not path.is_file():
        return
    lines = path.read_text(errors="replace").splitlines()
    if len(lines) > head + tail:
        skipped = f"... {len(lines) - head - tail} lines skipped ..."
        lines = [*lines[:head], skipped, *lines[-tail:]]
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# /metrics


def histogram_buckets(text: str | None, name: str = "inference_batch_size") -> dict[float, float]:
    """Cumulative bucket counts ``{le: count}`` of a Prometheus histogram (summed over labels)."""
    buckets: dict[float, float] = {}
    if not text:
        return buckets
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def histogram_delta(before: str | None, after: str | None, name: str = "inference_batch_size"):
    """Per-bucket (not cumulative) counts observed between two scrapes: ``[(le, count)]``."""
    b0, b1 = histogram_buckets(before, name), histogram_buckets(after, name)
    rows, previous = [], 0.0
    for le in sorted(b1):
        cumulative = b1[le] - b0.get(le, 0.0)
        rows.append((le, cumulative - previous))
        previous = cumulative
    return rows


def histogram_mean(before: str | None, after: str | None, name: str = "inference_batch_size"):
    """Exact mean of the observations between two scrapes (from ``_sum`` and ``_count``)."""

    def totals(text: str | None) -> tuple[float, float]:
        total = count = 0.0
        for family in text_string_to_metric_families(text or ""):
            if family.name == name:
                for sample in family.samples:
                    if sample.name == f"{name}_sum":
                        total += sample.value
                    elif sample.name == f"{name}_count":
                        count += sample.value
        return total, count

    (s0, c0), (s1, c1) = totals(before), totals(after)
    return (s1 - s0) / (c1 - c0) if c1 > c0 else float("nan")


def mean_from_buckets(rows: Sequence[tuple[float, float]]) -> float:
    """Approximate mean of a histogram from per-bucket counts (each at its upper bound)."""
    finite = [(le, n) for le, n in rows if math.isfinite(le)]
    total = sum(n for _, n in finite)
    return sum(le * n for le, n in finite) / total if total else float("nan")


# --------------------------------------------------------------------------------------------
# one locust step


class _Sampler(threading.Thread):
    """Samples server CPU time (whole process and its main thread, where the event loop runs)
    and RSS, and load-generator CPU time, twice a second."""

    def __init__(self, server_pid: int, client: subprocess.Popen):
        super().__init__(daemon=True)
        self.server = psutil.Process(server_pid)
        self.client = client
        # (t, server cpu, its main thread's cpu, rss, client cpu, server CPU's busy and steal)
        self.samples: list[tuple[float, ...]] = []
        self.cpu = SERVER_CPU if pin_prefix(SERVER_CPU) else None

    def _main_thread_cpu(self) -> float:
        for t in self.server.threads():
            if t.id == self.server.pid:
                return t.user_time + t.system_time
        return float("nan")

    def run(self) -> None:
        client = psutil.Process(self.client.pid)
        while self.client.poll() is None:
            try:
                s, c = self.server.cpu_times(), client.cpu_times()
                main, rss = self._main_thread_cpu(), self.server.memory_info().rss
                cpu, core_busy, steal = s.user + s.system, float("nan"), float("nan")
                if self.cpu is not None:
                    core = psutil.cpu_times(percpu=True)[self.cpu]
                    steal = getattr(core, "steal", float("nan"))
                    idle = core.idle + getattr(core, "iowait", 0.0)
                    core_busy = sum(core) - idle - (0.0 if steal != steal else steal)
                sample = (time.monotonic(), cpu, main, rss, c.user + c.system, core_busy, steal)
                self.samples.append(sample)
            except psutil.Error:
                break
            time.sleep(0.5)

    def window(self, seconds: float) -> dict[str, float]:
        """CPU use (% of one core) and RSS over the last ``seconds`` sampled.

        ``worker_threads_cpu_pct`` is the server's CPU outside its main thread: the model
        thread of the batched stage, the thread pool running sync routes in the others.
        ``cpu0_others_pct`` is what other processes used of the server's (pinned) CPU.
        """
        if len(self.samples) < 2:
            return {}
        t_end = self.samples[-1][0]
        inside = [s for s in self.samples if s[0] >= t_end - seconds] or self.samples
        first, last = (inside[0], inside[-1]) if len(inside) > 1 else self.samples[-2:]
        dt = last[0] - first[0]

        def pct(i: int) -> float:
            return 100 * (last[i] - first[i]) / dt if dt > 0 else float("nan")

        return {
            "server_cpu_pct": pct(1),
            "main_thread_cpu_pct": pct(2),
            "worker_threads_cpu_pct": pct(1) - pct(2),
            "client_cpu_pct": pct(4),
            # Other processes on the server's CPU: they slow the server down (shared machine).
            "cpu0_others_pct": max(pct(5) - pct(1), 0.0),
            # Time the hypervisor gave the server's CPU to other machines (virtual machines).
            "cpu0_steal_pct": pct(6),
            "server_rss_mb": last[3] / 2**20,
            "server_rss_max_mb": max(s[3] for s in self.samples) / 2**20,
        }


def run_step(
    server: StageServer,
    profile: str,
    users: int,
    duration: float,
    prefix: Path,
    payload_file: Path | None = None,
    batch_share: float = 0.0,
    user_rate: float = 0.0,
) -> dict:
    """Run headless locust once against ``server``; return the step's tidy row.

    ``prefix`` names the raw files (``<prefix>_stats.csv``, ``_latency.json``, ``_metrics.txt``).
    ``user_rate`` > 0 paces every user (offered load = users x rate); 0 is a closed loop.
    """
    if users < 1 or duration <= 0:
        raise ValueError("users must be >= 1 and duration > 0")
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    share = batch_share if server.has_batch_route else 0.0
    env = os.environ | {
        "LOADTEST_PROFILE": profile,
        "LOADTEST_PAYLOADS": str(payload_file or ""),
        "LOADTEST_BATCH_SHARE": str(share),
        "LOADTEST_USER_RATE": str(user_rate),
    }
    cmd = [*pin_prefix(CLIENT_CPU), sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    cmd += ["--headless", "--only-summary", "--reset-stats", "--loglevel", "WARNING"]
    cmd += ["-u", str(users), "-r", str(users), "-t", f"{max(1, round(duration))}s"]
    cmd += ["--csv", str(prefix), "--host", server.url]
    before = server.scrape()
    with open(f"{prefix}_locust.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            sampler = _Sampler(server.pid, proc)
            sampler.start()
            proc.wait(timeout=duration + 60)
        finally:
            stop_process(proc, timeout=5)
        sampler.join(2)
    after = server.scrape()
    if after is not None:
        Path(f"{prefix}_metrics.txt").write_text(after)
    latency_file = Path(f"{prefix}_latency.json")
    if not latency_file.is_file():
        tail = Path(f"{prefix}_locust.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"locust wrote no results for {prefix.name}:\n{tail}")
    agg = json.loads(latency_file.read_text()).get("Aggregated", {})
    batches = histogram_delta(before, after)
    row = {
        "stage": server.stage,
        "profile": profile,
        "users": users,
        "user_rate": user_rate,
        "offered_rps": users * user_rate if user_rate else float("nan"),
        "batch_share": share,
        "wait_ms": _wait_ms_of(server),
        "seconds": agg.get("elapsed_s", float("nan")),
        "requests": agg.get("requests", 0),
        "failures": agg.get("failures", 0),
        "rps": agg.get("rps", float("nan")),
        "texts_per_s": agg.get("texts_per_s", float("nan")),
        "p50_ms": agg.get("p50", float("nan")),
        "p95_ms": agg.get("p95", float("nan")),
        "p99_ms": agg.get("p99", float("nan")),
        "max_ms": agg.get("max", float("nan")),
        "mean_ms": agg.get("mean", float("nan")),
        "mean_batch_size": histogram_mean(before, after),
    }
    window = sampler.window(row["seconds"] if row["seconds"] == row["seconds"] else duration)
    row |= window
    # Server CPU time per request (rate / rate, so the windows need not match exactly): unlike
    # req/s, barely moved by other processes competing for the server's core.
    cpu = row.get("server_cpu_pct", float("nan"))
    row["cpu_ms_per_req"] = 10 * cpu / row["rps"] if row["rps"] > 0 else float("nan")
    row["host_load_1m"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    row["_batches"] = batches
    return row


def _wait_ms_of(server: StageServer) -> float:
    if server.stage != FINAL_STAGE:
        return float("nan")
    value = server.env.get("INFERENCE_MAX_BATCH_WAIT_MS")
    if value is None:
        value = configured_wait_ms()
    return float("nan") if value is None else float(value)


def run_ladder(
    server: StageServer,
    profile: str = "short",
    users: Iterable[int] = (1, 8, 32),
    duration: float = 3.0,
    run_dir: Path | None = None,
    batch_share: float = 0.0,
    log=print,
) -> pd.DataFrame:
    """Closed-loop steps of increasing users against a running server (for notebooks).

    Results (raw files included) go to ``run_dir`` (a new quick run directory by default).
    """
    run_dir = Path(run_dir) if run_dir else new_run_dir(quick=True)
    payloads = ensure_payload_file(run_dir)
    rows = []
    for n in users:
        log(f"[{server.stage} | {profile}] {n} users for {duration:g} s ...")
        prefix = run_dir / "raw" / f"{server.stage}_{profile}_ladder_u{n}"
        row = run_step(server, profile, n, duration, prefix, payloads, batch_share)
        rows.append({"kind": "ladder", **row})
    return tidy(rows)


def run_half_load(
    server: StageServer,
    profile: str,
    offered_rps: float,
    users: int = 16,
    duration: float = 3.0,
    run_dir: Path | None = None,
) -> pd.DataFrame:
    """One paced step: ``users`` users sending ``offered_rps`` requests/s in total."""
    if offered_rps <= 0:
        raise ValueError("offered_rps must be > 0")
    run_dir = Path(run_dir) if run_dir else new_run_dir(quick=True)
    prefix = run_dir / "raw" / f"{server.stage}_{profile}_half_load"
    payloads = ensure_payload_file(run_dir)
    row = run_step(server, profile, users, duration, prefix, payloads, 0.0, offered_rps / users)
    return tidy([{"kind": "half_load", **row}])


def run_wait_sweep(
    waits_ms: Iterable[float] = (0, 1, 2, 5, 10),
    profile: str = "short",
    users: int = 32,
    duration: float = 3.0,
    run_dir: Path | None = None,
    env: dict[str, str] | None = None,
    log=print,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The batched stage once per ``INFERENCE_MAX_BATCH_WAIT_MS`` value, one step each.

    Returns ``(summary rows, batch-size histogram rows)``; each server is stopped by PID.
    """
    run_dir = Path(run_dir) if run_dir else new_run_dir(quick=True)
    payloads = ensure_payload_file(run_dir)
    rows = []
    for wait in waits_ms:
        log(f"[{FINAL_STAGE} | {profile}] wait {wait:g} ms, {users} users for {duration:g} s ...")
        wait_env = dict(env or {}) | {"INFERENCE_MAX_BATCH_WAIT_MS": f"{wait:g}"}
        with StageServer(FINAL_STAGE, env=wait_env) as server:
            _warm_up(server, payloads, profile)
            prefix = run_dir / "raw" / f"sweep_{profile}_wait{wait:g}_u{users}"
            row = run_step(server, profile, users, duration, prefix, payloads)
        rows.append({"kind": "wait_sweep", **row})
    batches = pd.DataFrame(_batch_rows(rows))
    return tidy(rows), batches


# --------------------------------------------------------------------------------------------
# a whole run


SUMMARY_COLUMNS = [
    "stage", "profile", "kind", "users", "user_rate", "offered_rps", "batch_share", "wait_ms",
    "seconds", "requests", "failures", "rps", "texts_per_s", "p50_ms", "p95_ms", "p99_ms",
    "max_ms", "mean_ms", "server_cpu_pct", "main_thread_cpu_pct", "worker_threads_cpu_pct",
    "server_rss_mb", "server_rss_max_mb",
    "client_cpu_pct", "cpu_ms_per_req", "mean_batch_size", "cpu0_others_pct", "cpu0_steal_pct",
    "host_load_1m",
]  # fmt: skip


def tidy(rows: list[dict]) -> pd.DataFrame:
    """Rows -> the summary table, columns in a fixed order."""
    df = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    return df.reindex(columns=SUMMARY_COLUMNS)


def new_run_dir(quick: bool = False, root: Path = RESULTS_ROOT) -> Path:
    """``benchmarks/results/<run-id>`` (quick runs are prefixed ``quick-``, git-ignored)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(root) / (f"quick-{stamp}" if quick else stamp)
    path.mkdir(parents=True, exist_ok=False)
    return path


def machine_info(config: BenchConfig) -> dict:
    """CPU, cores, Python and package versions, and the settings of this run."""
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = {}
    for name in ["fastapi", "uvicorn", "pydantic", "scikit-learn", "numpy", "scipy", "locust",
                 "prometheus-client", "python-json-logger", "httpx", "pandas"]:  # fmt: skip
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "pinning": {
            "server": " ".join(pin_prefix(SERVER_CPU)) or "none (taskset or 2nd CPU missing)",
            "locust": " ".join(pin_prefix(CLIENT_CPU)) or "none",
        },
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": packages,
        "git_commit": commit or None,
        "final_stage_settings": {k: str(v) for k, v in final_stage_settings().items()},
        "batch_size": configured_batch_size(),
        "inference_env": {k: v for k, v in os.environ.items() if k.startswith("INFERENCE_")},
        "config": asdict(config),
    }


class _Progress:
    """Prints which stage and step runs and an estimate of the time left."""

    STEP_OVERHEAD_S = 3.5  # locust start-up, spawning and shutdown around each step

    def __init__(self, steps: int, duration: float, restarts: int):
        self.left = steps * (duration + self.STEP_OVERHEAD_S) + restarts * 6
        self.per_step = duration + self.STEP_OVERHEAD_S
        self.steps, self.done = steps, 0

    def step(self, label: str) -> None:
        self.done += 1
        mins, secs = divmod(int(max(self.left, 0)), 60)
        print(f"[{self.done}/{self.steps}] {label}  (~{mins}m{secs:02d}s left)", flush=True)
        self.left -= self.per_step

    def restart(self) -> None:
        self.left -= 6


def run(config: BenchConfig, run_dir: Path | None = None) -> tuple[Path, pd.DataFrame]:
    """Run the whole benchmark; return the run directory and the summary table."""
    for stage in config.stages:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    for profile in {*config.profiles, *config.sweep_profiles}:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    stages = [s for s in STAGES if s in config.stages]  # naive first: half-load needs its max
    if run_dir is None:
        run_dir = new_run_dir(config.quick, Path(config.out_root or RESULTS_ROOT))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {"INFERENCE_MODEL_DIR": config.model_dir} if config.model_dir else {}
    print(f"benchmark run {run_dir.name}: stages {stages}, profiles {config.profiles}", flush=True)
    (run_dir / "machine.json").write_text(json.dumps(machine_info(config), indent=2))
    payloads = ensure_payload_file(run_dir)
    try:
        rows = _run_steps(config, run_dir, stages, env, payloads)
    finally:
        payloads.unlink(missing_ok=True)  # a cache of the test split: not a result

    summary = _write_tables(run_dir, rows)
    plots_dir = Path(config.plots_dir) if config.plots_dir else (
        run_dir / "plots" if config.quick else PLOTS_DIR
    )  # fmt: skip
    report(run_dir, plots_dir)
    return run_dir, summary


def report(run_dir: Path, plots_dir: Path | None = None) -> pd.DataFrame:
    """(Re)compute a run's targets, ``report.md`` and plots from its CSV files; print them.

    ``python -m loadtest.bench --report <run-dir>`` does this without running any load.
    """
    from loadtest import plots
    from loadtest.ceiling import best_ceiling

    run_dir = Path(run_dir)
    summary = pd.read_csv(run_dir / "summary.csv")
    ceiling = best_ceiling(_read_csv(run_dir / "ceiling.csv"))
    targets = evaluate_targets(summary, ceiling, configured_batch_size())
    targets.to_csv(run_dir / "targets.csv", index=False)
    (run_dir / "report.md").write_text(report_markdown(run_dir, summary, ceiling, targets))
    made = plots.plot_run(run_dir, plots_dir or run_dir / "plots")
    print(_closing_table(summary, targets), flush=True)
    print(f"\nresults: {run_dir}\nplots:   {', '.join(str(p) for p in made)}", flush=True)
    return targets


def _run_steps(
    config: BenchConfig, run_dir: Path, stages: list[str], env: dict, payloads: Path
) -> list[dict]:
    """Ceiling, every stage's steps, the wait sweep, the ceiling again; tables written as it
    goes."""
    if config.ceiling_seconds > 0:
        ceiling_rows = _run_ceiling(config, payloads, "start")
        pd.DataFrame(ceiling_rows).to_csv(run_dir / "ceiling.csv", index=False)

    sweep = FINAL_STAGE in stages and bool(config.sweep_ms)
    half = config.half_load_users and BASELINE_STAGE in stages
    n_steps = len(stages) * len(config.profiles) * (len(config.users) + bool(half))
    n_steps += len(stages) * len(config.profiles) * bool(config.mixed_users)  # upper bound
    n_sweep = len(config.sweep_ms) * len(config.sweep_users) * len(config.sweep_profiles)
    n_steps += n_sweep if sweep else 0
    progress = _Progress(n_steps, config.duration, len(stages) + (len(config.sweep_ms) * sweep))

    rows: list[dict] = []
    naive_max: dict[str, float] = {}
    for stage in stages:
        log_path = run_dir / f"server-{stage}.log"
        server = StageServer(stage, env=env, log_path=log_path)
        try:
            server.start()
            progress.restart()
            for profile in config.profiles:
                _warm_up(server, payloads, profile)
                for users in config.users:
                    progress.step(f"{stage} | {profile} | ladder: {users} users")
                    prefix = run_dir / "raw" / f"{stage}_{profile}_ladder_u{users}"
                    row = run_step(server, profile, users, config.duration, prefix, payloads)
                    rows.append({"kind": "ladder", **row})
                    _print_row(rows[-1])
                if config.mixed_users and server.has_batch_route:
                    u = config.mixed_users
                    progress.step(f"{stage} | {profile} | mixed: {u} users")
                    prefix = run_dir / "raw" / f"{stage}_{profile}_mixed_u{u}"
                    row = run_step(
                        server, profile, u, config.duration, prefix, payloads, config.batch_share
                    )
                    rows.append({"kind": "mixed", **row})
                    _print_row(rows[-1])
                if stage == BASELINE_STAGE:
                    ladder = [r for r in rows if r["stage"] == stage and r["profile"] == profile]
                    naive_max[profile] = max(r["rps"] for r in ladder)
                if half and profile in naive_max:
                    u = config.half_load_users
                    offered = naive_max[profile] / 2
                    progress.step(f"{stage} | {profile} | half load: {offered:.0f} req/s offered")
                    prefix = run_dir / "raw" / f"{stage}_{profile}_half_load"
                    row = run_step(
                        server, profile, u, config.duration, prefix, payloads, 0.0, offered / u
                    )
                    rows.append({"kind": "half_load", **row})
                    _print_row(rows[-1])
        finally:
            server.stop()
            trim_log(log_path)
        _write_tables(run_dir, rows)

    if sweep:
        for wait in config.sweep_ms:
            log_path = run_dir / f"server-{FINAL_STAGE}-wait{wait:g}ms.log"
            wait_env = env | {"INFERENCE_MAX_BATCH_WAIT_MS": f"{wait:g}"}
            server = StageServer(FINAL_STAGE, env=wait_env, log_path=log_path)
            try:
                server.start()
                progress.restart()
                for profile in config.sweep_profiles:
                    _warm_up(server, payloads, profile)
                    for users in config.sweep_users:
                        progress.step(
                            f"{FINAL_STAGE} | {profile} | wait {wait:g} ms: {users} users"
                        )
                        prefix = run_dir / "raw" / f"sweep_{profile}_wait{wait:g}_u{users}"
                        row = run_step(server, profile, users, config.duration, prefix, payloads)
                        rows.append({"kind": "wait_sweep", **row})
                        _print_row(rows[-1])
            finally:
                server.stop()
                trim_log(log_path)
            _write_tables(run_dir, rows)
    if config.ceiling_seconds > 0:
        ceiling_rows += _run_ceiling(config, payloads, "end")
        pd.DataFrame(ceiling_rows).to_csv(run_dir / "ceiling.csv", index=False)
    return rows


def _run_ceiling(config: BenchConfig, payloads: Path, when: str) -> list[dict]:
    from loadtest.ceiling import measure_ceiling
    from loadtest.payloads import load_payload_file
    from sentiment_model import load_model

    model = load_model(config.model_dir or os.environ.get("INFERENCE_MODEL_DIR") or None)
    texts = {p: load_payload_file(payloads, p) for p in config.profiles}
    batch = configured_batch_size()
    print(f"ceiling ({when}): model {model.version} in-process, batches of 1 and {batch}")
    rows = measure_ceiling(model, texts, (1, batch), config.ceiling_seconds, cpu=SERVER_CPU)
    for r in rows:
        print(
            f"  {r['profile']:5s} batch {r['batch_size']:3d}: {r['texts_per_s']:8.0f} texts/s "
            f"({r['texts_per_s_p50']:.0f} from the median batch time)"
        )
    return [{"when": when, **r, "model_version": model.version} for r in rows]


def _warm_up(server: StageServer, payloads: Path, profile: str, n: int = 20) -> None:
    """A few sequential requests so the first step does not pay for cold caches."""
    from loadtest.payloads import load_payload_file

    texts = load_payload_file(payloads, profile)[:n]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for text in texts:
            client.post("/predict", json={"text": text})


def _print_row(row: dict) -> None:
    print(
        f"      {row['requests']:7d} req  {row['failures']:5d} fail  {row['rps']:8.1f} req/s  "
        f"p50 {row['p50_ms']:7.1f}  p99 {row['p99_ms']:7.1f} ms  "
        f"server CPU {row.get('server_cpu_pct', float('nan')):4.0f}%  "
        f"RSS {row.get('server_rss_mb', float('nan')):5.0f} MB  "
        f"locust CPU {row.get('client_cpu_pct', float('nan')):4.0f}%",
        flush=True,
    )


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def _batch_rows(rows: list[dict]) -> list[dict]:
    """Tidy batch-size histogram rows (one per step and bucket) from the steps' scrapes."""
    return [
        {"stage": r["stage"], "profile": r["profile"], "kind": r["kind"], "users": r["users"],
         "wait_ms": r["wait_ms"], "le": le, "count": n}
        for r in rows for le, n in r.get("_batches", [])
    ]  # fmt: skip


def _write_tables(run_dir: Path, rows: list[dict]) -> pd.DataFrame:
    summary = tidy(rows)
    summary.to_csv(run_dir / "summary.csv", index=False, float_format="%.5g")
    batch_rows = _batch_rows(rows)
    if batch_rows:
        pd.DataFrame(batch_rows).to_csv(run_dir / "batch_sizes.csv", index=False)
    return summary


# --------------------------------------------------------------------------------------------
# targets and report


def evaluate_targets(
    summary: pd.DataFrame, ceiling: pd.DataFrame | None = None, batch_size: int = 32
) -> pd.DataFrame:
    """The course's performance targets, each with its measured figure and whether it was met.

    Maximum throughput is the highest closed-loop ``ladder`` rate of a stage and profile. A
    target needs its stages in the run; those without the data are reported as not measured.
    """
    rows = []
    lad = summary[summary["kind"] == "ladder"] if len(summary) else summary

    def best(stage, profile):
        part = lad[(lad["stage"] == stage) & (lad["profile"] == profile)]
        return part if len(part) else None

    def add(name, value, threshold, met, detail):
        rows.append(
            {"target": name, "value": value, "threshold": threshold, "met": met, "detail": detail}
        )

    for profile, factor in (("short", 3.5), ("long", 2.5)):
        fin, base = best(FINAL_STAGE, profile), best(BASELINE_STAGE, profile)
        name = f"{profile}: final max throughput >= {factor}x naive, zero failures"
        if fin is None or base is None:
            add(name, float("nan"), factor, None, "not measured")
            continue
        ratio = fin["rps"].max() / base["rps"].max()
        fails = int(fin["failures"].sum())
        # Requests per server CPU-second at each stage's best step: what the stages would do
        # with the core to themselves (robust to other processes on a shared machine).
        per_cpu = [1000 / part.loc[part["rps"].idxmax(), "cpu_ms_per_req"] for part in (fin, base)]
        add(
            name,
            ratio,
            factor,
            bool(ratio >= factor and fails == 0),
            f"{fin['rps'].max():.0f} vs {base['rps'].max():.0f} req/s; final failures {fails}; "
            f"per server CPU-second {per_cpu[0]:.0f} vs {per_cpu[1]:.0f} "
            f"({per_cpu[0] / per_cpu[1]:.2f}x)",
        )
    for profile in ("long", "short"):
        fin = best(FINAL_STAGE, profile)
        name = f"{profile}: final max throughput vs in-process ceiling at batch {batch_size}"
        ceil = None
        if ceiling is not None and len(ceiling):
            hit = ceiling[(ceiling["profile"] == profile) & (ceiling["batch_size"] == batch_size)]
            col = "texts_per_s_p50" if "texts_per_s_p50" in hit else "texts_per_s"
            ceil = float(hit[col].iloc[0]) if len(hit) else None
        if fin is None or ceil is None:
            add(name, float("nan"), 0.6 if profile == "long" else None, None, "not measured")
            continue
        frac = fin["texts_per_s"].max() / ceil
        top = fin.loc[fin["texts_per_s"].idxmax()]
        split = ""
        if pd.notna(top.get("main_thread_cpu_pct", float("nan"))):
            split = (
                f"; at that step the event loop used {top['main_thread_cpu_pct']:.0f}% of a core,"
                f" the model thread {top['worker_threads_cpu_pct']:.0f}%"
            )
        add(
            name,
            frac,
            0.6 if profile == "long" else None,
            bool(frac >= 0.6) if profile == "long" else None,
            f"{fin['texts_per_s'].max():.0f} of {ceil:.0f} texts/s{split}"
            + ("" if profile == "long" else " (reported, no target: HTTP is the wall)"),
        )
    for profile in PROFILES:
        fin, base = best(FINAL_STAGE, profile), best(BASELINE_STAGE, profile)
        name = f"{profile}: one user, final p50 <= 1.2x naive p50"
        f1 = fin[fin["users"] == 1] if fin is not None else []
        b1 = base[base["users"] == 1] if base is not None else []
        if not len(f1) or not len(b1):
            add(name, float("nan"), 1.2, None, "not measured")
            continue
        ratio = f1["p50_ms"].iloc[0] / b1["p50_ms"].iloc[0]
        add(
            name,
            ratio,
            1.2,
            bool(ratio <= 1.2),
            f"{f1['p50_ms'].iloc[0]:.2f} vs {b1['p50_ms'].iloc[0]:.2f} ms",
        )
    half = summary[summary["kind"] == "half_load"] if len(summary) else summary
    for profile in PROFILES:
        name = f"{profile}: at half the naive max offered, final p99 <= naive p99"
        f = half[(half["stage"] == FINAL_STAGE) & (half["profile"] == profile)]
        b = half[(half["stage"] == BASELINE_STAGE) & (half["profile"] == profile)]
        if not len(f) or not len(b):
            add(name, float("nan"), 1.0, None, "not measured")
            continue
        ratio = f["p99_ms"].iloc[0] / b["p99_ms"].iloc[0]
        add(
            name,
            ratio,
            1.0,
            bool(ratio <= 1.0),
            f"{f['p99_ms'].iloc[0]:.2f} vs {b['p99_ms'].iloc[0]:.2f} ms at "
            f"{f['offered_rps'].iloc[0]:.0f} req/s offered (achieved {f['rps'].iloc[0]:.0f} "
            f"and {b['rps'].iloc[0]:.0f})",
        )
    for stage in [s for s in STAGES if len(lad) and s in set(lad["stage"])]:
        part = lad[lad["stage"] == stage]
        growth = part["server_rss_mb"].max() / part["server_rss_mb"].iloc[0]
        add(
            f"{stage}: RSS flat across the ladder (max <= 1.1x first step)",
            growth,
            1.1,
            bool(growth <= 1.1),
            " / ".join(f"{v:.0f}" for v in part["server_rss_mb"]) + " MB per step",
        )
    return pd.DataFrame(rows)


def _fmt_table(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per stage and profile: max throughput, lone-user p50 and p99 at max throughput."""
    lad = summary[summary["kind"] == "ladder"]
    rows = []
    for (stage, profile), part in lad.groupby(["stage", "profile"], sort=False):
        top = part.loc[part["rps"].idxmax()]
        one = part[part["users"] == part["users"].min()].iloc[0]
        rows.append(
            {
                "stage": stage,
                "profile": profile,
                "max req/s": round(top["rps"], 1),
                "at users": int(top["users"]),
                "p50 1 user (ms)": round(one["p50_ms"], 2),
                "p99 at max (ms)": round(top["p99_ms"], 1),
                "CPU ms/req at max": round(top["cpu_ms_per_req"], 2),
                "failures": int(part["failures"].sum()),
                "RSS (MB)": f"{part['server_rss_mb'].min():.0f}-{part['server_rss_mb'].max():.0f}",
            }
        )
    return pd.DataFrame(rows)


def report_markdown(
    run_dir: Path, summary: pd.DataFrame, ceiling: pd.DataFrame, targets: pd.DataFrame
) -> str:
    """The run's results as markdown: headline table, ceiling, targets."""
    parts = [f"# Benchmark run {Path(run_dir).name}\n"]
    machine = json.loads((Path(run_dir) / "machine.json").read_text())
    parts.append(
        f"Machine: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs, "
        f"{machine['memory_gb']} GB; server pinned: {machine['pinning']['server']}; "
        f"locust pinned: {machine['pinning']['locust']}; Python {machine['python']}.\n"
    )
    if len(summary):
        parts += ["## Maximum throughput and latency\n", _fmt_table(headline_table(summary)), ""]
    if len(ceiling):
        cols = [c for c in ("profile", "batch_size", "texts_per_s", "texts_per_s_p50",
                            "batch_p50_ms") if c in ceiling]  # fmt: skip
        parts += ["## In-process ceiling (model alone, one core)\n", _fmt_table(ceiling[cols]), ""]
    if len(targets):
        t = targets.assign(met=targets["met"].map({True: "yes", False: "NO", None: "-"}))
        parts += ["## Targets\n", _fmt_table(t), ""]
    return "\n".join(parts) + "\n"


def _closing_table(summary: pd.DataFrame, targets: pd.DataFrame) -> str:
    lines = ["", headline_table(summary).to_string(index=False) if len(summary) else "(no steps)"]
    if len(targets):
        lines.append("")
        for _, t in targets.iterrows():
            verdict = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
            lines.append(f"{verdict:7s} {t['target']}: {t['value']:.3g} ({t['detail']})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    """Command-line flags -> :class:`BenchConfig` (``--quick`` changes the defaults)."""
    p = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a few seconds per step, fewer steps")
    p.add_argument("--stages", nargs="+", choices=list(STAGES))
    p.add_argument("--profiles", nargs="+", choices=list(PROFILES))
    p.add_argument("--users", nargs="+", type=int, help="the ladder of user counts")
    p.add_argument("--duration", type=float, help="seconds per step")
    p.add_argument("--mixed-users", type=int, help="users of the /predict/batch mixed step")
    p.add_argument("--no-mixed", action="store_true", help="skip the mixed step")
    p.add_argument("--half-load-users", type=int, help="paced users of the half-load step")
    p.add_argument("--no-half-load", action="store_true", help="skip the half-load step")
    p.add_argument("--sweep-ms", nargs="+", type=float, help="INFERENCE_MAX_BATCH_WAIT_MS values")
    p.add_argument("--sweep-users", nargs="+", type=int, help="users of each sweep step")
    p.add_argument("--sweep-profiles", nargs="+", choices=list(PROFILES))
    p.add_argument("--no-sweep", action="store_true", help="skip the wait sweep")
    p.add_argument("--ceiling-seconds", type=float, help="time per ceiling measurement")
    p.add_argument("--no-ceiling", action="store_true", help="skip the in-process ceiling")
    p.add_argument("--model-dir", help="model artifact for every stage (INFERENCE_MODEL_DIR)")
    p.add_argument("--plots-dir", help="where PNGs go (default benchmarks/plots, quick: run dir)")
    p.add_argument("--out", help="results root directory (default benchmarks/results)")
    p.epilog = "python -m loadtest.bench --report RUN_DIR [PLOTS_DIR]: redo a run's report"
    a = p.parse_args(argv)
    overrides = {
        k: v
        for k, v in {
            "stages": a.stages,
            "profiles": a.profiles,
            "users": a.users,
            "duration": a.duration,
            "mixed_users": a.mixed_users,
            "half_load_users": a.half_load_users,
            "sweep_ms": a.sweep_ms,
            "sweep_users": a.sweep_users,
            "sweep_profiles": a.sweep_profiles,
            "ceiling_seconds": a.ceiling_seconds,
            "model_dir": a.model_dir,
            "plots_dir": a.plots_dir,
            "out_root": a.out,
        }.items()
        if v is not None
    }
    if a.no_mixed:
        overrides["mixed_users"] = None
    if a.no_half_load:
        overrides["half_load_users"] = None
    if a.no_sweep:
        overrides["sweep_ms"] = []
    if a.no_ceiling:
        overrides["ceiling_seconds"] = 0.0
    if "profiles" in overrides and "sweep_profiles" not in overrides:
        overrides["sweep_profiles"] = overrides["profiles"]
    config = BenchConfig.quick_config(**overrides) if a.quick else BenchConfig(**overrides)
    if any(u < 1 for u in config.users) or config.duration <= 0:
        p.error("--users must be >= 1 and --duration > 0")
    return config


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m loadtest.bench``."""
    # Ctrl-C (even when started in the background, where SIGINT may be ignored) and SIGTERM
    # unwind through the finally blocks, which stop every server and locust process by PID.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--report"]:
        if len(argv) < 2:
            sys.exit("usage: python -m loadtest.bench --report RUN_DIR [PLOTS_DIR]")
        report(Path(argv[1]), Path(argv[2]) if len(argv) > 2 else None)
        return
    run(parse_args(argv))


if __name__ == "__main__":
    main()

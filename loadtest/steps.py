"""Load steps: one headless locust run against a running server, and one runner for a list of
them (ladders, half-load, mixed, wait sweep and layers steps all go through it).

    with StageServer("naive") as server:
        df = run_ladder(server, "short", users=[1, 8, 32], duration=3)

Load kinds. ``ladder``: closed loop (each user sends its next request when the previous one is
answered), ``/predict`` only, the same for every server: it finds each one's maximum
throughput. ``mixed``: the same with a share of ``/predict/batch`` (servers that have it).
``half_load``: a fixed offered load: a fixed number of users, each paced to ``rate = offered /
users`` requests per second (see the locustfile), so every server faces the same arrival rate
rather than the same number of callers. ``wait_sweep`` and ``layers``: ladder-like steps of the
final stage with other settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import psutil

from loadtest.config import new_run_dir, server_settings
from loadtest.launcher import CLIENT_CPU, ROOT, SERVER_CPU, StageServer, pin_prefix, stop_process
from loadtest.promtext import histogram_delta, histogram_mean

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
STEP_OVERHEAD_S = 3.5  # locust start-up, spawning and shutdown around each step

SUMMARY_COLUMNS = [
    "stage", "profile", "kind", "users", "user_rate", "offered_rps", "batch_share", "wait_ms",
    "seconds", "requests", "failures", "rps", "texts_per_s", "p50_ms", "p95_ms", "p99_ms",
    "max_ms", "mean_ms", "server_cpu_pct", "main_thread_cpu_pct", "worker_threads_cpu_pct",
    "server_rss_mb", "server_rss_max_mb",
    "client_cpu_pct", "cpu_ms_per_req", "mean_batch_size", "cpu0_others_pct", "cpu0_steal_pct",
    "host_load_1m", "scorer", "bench_off", "round",
]  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One locust run: ``users`` users on ``profile`` texts; ``user_rate`` > 0 paces each user
    (offered load = users x rate), 0 is a closed loop; ``batch_share`` of ``/predict/batch``."""

    kind: str
    profile: str
    users: int
    user_rate: float = 0.0
    batch_share: float = 0.0

    def describe(self) -> str:
        """``ladder: 4 users``, ``half load: 500 req/s offered`` (progress lines)."""
        if self.user_rate:
            return f"{self.kind.replace('_', ' ')}: {self.users * self.user_rate:.0f} req/s offered"
        return f"{self.kind.replace('_', ' ')}: {plural(self.users, 'user')}"


def plural(n: int, word: str) -> str:
    """``1 user``, ``4 users``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def ensure_payload_file(run_dir: Path) -> Path:
    """``run_dir/payloads.json`` (the test split's texts per profile), written if missing."""
    from loadtest.payloads import write_payload_file

    path = Path(run_dir) / "payloads.json"
    return path if path.is_file() else write_payload_file(path)


def warm_up(server: StageServer, payloads: Path, profile: str, n: int = 20) -> None:
    """A few sequential requests so the first step does not pay for cold caches."""
    from loadtest.payloads import load_payload_file

    texts = load_payload_file(payloads, profile)[:n]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for text in texts:
            client.post("/predict", json={"text": text})


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
        thread of the stages with a batcher, the thread pool running sync routes in the others.
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
    """Run headless locust once against ``server``; return the step's row (without ``kind``).

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
    nan = float("nan")
    row = {
        "stage": server.label,
        "profile": profile,
        "users": users,
        "user_rate": user_rate,
        "offered_rps": users * user_rate if user_rate else nan,
        "batch_share": share,
        **server_settings(server.stage, server.env),
        "seconds": agg.get("elapsed_s", nan),
        "requests": agg.get("requests", 0),
        "failures": agg.get("failures", 0),
        "rps": agg.get("rps", nan),
        "texts_per_s": agg.get("texts_per_s", nan),
        "p50_ms": agg.get("p50", nan),
        "p95_ms": agg.get("p95", nan),
        "p99_ms": agg.get("p99", nan),
        "max_ms": agg.get("max", nan),
        "mean_ms": agg.get("mean", nan),
        "mean_batch_size": histogram_mean(before, after),
    }
    row |= sampler.window(row["seconds"] if row["seconds"] == row["seconds"] else duration)
    # Server CPU time per request (rate / rate, so the windows need not match exactly): unlike
    # req/s, barely moved by other processes competing for the server's core.
    cpu = row.get("server_cpu_pct", nan)
    row["cpu_ms_per_req"] = 10 * cpu / row["rps"] if row["rps"] > 0 else nan
    row["host_load_1m"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else nan
    row["_batches"] = histogram_delta(before, after)
    return row


def print_row(row: dict) -> None:
    """One step's result on one line."""
    nan = float("nan")
    print(
        f"      {row['requests']:7d} req  {row['failures']:5d} fail  {row['rps']:8.1f} req/s  "
        f"p50 {row['p50_ms']:7.1f}  p99 {row['p99_ms']:7.1f} ms  "
        f"server CPU {row.get('server_cpu_pct', nan):4.0f}%  "
        f"RSS {row.get('server_rss_mb', nan):5.0f} MB  "
        f"locust CPU {row.get('client_cpu_pct', nan):4.0f}%",
        flush=True,
    )


def run_steps(
    server: StageServer,
    steps: Iterable[Step],
    duration: float,
    run_dir: Path,
    payloads: Path,
    session: str | None = None,
    progress: Callable[[str], None] = print,
    on_row: Callable[[dict], None] | None = print_row,
    into: list[dict] | None = None,
) -> list[dict]:
    """Run ``steps`` in order against a running server; return their rows.

    ``steps`` may be a generator: it can look at the rows of the steps before (the half-load
    step needs the ladder's maximum). The server is warmed up before each new profile. Raw
    files are named ``raw/<session>_<profile>_<kind>_u<users>_*`` (``session``: the server's
    label by default). ``into``: a list each row is also appended to as soon as it is measured
    (the rows a generator of steps looks at).
    """
    rows: list[dict] = []
    warm: set[str] = set()
    name = session or server.label
    for step in steps:
        if step.profile not in warm:
            warm_up(server, payloads, step.profile)
            warm.add(step.profile)
        progress(f"{name} | {step.profile} | {step.describe()}")
        prefix = Path(run_dir) / "raw" / f"{name}_{step.profile}_{step.kind}_u{step.users}"
        row = run_step(
            server, step.profile, step.users, duration, prefix, payloads,
            step.batch_share, step.user_rate,
        )  # fmt: skip
        rows.append({"kind": step.kind, **row})
        if into is not None:
            into.append(rows[-1])
        if on_row:
            on_row(rows[-1])
    return rows


def tidy(rows: list[dict]) -> pd.DataFrame:
    """Rows -> the summary table, columns in a fixed order."""
    df = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    return df.reindex(columns=SUMMARY_COLUMNS)


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
    steps = [Step("ladder", profile, n, batch_share=batch_share) for n in users]
    return tidy(run_steps(server, steps, duration, run_dir, payloads, progress=log, on_row=None))

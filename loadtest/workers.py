"""One worker process or several: throughput and server CPU per request of the final stage.

``python -m loadtest.workers`` starts the final stage with plain uvicorn's multi-worker command
(``python -m serving.multiprocess uvicorn inference_server:app --workers N``; the container image
ran it until it switched to the launcher, and the figures of lessons/09_scale_out were measured
with it) for each N in ``--workers`` (default 1 and 2), waits until every worker has loaded the
model, runs headless locust in a closed loop (``--users`` users, ``--duration`` seconds, ``POST
/predict``), and reports:

- ``rps``, ``p50_ms``, ``p99_ms``: from locust (exact percentiles, see loadtest/latency.py);
- ``server_cpu_s``, ``cpu_ms_per_req``: CPU seconds (user + system) of the server's whole
  process tree (the parent and every worker, read from ``/proc/<pid>/stat`` by psutil) over the
  load window, divided by the requests the server counted in that window (``/metrics`` before
  and after: the aggregate of every worker, which is what this stage of the course makes right);
- ``client_cpu_s``: the load generator's CPU seconds in the same window (``window_s``, which
  includes locust's start-up: compare it with ``server_cpu_s``, not with ``seconds``);
- ``mean_batch_size``: texts per model call, over every worker (each worker batches alone);
- ``busiest_worker_share``: the share of requests the busiest worker answered (its own log file).

How the figure is taken matters on a small machine: nothing is pinned. On a 2-core machine the
load generator shares the two cores with the workers, so two workers can never get two whole
cores; requests/s then understates what two cores give, while CPU seconds per request is
barely affected by the competition and is the figure to size with. The table is printed in
markdown and written to ``benchmarks/results/workers/<run id>.csv``. Bounded: about
``len(workers) x (duration + 15)`` seconds. Examples::

    python -m loadtest.workers                       # 1 and 2 workers, 64 users, 15 s each
    python -m loadtest.workers --quick               # 5 s each: does it work?
    python -m loadtest.workers --workers 1 2 4 --users 128 --profile long
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import psutil
from prometheus_client.parser import text_string_to_metric_families

from loadtest.launcher import StageServer, stop_process
from loadtest.promtext import histogram_mean
from loadtest.steps import LOCUSTFILE, ensure_payload_file
from serving.stages import FINAL_STAGE

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "benchmarks" / "results" / "workers"


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and every live descendant (psutil reads /proc)."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:  # exited meanwhile
                pass
    except psutil.Error:
        pass
    return total


def predictions_counted(metrics_text: str) -> float:
    """``http_requests_total`` of ``POST /predict``, every status, summed over the workers."""
    return sum(
        s.value
        for family in text_string_to_metric_families(metrics_text)
        for s in family.samples
        if s.name == "http_requests_total" and s.labels.get("route") == "/predict"
    )


def wait_for_workers(log_dir: Path, workers: int, timeout: float = 120) -> None:
    """Until ``workers`` log files each say ``model_loaded`` (StageServer waits for one)."""
    deadline = time.monotonic() + timeout
    while True:
        loaded = [p for p in log_dir.glob("requests*.log") if '"model_loaded"' in p.read_text()]
        if len(loaded) >= workers:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(loaded)} of {workers} workers loaded the model")
        time.sleep(0.2)


def worker_shares(log_dir: Path) -> list[float]:
    """Each worker's share of the logged /predict requests, largest first."""
    counts = [
        sum('"route": "/predict"' in line for line in p.read_text().splitlines())
        for p in log_dir.glob("requests*.log")
    ]
    total = sum(counts) or 1
    return sorted((c / total for c in counts), reverse=True)


def run_one(workers: int, users: int, duration: float, profile: str, raw_dir: Path) -> dict:
    """Start the server with ``workers`` workers, load it, stop it; return one table row."""
    work = Path(tempfile.mkdtemp(prefix=f"workers-{workers}-"))
    log_dir = work / "logs"
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
        "INFERENCE_LOG_PATH": str(log_dir / "requests.log"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.getenv("PYTHONPATH")])),
    }
    launcher = ("-m", "serving.multiprocess", "uvicorn", "--workers", str(workers))
    server = StageServer(FINAL_STAGE, env=env, cpu=None, launcher=launcher, log_path=work / "out")
    payloads = ensure_payload_file(raw_dir)
    prefix = raw_dir / f"workers{workers}_{profile}_u{users}"
    with server:
        wait_for_workers(log_dir, workers)
        for _ in range(3):  # every worker answers a few before the clock starts
            for text in ("Fine.", "A warm, funny film.", "Dull."):
                server.post("/predict", {"text": text})
        for path in log_dir.glob("requests*.log"):  # count only the measured window
            path.write_text("")
        cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"]
        cmd += ["--only-summary", "--reset-stats", "--loglevel", "WARNING"]
        cmd += ["-u", str(users), "-r", str(users), "-t", f"{max(1, round(duration))}s"]
        cmd += ["--csv", str(prefix), "--host", server.url]
        locust_env = os.environ | {
            "LOADTEST_PROFILE": profile,
            "LOADTEST_PAYLOADS": str(payloads),
            "LOADTEST_BATCH_SHARE": "0",
            "LOADTEST_USER_RATE": "0",
        }
        metrics_before = server.get("/metrics").text
        counted_before = predictions_counted(metrics_before)
        cpu_before, started = tree_cpu_seconds(server.pid), time.monotonic()
        with open(f"{prefix}_locust.log", "wb") as out:
            client = subprocess.Popen(cmd, cwd=ROOT, env=locust_env, stdout=out, stderr=out)
            client_ps = psutil.Process(client.pid)
            client_cpu = 0.0
            try:
                while client.poll() is None and time.monotonic() - started < duration + 60:
                    try:
                        t = client_ps.cpu_times()
                        client_cpu = t.user + t.system
                    except psutil.Error:
                        break
                    time.sleep(0.2)
            finally:
                stop_process(client, timeout=5)
        cpu_after, wall = tree_cpu_seconds(server.pid), time.monotonic() - started
        metrics_after = server.get("/metrics").text
        counted = predictions_counted(metrics_after) - counted_before
        Path(f"{prefix}_metrics.txt").write_text(metrics_after)
        shares = worker_shares(log_dir)
    agg = json.loads(Path(f"{prefix}_latency.json").read_text())["Aggregated"]
    cpu = cpu_after - cpu_before
    return {
        "workers": workers,
        "profile": profile,
        "users": users,
        "seconds": round(agg["elapsed_s"], 2),
        "requests": agg["requests"],
        "failures": agg["failures"],
        "rps": round(agg["rps"], 1),
        "p50_ms": round(agg.get("p50", float("nan")), 2),
        "p99_ms": round(agg.get("p99", float("nan")), 2),
        "server_cpu_s": round(cpu, 2),
        "cpu_ms_per_req": round(1000 * cpu / counted, 3) if counted else float("nan"),
        "client_cpu_s": round(client_cpu, 2),
        "window_s": round(wall, 1),
        "mean_batch_size": round(histogram_mean(metrics_before, metrics_after), 2),
        "busiest_worker_share": round(shares[0], 3) if shares else float("nan"),
        "logical_cpus": os.cpu_count(),
        "load_1m_after": round(os.getloadavg()[0], 2),
    }


def markdown(df: pd.DataFrame) -> str:
    """The table in markdown (no extra dependency)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run every worker count, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per step")
    parser.add_argument("--profile", choices=["short", "long"], default="short")
    parser.add_argument("--quick", action="store_true", help="5 s per step")
    args = parser.parse_args(argv)
    duration = 5.0 if args.quick else args.duration
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_id += "-quick" if args.quick else ""
    raw_dir = Path(tempfile.mkdtemp(prefix=f"workers-{run_id}-"))  # locust's files, payloads
    rows = []
    for n in args.workers:
        print(f"{n} worker(s), {args.users} users, {duration:g} s ...", flush=True)
        rows.append(run_one(n, args.users, duration, args.profile, raw_dir))
    df = pd.DataFrame(rows)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    csv = OUT_DIR / f"{run_id}.csv"
    df.to_csv(csv, index=False)
    print(markdown(df))
    print(
        f"\n{os.cpu_count()} logical CPUs, nothing pinned: the load generator shares the cores "
        f"with the workers. Saved {csv.relative_to(ROOT)}; locust's files in {raw_dir}"
    )


if __name__ == "__main__":
    main()

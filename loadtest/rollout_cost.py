"""What a rollout costs under load: shadow scoring at 10 % and 50 % of the texts against none,
and a hot reload's effect on p99 (lessons/12_rollout).

    python -m loadtest.rollout_cost                       # about 1 minute on 2 cores
    python -m loadtest.rollout_cost --seconds 3 --rounds 3 --clients 8

Closed-loop clients (each a thread with one keep-alive connection, short test-split texts) on
127.0.0.1 against the rollout stage pinned to CPU 0, the clients on CPU 1 when there is one.
Shadow: one server per fraction (0, 0.1, 0.5; the shadow model is the stable artifact loaded a
second time, so it costs what a candidate of the same size costs), measured in interleaved
rounds so a busy neighbour slows every fraction alike; also the server's CPU time per answered
request, which a neighbour does not change. Reload: one server whose
``INFERENCE_MODEL_DIR`` is a symlink switched between two copies of the artifact and a SIGHUP
in the middle of each round; p99 of the requests sent from the signal until 0.5 s after the
``model_reloaded`` line against the requests sent before it.
Writes ``benchmarks/results/rollout/<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil

from loadtest.launcher import CLIENT_CPU, ROOT, StageServer
from sentiment_model import default_model_dir

# (sent, done, status code or transport error name, model_version or None, client)
Outcome = tuple[float, float, object, str | None, int]
FRACTIONS = (0.0, 0.1, 0.5)
AFTER_RELOAD_S = 0.5


def reloaded(server: StageServer) -> int:
    """How many ``model_reloaded`` lines the server has written so far."""
    log = server.request_log
    return log.read_text().count('"model_reloaded"') if log and log.is_file() else 0


def closed_loop(
    url: str, clients: int, stop: threading.Event, texts: list[str], timeout: float = 10.0
) -> tuple[list[Outcome], list[threading.Thread]]:
    """Start ``clients`` threads that POST /predict back to back (one keep-alive connection
    each, its own X-Canary-Key) until ``stop`` is set; return the shared outcome list and the
    threads (join them after setting ``stop``)."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=timeout) as http:
            i = n
            while not stop.is_set():
                sent = time.monotonic()
                version = None
                try:
                    answer = http.post(
                        "/predict",
                        json={"text": texts[i % len(texts)]},
                        headers={"X-Canary-Key": f"client-{n}"},
                    )
                    result: object = answer.status_code
                    if answer.status_code == 200:
                        version = answer.json()["model_version"]
                except httpx.TransportError as e:
                    result = type(e).__name__
                with lock:
                    outcomes.append((sent, time.monotonic(), result, version, n))
                i += clients

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    return outcomes, threads


def run_load(url: str, clients: int, seconds: float, texts: list[str]) -> list[Outcome]:
    """Closed-loop load for ``seconds``; every outcome."""
    stop = threading.Event()
    outcomes, threads = closed_loop(url, clients, stop, texts)
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    return outcomes


def summary(outcomes: list[Outcome], seconds: float | None = None) -> dict:
    """p50 / p99 latency (ms) of the answered requests, throughput, failures."""
    latencies = sorted((done - sent) * 1000 for sent, done, r, _, _ in outcomes if r == 200)
    if not latencies:
        return {"requests": len(outcomes), "ok": 0}
    cut = statistics.quantiles(latencies, n=100, method="inclusive")
    out = {
        "requests": len(outcomes),
        "ok": len(latencies),
        "failed": len(outcomes) - len(latencies),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(cut[98], 2),
    }
    if seconds:
        out["rps"] = round(len(latencies) / seconds, 1)
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the server process has used so far: on a shared machine a
    neighbour stretches latency and throughput, not the CPU each request costs."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def pin_clients() -> None:
    """The load generator on its own core (as the course's benchmark), when there is one."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > CLIENT_CPU:
        os.sched_setaffinity(0, {CLIENT_CPU})


def shadow_cost(args, texts: list[str], out_dir: Path) -> dict:
    """Interleaved rounds over the shadow fractions; per fraction the median over rounds."""
    artifact = default_model_dir()
    servers = {}
    try:
        for fraction in FRACTIONS:
            env = {"INFERENCE_MODEL_DIR": str(artifact), "INFERENCE_LOG_LEVEL": "WARNING"}
            if fraction:
                env |= {
                    "INFERENCE_SHADOW_MODEL_DIR": str(artifact),
                    "INFERENCE_SHADOW_FRACTION": str(fraction),
                }
            log = out_dir / f"shadow-{fraction:g}.log"
            servers[fraction] = StageServer("rollout", env=env, log_path=log).start()
        rounds: dict[float, list[dict]] = {f: [] for f in FRACTIONS}
        for _ in range(args.rounds):
            for fraction, server in servers.items():
                run_load(server.url, args.clients, 0.5, texts)  # warm-up, not counted
                cpu = cpu_seconds(server.pid)
                outcomes = run_load(server.url, args.clients, args.seconds, texts)
                row = summary(outcomes, args.seconds)
                row["cpu_ms_per_request"] = round(
                    (cpu_seconds(server.pid) - cpu) * 1000 / max(row["ok"], 1), 3
                )
                rounds[fraction].append(row)
        scraped = {f: s.scrape() or "" for f, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
    result = {}
    for fraction, rows in rounds.items():
        result[f"{fraction:g}"] = {
            key: statistics.median(row[key] for row in rows)
            for key in ("p50_ms", "p99_ms", "rps", "cpu_ms_per_request")
        } | {"rounds": rows}
        result[f"{fraction:g}"]["shadow_scored"] = sum(
            float(line.split()[-1])
            for line in scraped[fraction].splitlines()
            if line.startswith("inference_shadow_agreement_total{")
        )
    base = result["0"]
    for fraction in FRACTIONS[1:]:
        row = result[f"{fraction:g}"]
        row["p50_vs_0"] = round(row["p50_ms"] / base["p50_ms"], 3)
        row["p99_vs_0"] = round(row["p99_ms"] / base["p99_ms"], 3)
        row["rps_vs_0"] = round(row["rps"] / base["rps"], 3)
        row["cpu_vs_0"] = round(row["cpu_ms_per_request"] / base["cpu_ms_per_request"], 3)
    return result


def reload_effect(args, texts: list[str], out_dir: Path) -> dict:
    """A SIGHUP reload in the middle of each round of load: p99 before and in the window."""
    artifact = default_model_dir()
    root = out_dir / "models"
    for name in ("a", "b"):  # two copies: the symlink switches between them
        shutil.copytree(artifact, root / name)
    link = root / "current"
    link.symlink_to("a")
    env = {"INFERENCE_MODEL_DIR": str(link), "INFERENCE_LOG_LEVEL": "INFO"}
    server = StageServer("rollout", env=env, log_path=out_dir / "reload.log").start()
    rows = []
    try:
        for n in range(args.rounds):
            stop = threading.Event()
            outcomes, threads = closed_loop(server.url, args.clients, stop, texts)
            time.sleep(args.seconds)
            new = root / "current.new"
            new.symlink_to("b" if n % 2 == 0 else "a")
            new.replace(link)
            signalled = time.monotonic()
            os.kill(server.pid, signal.SIGHUP)
            deadline = signalled + 60
            while reloaded(server) <= n and time.monotonic() < deadline:
                time.sleep(0.02)
            ended = time.monotonic() + AFTER_RELOAD_S  # the window: signal .. reloaded + 0.5 s
            time.sleep(AFTER_RELOAD_S + 0.5)
            stop.set()
            for t in threads:
                t.join(30)
            before = [o for o in outcomes if signalled - args.seconds + 0.5 <= o[0] < signalled]
            window = [o for o in outcomes if signalled <= o[0] < ended]
            rows.append(
                {
                    "before": summary(before, args.seconds - 0.5),
                    "reload_window": summary(window, ended - signalled),
                    "window_s": round(ended - signalled, 2),
                    "failed": sum(1 for o in outcomes if o[2] != 200),
                }
            )
    finally:
        server.stop()
    reloads = [
        json.loads(line)
        for line in server.request_log.read_text().splitlines()
        if '"model_reloaded"' in line
    ]
    return {
        "rounds": rows,
        "reloads": len(reloads),
        "load_seconds": [line["load_seconds"] for line in reloads],
        "p99_before_ms": statistics.median(r["before"]["p99_ms"] for r in rows),
        "p99_reload_window_ms": statistics.median(r["reload_window"]["p99_ms"] for r in rows),
        "failed": sum(r["failed"] for r in rows),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.rollout_cost", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured load per cell")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/rollout")
    args = parser.parse_args(argv)
    from loadtest.payloads import profile_texts

    texts = profile_texts("short")
    pin_clients()
    with tempfile.TemporaryDirectory(prefix="rollout-cost-") as scratch:
        started = datetime.now(UTC)
        result = {
            "command": "python -m loadtest.rollout_cost "
            + f"--seconds {args.seconds:g} --rounds {args.rounds} --clients {args.clients}",
            "started": started.isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "profile": "short",
            "shadow": shadow_cost(args, texts, Path(scratch)),
            "reload": reload_effect(args, texts, Path(scratch)),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items()}, indent=2))
    print(f"written: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

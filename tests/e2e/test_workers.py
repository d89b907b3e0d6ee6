"""The final stage with two worker processes, started by the container's command: one /metrics
for all workers (exact counts on every scrape, also after a worker was killed and replaced),
one valid JSON log file per worker, SIGTERM under load drains every worker and exits 0, a
worker killed under load is replaced by one that takes no connection before it can predict,
SIGHUP is passed on to each worker (which ignores and logs it), and the metrics directory goes
at exit.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import threading
import time

import httpx
import pytest
from loadgen import check_nothing_dropped, load_then_signal
from multiworker import WorkerServer, json_lines, send_predictions

from serving.state import LOADING

pytestmark = pytest.mark.slow


@pytest.fixture
def two_workers(tmp_path, small_model_dir):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left by an earlier run")  # must go
    (metrics_dir / "notes.txt").write_text("not ours: must stay")
    server = WorkerServer(tmp_path, workers=2, env={"MODEL_DIR": small_model_dir})
    try:
        yield server.start()
    finally:
        server.stop()


def until_counted(server: WorkerServer, expected: float, timeout: float = 10) -> None:
    """A worker counts a request just after sending its answer: allow it that moment."""
    deadline = time.monotonic() + timeout
    while server.predictions_counted() != expected:
        assert time.monotonic() < deadline, (server.predictions_counted(), expected)
        time.sleep(0.05)


def send_until_both_served(server: WorkerServer, minimum: int = 5) -> int:
    """Send batches of requests until every worker answered ``minimum``; return how many."""
    sent = 0
    while sent < 2000:
        results = send_predictions(server.url, 40)
        assert set(results) == {200}, results
        sent += len(results)
        served = [
            sum(e["event"] == "request" and e["route"] == "/predict" for e in server.events(pid))
            for pid in server.worker_pids()
        ]
        if len(served) == 2 and min(served) >= minimum:
            return sent
    raise AssertionError("the kernel never gave one of the workers a connection")


def test_one_metrics_endpoint_counts_every_worker_exactly(two_workers):
    server = two_workers
    assert not (server.metrics_dir / "counter_999999.db").exists()  # emptied at start
    assert (server.metrics_dir / "notes.txt").exists()  # and only our files removed

    sent = send_until_both_served(server)
    until_counted(server, sent)
    for _ in range(12):  # whichever worker answers, the same total
        sample = server.scrape()
        assert server.predictions_counted(sample) == sent
        assert sample[("http_requests_in_progress", ())] == 1  # this scrape, in one worker
        assert sample[("inference_queue_depth", ())] == 0
        [info] = [k for k in sample if k[0] == "model_info"]  # one series, not one per worker
        assert sample[info] == 1
        assert sample[("inference_batch_size_count", ())] >= 1
    more = send_predictions(server.url, 30)
    assert set(more) == {200}
    until_counted(server, sent + 30)

    # One JSON log file per worker, every line valid, every answered request in one of them
    # (each worker writes its lines from a background thread within ~50 ms: poll briefly).
    deadline = time.monotonic() + 10
    while True:
        files = server.log_files()
        assert set(files) == set(server.worker_pids())
        lines = [line for path in files.values() for line in json_lines(path)]
        logged = [x for x in lines if x["event"] == "request" and x["route"] == "/predict"]
        if len(logged) >= sent + 30 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(logged) == sent + 30

    # At exit the metric files go; the directory was there before (the user's): it stays,
    # with what else is in it.
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0, server.output()
    assert sorted(p.name for p in server.metrics_dir.iterdir()) == ["notes.txt"]


def test_killed_worker_is_replaced_and_its_counts_stay(two_workers):
    server = two_workers
    sent = send_until_both_served(server)
    until_counted(server, sent)

    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_for(
        lambda: victim not in server.worker_pids() and len(server.loaded_workers()) == 2,
        60,
        "a replacement worker",
    )
    assert victim not in server.loaded_workers()

    more = send_predictions(server.url, 40)
    assert set(more) == {200}
    until_counted(server, sent + 40)  # the dead worker's requests are still in the total
    for _ in range(8):
        sample = server.scrape()
        assert server.predictions_counted(sample) == sent + 40
        assert sample[("http_requests_in_progress", ())] == 1
    # Its live gauges were dropped by a scrape (mark_process_dead); its counters stay.
    assert not list(server.metrics_dir.glob(f"gauge_live*_{victim}.db"))
    assert (server.metrics_dir / f"counter_{victim}.db").exists()


def test_sigterm_under_load_drains_every_worker_and_exits_0(tmp_path, small_model_dir):
    # Batches linger 300 ms, so requests are inside both workers when SIGTERM arrives.
    server = WorkerServer(
        tmp_path, workers=2, env={"MODEL_DIR": small_model_dir, "MAX_BATCH_WAIT_MS": 300}
    )
    try:
        server.start()
        workers = set(server.worker_pids())
        returncode, outcomes = load_then_signal(
            server.url,
            server.proc,
            signal.SIGTERM,
            clients=6,
            requests=600,
            client_timeout=15,
            build_up=(30, 3),
            build_timeout=30,
            exit_timeout=40,
        )
    finally:
        server.stop()

    assert returncode == 0, server.output()
    check_nothing_dropped(outcomes)  # nothing dropped, no 500, the requests in flight answered

    # Every worker drained and said so in its own log; every 200 a client got was logged.
    files = server.log_files()
    assert workers <= set(files)
    for pid in workers:
        events = json_lines(files[pid])
        assert [e for e in events if e["event"] == "shutdown"], f"worker {pid} did not drain"
        assert 500 not in [e["status"] for e in events if e["event"] == "request"]
    logged_ok = sum(
        e["event"] == "request" and e["route"] == "/predict" and e["status"] == 200
        for pid in workers
        for e in json_lines(files[pid])
    )
    assert logged_ok == sum(r == 200 for _, _, r in outcomes)


def load_around(
    server: WorkerServer,
    during,
    clients: int = 6,
    pause: float = 0.01,
    max_requests: int = 6000,
    max_seconds: float = 90,
) -> list[tuple[object, str]]:
    """``POST /predict`` from ``clients`` threads, a new connection each, while ``during()`` runs
    (then 1 s more); returns (status code or transport error name, body) per request. Bounded:
    at most ``max_requests`` requests and ``max_seconds`` seconds."""
    results: list[tuple[object, str]] = []
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + max_seconds

    def client(n: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=server.url, timeout=10, limits=limits) as http:
            i = 0
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    if len(results) >= max_requests:
                        return
                try:
                    r = http.post("/predict", json={"text": f"client {n} review {i}: good"})
                    result: tuple[object, str] = (r.status_code, r.text)
                except httpx.TransportError as e:
                    result = (type(e).__name__, "")
                with lock:
                    results.append(result)
                i += 1
                time.sleep(pause)  # about clients / pause requests a second

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)  # the load is flowing before anything happens
        during()
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    return results


def test_a_replacement_worker_takes_connections_only_once_it_can_predict(tmp_path, small_model_dir):
    # A worker killed under load is replaced by uvicorn's supervisor. The replacement shares
    # the listening socket: if it accepted before its model was loaded, its share of the
    # connections would get 503 "model is loading" (35 of them at 150 requests a second).
    server = WorkerServer(tmp_path, workers=2, env={"MODEL_DIR": small_model_dir})
    try:
        server.start()
        victim = server.worker_pids()[0]

        def kill_and_wait_for_the_replacement() -> None:
            os.kill(victim, signal.SIGKILL)
            server.wait_for(
                lambda: victim not in server.worker_pids() and len(server.loaded_workers()) == 2,
                60,
                "a replacement worker",
            )

        results = load_around(server, kill_and_wait_for_the_replacement)
    finally:
        server.stop()

    loading = [body for status, body in results if status == 503 and LOADING in body]
    statuses = collections.Counter(status for status, _ in results)
    assert not loading, f"{len(loading)} x 503 {LOADING!r}; all: {statuses}"
    # Only the requests inside the killed worker may fail (their connections die with it).
    failed = {s: n for s, n in statuses.items() if s != 200}
    assert statuses[200] >= 100 and sum(failed.values()) <= 8, statuses


def supervisor_events(server: WorkerServer) -> list[dict]:
    """The launcher's own JSON lines on the shared stdout (the workers' lines there have no
    ``role``; uvicorn's are plain text)."""
    text = (server.tmp_path / "server.out").read_text(errors="replace")
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("role") == "supervisor"]


def test_sighup_goes_from_the_supervisor_to_each_worker_which_ignores_it(tmp_path, small_model_dir):
    # Step 7's stage ignores SIGHUP (the final stage reloads: tests/e2e/test_reload_under_load.py).
    # No PROMETHEUS_MULTIPROC_DIR: the launcher makes a temporary one, and removes it at exit.
    server = WorkerServer(
        tmp_path,
        workers=2,
        env={"MODEL_DIR": small_model_dir},
        metrics_dir=False,
        args=("--app-dir", "lessons/07_fast"),
    )
    try:
        server.start()
        [made] = server.temp_dir.glob("inference-metrics-*")
        workers = sorted(server.worker_pids())
        # uvicorn's supervisor would restart every worker; ours passes the signal on.
        os.kill(server.proc.pid, signal.SIGHUP)
        server.wait_for(
            lambda: (
                [e for e in supervisor_events(server) if e["event"] == "signal_forwarded"]
                and all(
                    [e for e in server.events(pid) if e["event"] == "signal_ignored"]
                    for pid in workers
                )
            ),
            30,
            "signal_forwarded and signal_ignored lines",
        )
        [line] = [e for e in supervisor_events(server) if e["event"] == "signal_forwarded"]
        assert (line["signal"], line["role"], line["pid"]) == (
            "SIGHUP",
            "supervisor",
            server.proc.pid,
        )
        assert sorted(line["workers"]) == workers
        for pid in workers:
            [line] = [e for e in server.events(pid) if e["event"] == "signal_ignored"]
            assert line["signal"] == "SIGHUP"
        assert set(send_predictions(server.url, 40)) == {200}
        assert sorted(server.worker_pids()) == workers  # the same processes, still serving

        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0, server.output()
    finally:
        server.stop()
    assert not made.exists()  # the launcher's own metrics directory is gone
    for pid in workers:
        assert [e for e in server.events(pid) if e["event"] == "shutdown"]  # drained

"""serving.multiprocess: the metrics directory, per-worker log files, dead workers' gauges; and
the batcher's queue-depth reports that replace a scrape-time callback. The real multi-worker
server is tested in tests/e2e/test_workers.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from serving import multiprocess
from serving.batcher import DynamicBatcher


@pytest.fixture
def no_multiproc_env(monkeypatch):
    # setenv first, so the variable prepare_metrics_dir() exports is removed again afterwards.
    monkeypatch.setenv(multiprocess.ENV_VAR, "unset")
    monkeypatch.delenv(multiprocess.ENV_VAR)


def test_prepare_empties_only_our_files_and_exports_the_dir(tmp_path, no_multiproc_env):
    target = tmp_path / "metrics"
    target.mkdir()
    (target / "counter_123.db").write_bytes(b"stale")
    (target / "README").write_text("someone else's")
    assert multiprocess.prepare_metrics_dir(target) == target
    assert sorted(p.name for p in target.iterdir()) == ["README"]
    assert os.environ[multiprocess.ENV_VAR] == str(target)
    assert multiprocess.metrics_dir() == target


def test_prepare_uses_the_env_dir_or_a_new_one(tmp_path, monkeypatch, no_multiproc_env):
    fresh = multiprocess.prepare_metrics_dir()
    try:
        assert fresh.is_dir() and fresh.name.startswith("inference-metrics-")
    finally:
        fresh.rmdir()
    monkeypatch.setenv(multiprocess.ENV_VAR, str(tmp_path / "given"))
    assert multiprocess.prepare_metrics_dir() == tmp_path / "given"


def test_log_path_is_per_worker_only_with_several_workers(tmp_path, monkeypatch, no_multiproc_env):
    assert multiprocess.worker_log_path("logs/requests.log") == Path("logs/requests.log")
    registry = CollectorRegistry()
    assert multiprocess.scrape_registry(registry) is registry  # single process: unchanged
    monkeypatch.setenv(multiprocess.ENV_VAR, str(tmp_path))
    assert multiprocess.worker_log_path("logs/requests.log") == Path(
        f"logs/requests.{os.getpid()}.log"
    )


def test_dead_workers_lose_live_gauges_but_keep_counters(tmp_path, no_multiproc_env):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    dead_pid, live_pid = int(dead.stdout), os.getppid()
    for pid in (dead_pid, live_pid):
        for kind in ("counter", "histogram", "gauge_livesum", "gauge_max"):
            (tmp_path / f"{kind}_{pid}.db").write_bytes(b"")
    assert multiprocess.mark_dead_workers(tmp_path) == [dead_pid]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert f"gauge_livesum_{dead_pid}.db" not in left
    for name in (f"counter_{dead_pid}.db", f"gauge_max_{dead_pid}.db", f"histogram_{dead_pid}.db"):
        assert name in left  # what the dead worker counted still counts
    assert f"gauge_livesum_{live_pid}.db" in left


def test_launcher_without_a_command_prints_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        multiprocess.main([])
    assert exit_info.value.code == 2
    assert "python -m serving.multiprocess" in capsys.readouterr().out


def test_launcher_prepares_then_execs_the_command(tmp_path, monkeypatch, no_multiproc_env):
    calls = []
    monkeypatch.setattr(multiprocess.os, "execv", lambda path, argv: calls.append((path, argv)))
    monkeypatch.setenv(multiprocess.ENV_VAR, str(tmp_path / "m"))
    multiprocess.main(["uvicorn", "inference_server:app", "--workers", "2"])
    multiprocess.main(["--", sys.executable, "-m", "uvicorn"])  # a path is used as it is
    (path, argv), (path2, argv2) = calls
    assert path == str(Path(sys.executable).with_name("uvicorn"))  # this environment's uvicorn
    assert argv == ["uvicorn", "inference_server:app", "--workers", "2"]
    assert (path2, argv2) == (sys.executable, [sys.executable, "-m", "uvicorn"])
    assert (tmp_path / "m").is_dir()


def test_batcher_reports_queue_depth_at_every_change():
    depths: list[int] = []
    entered, release = threading.Event(), threading.Event()

    def predict(texts: list[str]) -> list[str]:
        entered.set()
        release.wait(5)
        return texts

    async def scenario() -> None:
        batcher = DynamicBatcher(
            predict, max_batch_size=8, max_wait_s=0, max_queue=16, on_queue_depth=depths.append
        )
        await batcher.start()
        first = asyncio.create_task(batcher.submit(["a"], 5))
        while not entered.is_set():  # the model is busy with "a"
            await asyncio.sleep(0.001)
        queued = asyncio.create_task(batcher.submit(["b", "c"], 5))
        while batcher.queue_depth < 2:
            await asyncio.sleep(0.001)
        assert depths[-1] == 2  # reported when queued, not at the next scrape
        release.set()
        await asyncio.gather(first, queued)
        assert depths[-1] == 0  # and when the collector took them
        await batcher.stop(1)

    asyncio.run(scenario())


def test_tasks_serve_workers_runs_the_launcher_that_prepares_the_metrics_dir(monkeypatch):
    import tasks
    from serving import serve

    stage, opts, extra = tasks.parse_serve_args(["--workers", "2", "--port", "8123"])
    argv = [str(a) for a in tasks.server_argv(stage, opts.host, opts.port, extra)]
    assert argv[1:3] == ["-m", "serving.serve"] and argv[-2:] == ["--workers", "2"]

    # With --workers > 1 the launcher empties and exports the metrics directory before it
    # starts uvicorn's supervisor (which then spawns the workers with that environment).
    calls: list[str] = []
    monkeypatch.setattr(serve, "prepare_metrics_dir", lambda: calls.append("prepare"))

    class FakeSupervisor:
        def __init__(self, config, sockets):
            calls.append(f"supervise {config.workers}")
            sockets[0].close()

        def run(self) -> None:
            calls.append("run")

    monkeypatch.setattr(serve, "Multiprocess", FakeSupervisor)
    assert serve.main(["--workers", "2", "--port", "0"]) == serve.EXIT_OK
    assert calls == ["prepare", "supervise 2", "run"]


def test_counters_of_events_reach_the_scrape_with_several_workers(tmp_path):
    """Dropped texts and lost log lines are counted where they happen, not read from the app at
    scrape time: a multiprocess scrape (a fresh registry over the workers' files) has them."""
    code = (
        "from serving.metrics import Metrics\n"
        "m = Metrics()\n"
        "m.dropped_texts.inc()\n"
        "m.log_lines_lost.inc(2)\n"
        "print(m.response().body.decode())\n"
    )
    env = {**os.environ, multiprocess.ENV_VAR: str(tmp_path)}
    scrape = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout
    assert "inference_dropped_texts_total 1.0" in scrape
    assert "inference_log_lines_lost_total 2.0" in scrape

"""serving.multiprocess: the metrics directory (removed at exit when the launcher made it),
per-worker log files, dead workers' gauges, start-up that waits for the model with several
workers; the launcher's supervisor (SIGHUP, exit code, WEB_CONCURRENCY); and the batcher's
queue-depth reports that replace a scrape-time callback. The real multi-worker
server is tested in tests/e2e/test_workers.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

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


def test_tasks_serve_workers_runs_the_launcher_that_prepares_the_metrics_dir(
    monkeypatch, tmp_path, no_multiproc_env
):
    import tasks
    from serving import serve

    stage, opts, extra = tasks.parse_serve_args(["--workers", "2", "--port", "8123"])
    argv = [str(a) for a in tasks.server_argv(stage, opts.host, opts.port, extra)]
    assert argv[1:3] == ["-m", "serving.serve"] and argv[-2:] == ["--workers", "2"]

    # With --workers > 1 the launcher empties and exports the metrics directory before it
    # starts uvicorn's supervisor (which then spawns the workers with that environment), and
    # removes the directory it made once the supervisor has stopped them.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    calls: list[str] = []

    class FakeSupervisor:
        def __init__(self, config, sockets):
            directory = Path(os.environ[multiprocess.ENV_VAR])
            assert directory.parent == tmp_path and directory.is_dir()
            (directory / "counter_1.db").write_bytes(b"a worker's counts")
            calls.append(f"supervise {config.workers}")
            sockets[0].close()

        def run(self) -> None:
            calls.append("run")

        def startup_failed(self) -> bool:
            return False

    monkeypatch.setattr(serve, "Supervisor", FakeSupervisor)
    assert serve.main(["--workers", "2", "--port", "0"]) == serve.EXIT_OK
    assert calls == ["supervise 2", "run"]
    assert not list(tmp_path.iterdir())  # the launcher's directory is gone


def test_one_worker_with_a_metrics_dir_set_gets_it_prepared(
    monkeypatch, tmp_path, no_multiproc_env
):
    from serving import serve

    # The image with WEB_CONCURRENCY=1: prometheus-client writes to the directory, so it
    # must exist (a missing one crashed the app at import) and start empty.
    target = tmp_path / "metrics"
    monkeypatch.setenv(multiprocess.ENV_VAR, str(target))
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() adds --app-dir to it
    seen: list[bool] = []

    def run(self, sockets=None):
        seen.append(target.is_dir())
        self.started = True

    monkeypatch.setattr(serve.DrainingServer, "run", run)
    assert serve.main(["--workers", "1", "--port", "0"]) == serve.EXIT_OK
    assert seen == [True] and not target.exists()  # made for the run, removed after


def test_launcher_exits_3_when_a_worker_could_not_start():
    from uvicorn.config import STARTUP_FAILURE

    from serving import serve

    # uvicorn's supervisor stops every worker when one exits with STARTUP_FAILURE (a model
    # that cannot load, in multi-worker mode) and keeps that process in its list.
    stopped = SimpleNamespace(processes=[SimpleNamespace(exitcode=0)])
    failed = SimpleNamespace(processes=[SimpleNamespace(exitcode=STARTUP_FAILURE)])
    assert not serve.Supervisor.startup_failed(stopped)
    assert serve.Supervisor.startup_failed(failed)


def test_workers_default_to_web_concurrency(monkeypatch, capsys):
    from serving import serve

    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    assert serve.parse_args([]).workers == 1
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert serve.parse_args([]).workers == 3  # as uvicorn's own command, and the image
    assert serve.parse_args(["--workers", "1"]).workers == 1  # the option wins
    for bad, message in (("two", "WEB_CONCURRENCY='two'"), ("0", "at least 1")):
        monkeypatch.setenv("WEB_CONCURRENCY", bad)
        with pytest.raises(SystemExit) as exit_:
            serve.parse_args([])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_workers_metrics_dir_removes_what_it_made_and_only_that(
    tmp_path, monkeypatch, no_multiproc_env
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with multiprocess.workers_metrics_dir() as made:  # a new temporary directory
        assert made.parent == tmp_path
        (made / "counter_1.db").write_bytes(b"")
    assert not made.exists()

    new = tmp_path / "new"  # a path that did not exist: made, then removed
    with multiprocess.workers_metrics_dir(new):
        (new / "gauge_livesum_1.db").write_bytes(b"")
    assert not new.exists()
    with multiprocess.workers_metrics_dir(new):  # made, but someone put a file in it since
        (new / "counter_2.db").write_bytes(b"")
        (new / "theirs.txt").write_text("keep")
    assert [p.name for p in new.iterdir()] == ["theirs.txt"]

    given = tmp_path / "given"  # already there (the user's, a mounted volume): it stays
    given.mkdir()
    (given / "notes.txt").write_text("keep")
    monkeypatch.setenv(multiprocess.ENV_VAR, str(given))
    with multiprocess.workers_metrics_dir() as directory:
        assert directory == given
        (given / "histogram_3.db").write_bytes(b"")
    assert [p.name for p in given.iterdir()] == ["notes.txt"]


@pytest.fixture
def signal_handlers():
    """Restore SIGINT, SIGTERM and SIGHUP whatever a lifespan left installed."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {sig: signal.getsignal(sig) for sig in sigs}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def run_startup(app, then=lambda: None) -> str | None:
    """Run the app's lifespan start-up; return /ready's reason at the moment it ended (and
    call ``then`` before the shutdown)."""

    async def scenario() -> str | None:
        async with app.router.lifespan_context(app):
            reason = app.state.server.not_ready_reason()
            then()
            return reason

    return asyncio.run(scenario())


def test_with_several_workers_startup_ends_only_once_the_model_is_loaded(
    start_stage, tmp_path, monkeypatch, no_multiproc_env, signal_handlers
):
    from sentiment_model import ModelLoadError, load_model

    release = threading.Event()

    def gated_load(path):
        release.wait(30)
        return load_model(path)

    # One process: start-up ends at once (uvicorn listens; /ready says 503 while loading).
    assert run_startup(start_stage.app(load_model=gated_load), release.set) == "model is loading"

    # Several workers share one socket, and uvicorn accepts once start-up has ended: it waits.
    app = start_stage.app(load_model=load_model)
    monkeypatch.setenv(multiprocess.ENV_VAR, str(tmp_path))
    assert run_startup(app) is None

    # A model that cannot load fails the start-up: the worker exits 3, and uvicorn's
    # supervisor stops instead of restarting it in a loop (the launcher exits 3).
    def broken(path):
        raise ModelLoadError(path, "no model in this directory")

    app = start_stage.app(load_model=broken)
    with pytest.raises(RuntimeError, match="no model in this directory"):
        run_startup(app)


def test_counters_of_events_reach_the_scrape_with_several_workers(tmp_path):
    """Dropped texts and lost log lines are counted where they happen, not read from the app at
    scrape time: a multiprocess scrape (a fresh registry over the workers' files) has them."""
    code = (
        "from serving.multiprocess import WorkerMetrics\n"
        "m = WorkerMetrics()\n"
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

"""Several worker processes, one set of metrics and clean logs (prometheus-client multiprocess).

With ``--workers N`` every worker is a process with its own memory: its own counters, its own
batcher, its own log handler. Left alone, ``/metrics`` answers from whichever worker the
connection reaches, and a counter seen by Prometheus jumps back and forth between workers.
prometheus-client's multiprocess mode fixes that:

- ``PROMETHEUS_MULTIPROC_DIR`` names a directory. Set in a process *before* prometheus_client
  is imported, it makes every metric value live in a memory-mapped file there, one file per
  process and metric type (``counter_<pid>.db``, ``gauge_livesum_<pid>.db``, ...).
- The process that starts the workers empties that directory first (:func:`prepare_metrics_dir`):
  files left by an earlier run would be added to this run's counts.
- ``GET /metrics`` builds a fresh registry with a ``MultiProcessCollector`` on every request
  (:func:`scrape_registry`, through the app's :class:`WorkerMetrics`): counters and histograms
  are summed over every file, including those of workers that have exited, so a replaced
  worker's requests are not lost.
- Gauges say how to combine workers (``multiprocess_mode`` in serving/metrics.py): requests in
  progress and queue depth are summed over live workers (``livesum``); ``model_info`` is one
  series (``max``).
- A worker that exits removes its live-gauge files itself (:func:`mark_worker_exit`); one that
  was killed is found by the next scrape, because its process is gone (:func:`mark_dead_workers`).
- The workers share one listening socket, and the kernel hands each new connection to whichever
  worker accepts first. So a worker must not accept before it can predict, or a replacement
  for a killed worker answers its share with 503 "model is loading": in this mode
  (:func:`several_workers`) the final stage's start-up waits for the model.

Without ``PROMETHEUS_MULTIPROC_DIR`` nothing here changes anything: one process, each app with
its own registry (the tests build several apps in one process).

``python -m serving.serve --workers N`` (what ``python3 tasks.py serve --workers N`` and the
container run) prepares the directory with :func:`workers_metrics_dir` and removes it again at
exit. uvicorn's or gunicorn's own command needs this module in front::

    python -m serving.multiprocess uvicorn inference_server:app --workers 2 --port 8000

It prepares the directory (``$PROMETHEUS_MULTIPROC_DIR`` if set, else a new temporary one) and
then *replaces itself* with the command (``exec``: same process id, so SIGTERM reaches uvicorn),
so nothing is left to remove the directory at exit: set ``PROMETHEUS_MULTIPROC_DIR`` to a
directory of your own (it is emptied at every start). The same works in front of gunicorn
(``python -m serving.multiprocess gunicorn -k uvicorn_worker.UvicornWorker -w 2
inference_server:app``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from serving.metrics import Metrics

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir() -> Path | None:
    """The multiprocess metrics directory, or None in single-process mode."""
    value = os.environ.get(ENV_VAR)
    return Path(value) if value else None


def prepare_metrics_dir(path: str | Path | None = None) -> Path:
    """Create and empty the metrics directory, and export it to the workers' environment.

    Call it in the process that starts the workers, before it starts them. ``path`` defaults to
    ``$PROMETHEUS_MULTIPROC_DIR``, else a new temporary directory. Only the ``.db`` files
    prometheus-client writes are removed, so a directory given by mistake loses nothing else.
    """
    if path is None:
        path = os.environ.get(ENV_VAR) or tempfile.mkdtemp(prefix="inference-metrics-")
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[ENV_VAR] = str(directory)
    return directory


@contextlib.contextmanager
def workers_metrics_dir(path: str | Path | None = None) -> Iterator[Path]:
    """:func:`prepare_metrics_dir` for the life of a launcher, and clean up after it.

    At exit the metric files go, and the directory too if this call created it (a temporary
    one, or a path that did not exist yet) and nothing else was put in it since. A directory
    that was already there (given by the user, a mounted volume) stays, with whatever else is
    in it: only the ``.db`` files prometheus-client writes are removed, as at start.
    """
    given = path if path is not None else os.environ.get(ENV_VAR) or None
    created = given is None or not Path(given).exists()
    directory = prepare_metrics_dir(given)
    try:
        yield directory
    finally:
        for leftover in directory.glob("*.db"):
            leftover.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):  # not empty: someone else's files, keep them
                directory.rmdir()


def several_workers() -> bool:
    """Whether this process is one of several workers sharing a socket and a metrics directory.

    Every multi-worker command sets ``PROMETHEUS_MULTIPROC_DIR`` (``python -m serving.serve
    --workers N``, ``python -m serving.multiprocess ...``), so the same variable that switches
    the metrics and the log files to per-worker mode says it.
    """
    return metrics_dir() is not None


def worker_log_path(path: str | Path) -> Path:
    """``logs/requests.log`` -> ``logs/requests.<pid>.log`` when several workers may run.

    One file per worker: a rotating file handler is not safe with several writers (each
    process rotates on its own and they overwrite each other's lines). Read them all with
    ``pd.concat(pd.read_json(p, lines=True) for p in Path("logs").glob("requests.*.log"))``.
    """
    path = Path(path)
    if metrics_dir() is None:
        return path
    return path.with_name(f"{path.stem}.{os.getpid()}{path.suffix}")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` is still running (a zombie, exited but not reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (not Linux): trust kill(0)
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def mark_dead_workers(directory: Path | None = None) -> list[int]:
    """Remove the live-gauge files of workers whose process is gone; return their pids.

    Counters and histograms of a dead worker stay (its requests happened); only ``live*``
    gauges (in progress, queue depth) are dropped, or they would count a dead worker's last
    value forever. A pid reused by an unrelated process keeps its files until that one exits.
    """
    directory = directory or metrics_dir()
    if directory is None:
        return []
    pids = set()
    for file in directory.glob("gauge_live*_*.db"):
        pid = file.stem.rpartition("_")[2]
        if pid.isdigit():
            pids.add(int(pid))
    dead = sorted(pid for pid in pids if pid != os.getpid() and not _alive(pid))
    for pid in dead:
        mark_process_dead(pid, str(directory))
    return dead


def mark_worker_exit() -> None:
    """At a worker's clean exit: drop its live gauges (no-op in single-process mode)."""
    directory = metrics_dir()
    if directory is not None:
        mark_process_dead(os.getpid(), str(directory))


def scrape_registry(own: CollectorRegistry) -> CollectorRegistry:
    """The registry to answer ``GET /metrics`` from: the app's own in single-process mode,
    else a new one that reads every worker's files (built per request, as prometheus-client
    requires: a collector kept across requests would miss files of workers started later)."""
    directory = metrics_dir()
    if directory is None:
        return own
    mark_dead_workers(directory)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry


class WorkerMetrics(Metrics):
    """:class:`serving.metrics.Metrics` of an app that may run as one of several workers: its
    ``/metrics`` sums every worker's files, and ``model_info`` stays one shared series. In one
    process (``PROMETHEUS_MULTIPROC_DIR`` unset) exactly :class:`~serving.metrics.Metrics`."""

    def set_model(self, version: str, sklearn_version: str) -> None:
        if metrics_dir() is None:  # several workers: each sets the same one series
            self.model_info.clear()
        self.model_info.labels(version, sklearn_version).set(1)

    def response(self) -> Response:
        return self.scrape(scrape_registry(self.registry))  # every worker's files


def main(argv: list[str] | None = None) -> None:
    """``python -m serving.multiprocess COMMAND [ARGS...]``: prepare, then exec the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if argv else 2)
    directory = prepare_metrics_dir()
    # A bare name is looked up next to this interpreter first (.venv/bin/uvicorn): it works
    # without an activated environment and never picks another installation's uvicorn.
    program = argv[0]
    if os.sep not in program:
        beside = Path(sys.executable).with_name(program)
        program = str(beside) if beside.is_file() else shutil.which(program) or program
    print(f"{ENV_VAR}={directory}", file=sys.stderr, flush=True)
    os.execv(program, [argv[0], *argv[1:]])


if __name__ == "__main__":
    main()

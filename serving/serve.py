"""Run a stage under uvicorn, and exit with a code that says how its shutdown went.

    python -m serving.serve [--app-dir DIR] [APP] [--host H] [--port P] [--workers N]
                            [--log-level L] [--http H] [--limit-concurrency N]
                            [--timeout-keep-alive S]

APP defaults to ``inference_server:app`` (the final stage) and ``--app-dir`` to ``.``, so from
the repository root ``python -m serving.serve --port 8000`` serves the final stage and
``python -m serving.serve --app-dir lessons/02_validated`` serves stage 2. The options mean
what they mean to ``uvicorn``, except that ``--http`` defaults to
``serving.protocol:LimitedHttpToolsProtocol``: uvicorn's httptools protocol plus the limits only
a connection can enforce (head size 431, head and body read timeouts 408, connection cap 503;
``INFERENCE_MAX_HEADER_BYTES``, ``INFERENCE_HEADER_TIMEOUT_S``, ``INFERENCE_BODY_TIMEOUT_S``,
``INFERENCE_MAX_CONNECTIONS``). ``--http auto`` (or ``h11``, ``httptools``) runs uvicorn's own
protocol instead, as plain ``uvicorn inference_server:app`` does.

Exit codes (one worker):

* ``0``: stopped by SIGTERM or Ctrl-C (SIGINT) after a complete drain: every accepted request
  was answered and every queued text run;
* ``3``: the server never started (uvicorn's own start-up failure code); a bad setting exits
  ``1`` with the message naming the variable, as under plain uvicorn;
* ``4``: the drain timed out (``INFERENCE_DRAIN_TIMEOUT_S``): some accepted texts were refused
  with 503 instead of being run, or a client that never read its answers was still connected
  at the drain deadline and its connection was closed by force (``connections_closed_by_force``
  in the ``shutdown`` line).

Plain ``uvicorn inference_server:app`` runs the same app and drains the same way, but exits
143 on SIGTERM: uvicorn re-raises the signal after its graceful shutdown, the Unix convention
for "stopped because it was told to" (lessons/05_lifecycle/README.md). Here a second signal
during the drain is ignored (logged), where uvicorn would stop waiting for open requests;
the drain is bounded anyway, by the request and drain timeouts. (The final stage installs its
own handler in front, ``serving.shutdown.ShutdownSignals``: it takes the second signal itself,
logs it as ``second_signal`` and cuts stalled uploads short, under either command.)

With ``--workers N`` (N > 1; default ``$WEB_CONCURRENCY``, else 1, as for uvicorn) uvicorn's
own supervisor runs N worker processes, each an ordinary uvicorn server sharing one listening
socket and one metrics directory (serving/multiprocess.py; the supervisor creates the workers
itself, and offers no public way to use another server class). It replaces a worker that dies,
and the final stage's start-up waits for the model in this mode, so a worker (a replacement
too) takes connections only once it can predict; nothing listens during the first load, and
connections wait in the socket's backlog. SIGTERM drains every worker, /ready flips in each,
and the launcher exits 0 once the supervisor has stopped them, or 3 if a worker could not
start (a model that cannot load: the supervisor stops the others rather than restart it in a
loop). Each worker's drain outcome is in its ``shutdown`` log line (``drain_complete``), not in
the exit code. The metrics directory is removed at exit if the launcher created it. With one
worker and ``PROMETHEUS_MULTIPROC_DIR`` set, the server is in multi-process mode too: it
prepares the directory, and its start-up waits for the model.

SIGHUP (a closed terminal, or ``kill -HUP``) goes to the app: the rollout stage reloads its
model (lessons/12_rollout), earlier stages log ``signal_ignored`` and go on serving. With
several workers the supervisor passes it on to every started worker (``signal_forwarded``)
instead of restarting them all as uvicorn's would, so the signal means the same with one
worker and with several (see :class:`Supervisor`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from serving.logs import JsonLineFormatter
from serving.multiprocess import metrics_dir, workers_metrics_dir
from serving.shutdown import drains_complete

EXIT_OK = 0
EXIT_STARTUP_FAILED = 3  # uvicorn.config.STARTUP_FAILURE
EXIT_DRAIN_INCOMPLETE = 4
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The default --http: imported by uvicorn by name, like any --http value.
PROTOCOL = "serving.protocol:LimitedHttpToolsProtocol"

logger = logging.getLogger("uvicorn.error")


def launcher_log() -> logging.Logger:
    """The launcher's own events as JSON lines on stdout, like the app's (whose log belongs to
    the app, and to each worker with several)."""
    log = logging.getLogger("inference.launcher")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonLineFormatter())
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # not also through the app's "inference" handlers
    return log


def log_ignored_signal(sig: int, role: str) -> None:
    """Say that ``sig`` arrived and was ignored on purpose (one JSON line)."""
    launcher_log().warning(
        "signal_ignored",
        extra={"signal": signal.Signals(sig).name, "role": role, "pid": os.getpid()},
    )


class DrainingServer(uvicorn.Server):
    """uvicorn's Server with the signal handling of a complete drain.

    Only public extension points are overridden: ``capture_signals`` (the signals are not
    re-raised after shutdown; the exit code reports the drain instead; SIGHUP is ignored and
    logged, for every stage, where by default it would kill the process without a drain) and
    ``handle_exit`` (a second signal does not cut the drain short).
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.received: list[int] = []  # the signals that asked this server to stop

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handle SIGINT, SIGTERM and SIGHUP while serving; restore the previous handlers after."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signals are delivered to the main thread only
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self.handle_hup)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Start the graceful shutdown; a repeated signal only says the drain is under way."""
        self.received.append(sig)
        if self.should_exit:
            # uvicorn would set force_exit here, skip the wait for open requests and the app's
            # shutdown, and the requests still running would end as 500s.
            logger.warning(
                "%s received again: still draining (bounded by the request and drain timeouts)",
                signal.Signals(sig).name,
            )
            return
        self.should_exit = True

    def handle_hup(self, sig: int, frame: FrameType | None) -> None:
        """SIGHUP: logged and ignored (the final stage's own handler does the same while its
        app runs, in its own log; this one covers every stage, and start-up)."""
        log_ignored_signal(sig, "server")


class Supervisor(Multiprocess):
    """uvicorn's supervisor of several workers; SIGHUP is passed on to each worker.

    uvicorn restarts every worker on SIGHUP, one by one, each new worker started before the old
    one is stopped. Meanwhile the supervisor's loop is blocked: a worker that dies is not
    replaced and SIGTERM is not handled until the last new worker has loaded its model, or the
    restart gives up after ``timeout_worker_healthcheck`` (5 s by default, which a worker's
    imports plus its model load can exceed on a busy machine). So SIGHUP means here what it
    means to one worker: it is sent on to every worker that has started (logged as
    ``signal_forwarded``), and each worker's app decides (the rollout stage reloads its model
    in place, earlier stages ignore it and log ``signal_ignored``). A worker still starting
    gets it once it has started (before its app installs its handler SIGHUP would kill it, and
    it may have read the model source before the signal): ``signal_forwarded`` lists both.
    """

    pending_hup: set[int] | None = None  # started workers that still owe a SIGHUP

    def handle_hup(self) -> None:
        """Called from the supervisor's loop (not in the signal handler) for each SIGHUP."""
        sent, later = [], []
        for process in self.processes:
            if process.pid is None:
                continue
            if process.is_ready(timeout=1):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)
                    sent.append(process.pid)
            else:
                later.append(process.pid)
        self.pending_hup = (self.pending_hup or set()) | set(later)
        launcher_log().info(
            "signal_forwarded",
            extra={
                "signal": "SIGHUP",
                "role": "supervisor",
                "pid": os.getpid(),
                "workers": sent,
                "when_started": later,
            },
        )

    def keep_subprocess_alive(self) -> None:
        """uvicorn's check (every 0.5 s), then a SIGHUP to each pending worker now started."""
        Multiprocess.keep_subprocess_alive(self)
        if not self.pending_hup:
            return
        for process in self.processes:
            if process.pid in self.pending_hup and process.is_ready(timeout=1):
                self.pending_hup.discard(process.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)
        alive = {process.pid for process in self.processes}
        self.pending_hup &= alive  # a replaced worker's successor reads the source at start

    def startup_failed(self) -> bool:
        """Whether the supervisor stopped because a worker could not start (exit code 3)."""
        return any(process.exitcode == STARTUP_FAILURE for process in self.processes)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (a subset of uvicorn's, same meanings)."""
    parser = argparse.ArgumentParser(
        prog="python -m serving.serve",
        description="Serve a stage with uvicorn; exit 0 after a complete drain.",
    )
    parser.add_argument("app", nargs="?", default="inference_server:app", help="module:app")
    parser.add_argument("--app-dir", default=".", help="directory to import the app from")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--workers", type=int, help="worker processes (default: $WEB_CONCURRENCY, else 1)"
    )
    parser.add_argument("--log-level", default="info", help="uvicorn's own log level")
    parser.add_argument(
        "--http",
        default=PROTOCOL,
        help="HTTP protocol: module:class, or auto, h11, httptools (default: %(default)s)",
    )
    parser.add_argument("--limit-concurrency", type=int, default=None)
    parser.add_argument("--timeout-keep-alive", type=int, default=5)
    args = parser.parse_args(argv)
    if args.workers is None:  # as uvicorn's own command, and what a platform sets
        value = os.environ.get("WEB_CONCURRENCY") or "1"
        try:
            args.workers = int(value)
        except ValueError:
            parser.error(f"WEB_CONCURRENCY={value!r} is not a number of workers")
    if args.workers < 1:
        parser.error("--workers (or WEB_CONCURRENCY) must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until it is stopped; return the exit code (see the module docstring)."""
    args = parse_args(argv)
    sys.path.insert(0, args.app_dir)  # as `uvicorn --app-dir`
    config = uvicorn.Config(
        args.app,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        http=args.http,
        limit_concurrency=args.limit_concurrency,
        timeout_keep_alive=args.timeout_keep_alive,
        ws="none",  # no WebSocket route: an upgrade is plain HTTP (serving/protocol.py)
    )
    # One /metrics over every worker (serving/multiprocess.py): the directory is emptied before
    # the first starts and removed after the last one stops. Also with one worker when
    # PROMETHEUS_MULTIPROC_DIR is set (the image with WEB_CONCURRENCY=1): prometheus-client
    # needs the directory, and stale files would add an earlier run's counts.
    shared = config.workers > 1 or metrics_dir() is not None
    with workers_metrics_dir() if shared else contextlib.nullcontext():
        if config.workers > 1:
            supervisor = Supervisor(config, sockets=[config.bind_socket()])
            supervisor.run()
            return EXIT_STARTUP_FAILED if supervisor.startup_failed() else EXIT_OK
        server = DrainingServer(config)
        server.run()
    if not server.started:
        return EXIT_STARTUP_FAILED
    return EXIT_OK if drains_complete() else EXIT_DRAIN_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())

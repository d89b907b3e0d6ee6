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
  with 503 instead of being run.

Plain ``uvicorn inference_server:app`` runs the same app and drains the same way, but exits
143 on SIGTERM: uvicorn re-raises the signal after its graceful shutdown, the Unix convention
for "stopped because it was told to" (lessons/04_batched/README.md). Here a second signal
during the drain is ignored (logged), where uvicorn would stop waiting for open requests;
the drain is bounded anyway, by the request and drain timeouts. (The final stage installs its
own handler in front, ``serving.shutdown.ShutdownSignals``: it takes the second signal itself,
logs it as ``second_signal`` and cuts stalled uploads short, under either command.)

With ``--workers N`` (N > 1) uvicorn's own supervisor runs N worker processes, each an
ordinary uvicorn server sharing one metrics directory (serving/multiprocess.py; the
supervisor creates the workers itself, and offers no public way to use
another server class): SIGTERM drains every worker, /ready flips in each, and the launcher
exits 0 once the supervisor has stopped them. Each worker's drain outcome is in its
``shutdown`` log line (``drain_complete``), not in the exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

import uvicorn
from uvicorn.supervisors import Multiprocess

from serving.multiprocess import prepare_metrics_dir
from serving.shutdown import drains_complete

EXIT_OK = 0
EXIT_STARTUP_FAILED = 3  # uvicorn.config.STARTUP_FAILURE
EXIT_DRAIN_INCOMPLETE = 4
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The default --http: imported by uvicorn by name, like any --http value.
PROTOCOL = "serving.protocol:LimitedHttpToolsProtocol"

logger = logging.getLogger("uvicorn.error")


class DrainingServer(uvicorn.Server):
    """uvicorn's Server with the signal handling of a complete drain.

    Only public extension points are overridden: ``capture_signals`` (the signals are not
    re-raised after shutdown; the exit code reports the drain instead) and ``handle_exit``
    (a second signal does not cut the drain short).
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.received: list[int] = []  # the signals that asked this server to stop

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM while serving; restore the previous handlers after."""
        if threading.current_thread() is not threading.main_thread():
            yield  # signals are delivered to the main thread only
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
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
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--log-level", default="info", help="uvicorn's own log level")
    parser.add_argument(
        "--http",
        default=PROTOCOL,
        help="HTTP protocol: module:class, or auto, h11, httptools (default: %(default)s)",
    )
    parser.add_argument("--limit-concurrency", type=int, default=None)
    parser.add_argument("--timeout-keep-alive", type=int, default=5)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
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
    if config.workers > 1:
        prepare_metrics_dir()  # one /metrics over every worker (serving/multiprocess.py)
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return EXIT_OK
    server = DrainingServer(config)
    server.run()
    if not server.started:
        return EXIT_STARTUP_FAILED
    return EXIT_OK if drains_complete() else EXIT_DRAIN_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())

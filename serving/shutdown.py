"""Graceful shutdown: flip readiness the moment a signal arrives, and report how the drain ended.

Under plain ``uvicorn inference_server:app`` the process exits 143 ("terminated by SIGTERM") after
a graceful shutdown: uvicorn re-raises the signal it caught, the Unix convention for a process
that stopped because it was told to. ``python -m serving.serve`` runs the same app and exits 0
after a complete drain instead (see serving/serve.py); it learns how the drain ended from
:func:`record_drain`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any


class ShutdownSignals:
    """SIGINT and SIGTERM, in front of the server's own handler.

    uvicorn handles a signal by closing its listening socket and waiting for open requests
    before it runs the lifespan shutdown, so without this /ready would still say "ready" during
    the whole drain, and one stalled upload could hold the process for the whole body timeout.

    First signal: ``on_first`` (readiness flips, stalled uploads get the drain timeout), then
    the server's handler (uvicorn drains as usual). Second: ``on_second`` (cut stalled uploads
    now), logged and *not* passed on, so uvicorn stays on its graceful path: requests answered,
    lifespan shutdown run, the shutdown line written. Third: passed on (uvicorn's force quit).
    Installed only in the main thread (where signals are delivered); in tests the app runs in
    another thread and nothing is installed.

    SIGHUP (a closed terminal, ``kill -HUP``) would end the process at once, without a drain:
    it calls ``on_hup`` when given (the rollout stage reloads its model, serving/rollout.py),
    else it is ignored and logged (``signal_ignored``), in the single process and in each of
    several workers.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    IGNORED = (signal.SIGHUP,)

    def __init__(
        self,
        on_first: Callable[[], None],
        on_second: Callable[[], None],
        logger: logging.Logger,
        on_hup: Callable[[], None] | None = None,
    ) -> None:
        self.on_hup = on_hup
        self.on_first = on_first
        self.on_second = on_second
        self.logger = logger
        self.count = 0
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        """Put the hook in front of the current SIGINT and SIGTERM handlers; ignore SIGHUP."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        for sig in self.IGNORED:
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._ignore)

    def _ignore(self, signum: int, frame: FrameType | None) -> None:
        if self.on_hup is not None:
            self.on_hup()
            return
        self.logger.warning("signal_ignored", extra={"signal": signal.Signals(signum).name})

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count == 1:
            self.on_first()
        elif self.count == 2:
            self.logger.warning("second_signal", extra={"signal": signal.Signals(signum).name})
            self.on_second()
            return
        previous = self.previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # no server handler: behave as by default
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    def uninstall(self) -> None:
        """Restore the previous handlers (the server's), which decide how the process exits
        (and, under ``python -m serving.serve``, go on ignoring SIGHUP)."""
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
        self.previous.clear()


# How this process's app(s) ended their drain: one entry per lifespan shutdown. A process-wide
# record, because the launcher that reads it owns the process, not the app.
_drains: list[bool] = []


def record_drain(complete: bool) -> None:
    """Note that an app finished its shutdown; ``complete`` is False if its drain timed out."""
    _drains.append(complete)


def drains_complete() -> bool:
    """True unless an app in this process reported a drain that timed out."""
    return all(_drains)

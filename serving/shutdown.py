"""Graceful shutdown: flip readiness the moment SIGTERM arrives, and report how the drain ended.

Under plain ``uvicorn inference_server:app`` the process exits 143 ("terminated by SIGTERM") after
a graceful shutdown: uvicorn re-raises the signal it caught, the Unix convention for a process
that stopped because it was told to. ``python -m serving.serve`` runs the same app and exits 0
after a complete drain instead (see serving/serve.py); it learns how the drain ended from
:func:`record_drain`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


class SigtermHook:
    """Run a callback the moment SIGTERM arrives, then let the server's own handler run.

    uvicorn handles SIGTERM by closing its listening socket and waiting for open requests
    before it runs the lifespan shutdown, so without this hook /ready would still say "ready"
    during the whole drain. Installed only in the main thread (where signals are delivered);
    in tests the app runs in another thread and the hook does nothing.
    """

    def __init__(self, on_term: Callable[[], None]) -> None:
        self.on_term = on_term
        self.previous: Callable | int | None = None
        self.installed = False

    def install(self) -> None:
        """Put the hook in front of the current SIGTERM handler."""
        if threading.current_thread() is not threading.main_thread():
            return
        self.previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._handle)
        self.installed = True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.on_term()
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous != signal.SIG_IGN:  # no server handler: behave as by default
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    def uninstall(self) -> None:
        """Restore the previous handler (the server's), which decides how the process exits."""
        if not self.installed:
            return
        signal.signal(signal.SIGTERM, self.previous)  # type: ignore[arg-type]
        self.installed = False


# How this process's app(s) ended their drain: one entry per lifespan shutdown. A process-wide
# record, because the launcher that reads it owns the process, not the app.
_drains: list[bool] = []


def record_drain(complete: bool) -> None:
    """Note that an app finished its shutdown; ``complete`` is False if its drain timed out."""
    _drains.append(complete)


def drains_complete() -> bool:
    """True unless an app in this process reported a drain that timed out."""
    return all(_drains)

"""Exercise 4 of lesson 5: what the first, second and third SIGTERM do to a draining server.

``ShutdownSignals`` (serving/shutdown.py) sits in front of the server's own handler. Here a
recorder stands in for uvicorn's handler, and the process sends itself SIGTERM three times.

Run from the repository root:
    .venv/bin/python lessons/05_lifecycle/solutions/signals_check.py
"""

from __future__ import annotations

import logging
import os
import signal
import time

from serving.shutdown import ShutdownSignals


def three_signals() -> list[str]:
    """What happened at each of three SIGTERMs, in order."""
    events: list[str] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.append(f"logged {record.getMessage()}")

    log = logging.getLogger("lesson05.signals")
    log.addHandler(Recorder())
    log.propagate = False
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: events.append("server handler"))
    hook = ShutdownSignals(
        on_first=lambda: events.append("begin_shutdown: readiness flips"),
        on_second=lambda: events.append("on_second"),
        logger=log,
    )
    hook.install()
    try:
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # Python runs the handler at its next check, in the main thread
    finally:
        hook.uninstall()
        signal.signal(signal.SIGTERM, previous)
    return events


if __name__ == "__main__":
    for number, event in enumerate(three_signals(), 1):
        print(number, event)

"""Readiness, back-pressure answers and graceful shutdown for the final (batched) stage.

The server's life: *loading* (the process answers /health, /ready says 503) -> *ready* ->
*draining* after SIGTERM (/ready and new predictions say 503, accepted requests finish) -> exit.
A model that cannot be loaded leaves the process up but never ready, with the loader's message
as the reason, so an orchestrator shows why instead of restarting it in a loop.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from sentiment_model import Prediction, SentimentModel
from serving.batcher import (
    BatcherClosedError,
    DynamicBatcher,
    QueueFullError,
    RequestTimeoutError,
    Submission,
)
from serving.metrics import Metrics

RETRY_AFTER_S = 1  # a full queue drains in milliseconds; one second is a polite back-off
LOADING = "model is loading"
DRAINING = "server is shutting down"


@dataclass
class ServerState:
    """What the routes need to know about the model and the server's life."""

    metrics: Metrics
    model: SentimentModel | None = None
    batcher: DynamicBatcher[Prediction] | None = None
    load_error: str | None = None
    draining: bool = False

    @property
    def version(self) -> str | None:
        """The loaded model's version, or None."""
        return self.model.version if self.model is not None else None

    def not_ready_reason(self) -> str | None:
        """Why this instance should not get traffic now, or None when it is ready."""
        if self.draining:
            return DRAINING
        if self.load_error is not None:
            return self.load_error
        if self.model is None or self.batcher is None:
            return LOADING
        return None

    def begin_drain(self) -> None:
        """Stop taking new predictions (SIGTERM); requests already accepted still finish."""
        self.draining = True


# The dependencies are `async def` although they never wait: FastAPI runs a plain `def`
# dependency in its thread pool, which costs a thread hop per request for an attribute lookup.
async def server_state(request: Request) -> ServerState:
    """The app's :class:`ServerState` (set by the lifespan)."""
    return request.app.state.server


async def ready_state(state: Annotated[ServerState, Depends(server_state)]) -> ServerState:
    """The state, or 503 with the reason when the server cannot predict now."""
    reason = state.not_ready_reason()
    if reason is not None:
        state.metrics.rejections.labels("not_ready").inc()
        raise HTTPException(503, reason)
    return state


async def predict_batched(
    state: ServerState, texts: list[str], timeout: float
) -> Submission[Prediction]:
    """Queue ``texts`` for the model; turn back-pressure into the right HTTP answer.

    Full queue -> 503 with Retry-After at once; waited longer than ``timeout`` -> 504 (the
    texts are dropped, never run later); shutting down -> 503. A model error propagates (500).
    """
    assert state.batcher is not None  # guaranteed by ready_state
    try:
        return await state.batcher.submit(texts, timeout)
    except QueueFullError:
        state.metrics.rejections.labels("queue_full").inc()
        raise HTTPException(
            503, "server is overloaded, retry later", headers={"Retry-After": str(RETRY_AFTER_S)}
        ) from None
    except RequestTimeoutError:
        state.metrics.rejections.labels("timeout").inc()
        raise HTTPException(504, f"no result within {timeout:g} s") from None
    except BatcherClosedError:
        state.metrics.rejections.labels("not_ready").inc()
        raise HTTPException(503, DRAINING) from None


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

    def uninstall(self, clean_exit: bool) -> None:
        """Restore the previous handler. With ``clean_exit`` the process exits 0.

        uvicorn (>= 0.29) re-raises a captured SIGTERM once its graceful shutdown is done, so
        the process would die "killed by SIGTERM" (143) even after draining every request.
        After a complete drain that SIGTERM was fully handled: drop it from uvicorn's list
        (``Server._captured_signals``, uvicorn's only hook for this; checked by
        tests/test_shutdown.py, which needs exit code 0).
        """
        if not self.installed:
            return
        signal.signal(signal.SIGTERM, self.previous)  # type: ignore[arg-type]
        self.installed = False
        captured = getattr(getattr(self.previous, "__self__", None), "_captured_signals", None)
        if clean_exit and isinstance(captured, list):
            captured[:] = [s for s in captured if s != signal.SIGTERM]

"""The final stage's server state: loading -> ready -> draining.

The server's life: *loading* (the process answers /health, /ready says 503) -> *ready* ->
*draining* after SIGTERM (/ready and new predictions say 503, accepted requests finish) -> exit.
A model that cannot be loaded leaves the process up but never ready, with the loader's message
as the reason, so an orchestrator shows why instead of restarting it in a loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from sentiment_model import Prediction, SentimentModel
from serving.batcher import DynamicBatcher

LOADING = "model is loading"
DRAINING = "server is shutting down"

# Retry-After (seconds) of each not-ready 503: a load takes a few seconds; a draining instance
# will not come back, so try again at once (a balancer sends the retry elsewhere); a failed
# load needs an operator, so a client should back off for longer.
RETRY_AFTER_LOADING_S = 5
RETRY_AFTER_DRAINING_S = 1
RETRY_AFTER_LOAD_FAILED_S = 60


def retry_after_s(reason: str) -> int:
    """The ``Retry-After`` of a 503 given for ``reason`` (see ``not_ready_reason``)."""
    if reason == DRAINING:
        return RETRY_AFTER_DRAINING_S
    if reason == LOADING:
        return RETRY_AFTER_LOADING_S
    return RETRY_AFTER_LOAD_FAILED_S


class NotReadyError(Exception):
    """A prediction route was called while the server cannot predict (loading, failed, draining).

    Raised by the ``ready_state`` dependency; ``serving.rejections`` answers it with 503.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ServerState:
    """What the routes need to know about the model and the server's life."""

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

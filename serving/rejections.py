"""Back-pressure as HTTP: the one exception handler for requests the server refuses to run.

| raised by                          | answer                  | ``inference_rejections_total`` |
|------------------------------------|-------------------------|--------------------------------|
| ``QueueFullError`` (batcher)       | 503, ``Retry-After: 1`` | ``reason="queue_full"``        |
| ``RequestTimeoutError`` (batcher)  | 504                     | ``reason="timeout"``           |
| ``BatcherClosedError`` (batcher)   | 503, ``Retry-After: 1`` | ``reason="not_ready"``         |
| ``NotReadyError`` (ready_state)    | 503 with the reason and | ``reason="not_ready"``         |
|                                    | its ``Retry-After``     |                                |

Every 503 carries ``Retry-After`` (seconds: serving/state.py), so a client knows when to come
back instead of retrying at once.

A timed-out request's texts are dropped by the batcher, never run later. A model error is not
a rejection: it propagates to ObservabilityMiddleware (500).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from serving.batcher import BatcherClosedError, QueueFullError, RequestTimeoutError
from serving.errors import http_error
from serving.metrics import Metrics
from serving.state import DRAINING, NotReadyError, retry_after_s

RETRY_AFTER_S = 1  # a full queue drains in milliseconds; one second is a polite back-off
REJECTIONS = (QueueFullError, RequestTimeoutError, BatcherClosedError, NotReadyError)


def as_http_error(exc: Exception) -> tuple[str, HTTPException]:
    """The rejection ``reason`` label and the HTTP answer for one of :data:`REJECTIONS`."""
    if isinstance(exc, QueueFullError):
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        return "queue_full", HTTPException(503, "server is overloaded, retry later", headers)
    if isinstance(exc, RequestTimeoutError):
        return "timeout", HTTPException(504, str(exc))  # "no result within 2 s"
    reason = exc.reason if isinstance(exc, NotReadyError) else DRAINING  # or BatcherClosedError
    headers = {"Retry-After": str(retry_after_s(reason))}
    return "not_ready", HTTPException(503, reason, headers)


def install_rejection_handler(app: FastAPI, metrics: Metrics) -> None:
    """Answer the batcher's refusals (and NotReadyError) with 503/504, counting each one."""

    async def rejected(request: Request, exc: Exception) -> JSONResponse:
        reason, answer = as_http_error(exc)
        metrics.rejections.labels(reason).inc()
        return await http_error(request, answer)  # same body, log fields and request id

    for error in REJECTIONS:
        app.add_exception_handler(error, rejected)

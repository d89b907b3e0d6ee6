"""Limits against slow, stalled and broken clients, and the answers that never reach the app.

What an ASGI app can do by itself (so the plain ``uvicorn inference_server:app`` has it):

* ``ReadTimeoutMiddleware``: a request body must arrive within ``BODY_TIMEOUT_S`` (408), and
  once shutdown has begun within ``DRAIN_TIMEOUT_S``, so one stalled upload cannot keep the
  process alive after SIGTERM. A client that leaves while its body is read is marked
  ``ABORTED``;
* ``RouteBodyLimitMiddleware``: the body limit of stage 2, sized to what each route can need;
* ``WireObservabilityMiddleware``: the observability middleware of stage 3, counting and
  logging what the client actually received (``WIRE_STATUS``) where it differs from what the
  app sent: a 408 or 400 the connection answered instead, or nothing at all (``ABORTED``).

What needs the connection itself (``serving/protocol.py``, run with ``--http``): the header and
trailer size limit (431), chunks per body (413), the header read timeout, the connection cap and
its eviction of idle connections, refused upgrades, the write timeout and the drain deadline,
and logging the answers uvicorn gives on its own (400 for a request it cannot parse). The
protocol reports those through the :class:`WireObserver` the app registers here, so they land
in the same JSON log and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter
from starlette.exceptions import HTTPException

from serving.asgi import (
    KNOWN_METHODS,
    ASGIApp,
    BodyLimitMiddleware,
    ObservabilityMiddleware,
    Receive,
    Scope,
    Send,
    log_request,
    new_request_id,
)
from serving.metrics import Metrics

# scope["extensions"] key set by serving/protocol.py: the connection enforces the read timeouts.
WIRE_TIMEOUTS = "inference.read_timeouts"
# scope["state"] key: what the client actually received when it differs from what the app sent
# (an int status written by serving/protocol.py, or ABORTED when the client went away first).
WIRE_STATUS = "wire_status"
ABORTED = "aborted"
LIMIT_EVENTS = (
    "header_too_large",
    "header_timeout",
    "body_timeout",
    "connection_refused",
    "bad_request",
    "connection_evicted",  # closed at the connection cap to make room (slowloris)
    "upgrade_refused",  # a WebSocket or other upgrade, answered as plain HTTP
    "too_many_chunks",  # 413: a chunked body in more chunks than the protocol accepts
    "write_timeout",  # the client did not read its answers
    "drain_forced_close",  # still open at the drain deadline: closed by force
)


class BodyTimeoutError(HTTPException):
    """The request body did not arrive in time."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            408, f"request body not received within {seconds:g} s", {"Connection": "close"}
        )


class _TimedReader:
    """``receive`` for one request, cancelled (-> 408) when the body is late."""

    __slots__ = (
        "deadline",
        "done",
        "expired",
        "handle",
        "on_timeout",
        "receive",
        "scope",
        "task",
        "timeout",
    )

    def __init__(
        self,
        receive: Receive,
        timeout: float,
        on_timeout: Callable[[], None] | None = None,
        scope: Scope | None = None,
    ) -> None:
        self.receive = receive
        self.scope = scope
        self.on_timeout = on_timeout
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.done = False  # the whole body has arrived: nothing left to time
        self.expired = False
        self.handle: asyncio.TimerHandle | None = None
        self.task: asyncio.Task | None = None

    async def __call__(self) -> Any:
        if self.done:
            return await self.receive()
        loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.handle = loop.call_at(loop.time() + self.deadline - time.monotonic(), self._expire)
        try:
            message = await self.receive()
        except asyncio.CancelledError:
            if not self.expired:
                raise
            uncancel = getattr(self.task, "uncancel", None)  # 3.11+: the cancel was ours
            if uncancel is not None:
                uncancel()
            if self.on_timeout is not None:
                self.on_timeout()
            raise BodyTimeoutError(self.timeout) from None
        finally:
            self.handle.cancel()
            self.handle = None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.done = True
            if message["type"] == "http.disconnect" and self.scope is not None:
                # The client left before its body was whole: no answer will reach it.
                self.scope.setdefault("state", {}).setdefault(WIRE_STATUS, ABORTED)
        return message

    def _expire(self) -> None:
        if self.handle is not None and self.task is not None:
            self.expired = True
            self.task.cancel()

    def shorten(self, seconds: float) -> None:
        """Bring the deadline to at most ``seconds`` from now (shutdown has begun)."""
        self.deadline = min(self.deadline, time.monotonic() + seconds)
        if self.handle is not None:
            self.handle.cancel()
            loop = asyncio.get_running_loop()
            delay = max(0.0, self.deadline - time.monotonic())
            self.handle = loop.call_later(delay, self._expire)


# Connections of serving/protocol.py (which time the body themselves): shutdown shortens their
# body reads too. One app per process, like ``observer``.
wire_readers: set[Any] = set()


class ReadTimeouts:
    """The open body reads of one app, so shutdown can shorten them all: the ASGI ones
    (``readers``) and, under the protocol class, the connections' own (``wire_readers``)."""

    def __init__(self, body_timeout_s: float, drain_timeout_s: float) -> None:
        self.body_timeout_s = body_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.readers: set[_TimedReader] = set()
        self.on_timeout: Callable[[], None] | None = None  # counts it (set by install_limits)

    def begin_drain(self, grace_s: float | None = None) -> None:
        """Shutdown: every body still being read must arrive within ``grace_s`` (default: the
        drain timeout). Safe to call from a signal handler (it runs on the event loop thread)."""
        grace = self.drain_timeout_s if grace_s is None else grace_s
        self.body_timeout_s = min(self.body_timeout_s, grace)
        for reader in [*self.readers, *wire_readers]:
            reader.shorten(grace)


class ReadTimeoutMiddleware:
    """408 for a request body that does not arrive within the body timeout; a client that
    leaves while its body is read is marked ``ABORTED`` (the access-log line says so).

    Skipped when the connection already enforces both (``serving/protocol.py`` marks the
    scope), so the launcher's path pays nothing; otherwise one timer per request.
    """

    def __init__(self, app: ASGIApp, *, timeouts: ReadTimeouts) -> None:
        self.app = app
        self.timeouts = timeouts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or WIRE_TIMEOUTS in scope.get("extensions", ()):
            await self.app(scope, receive, send)
            return
        reader = _TimedReader(
            receive, self.timeouts.body_timeout_s, self.timeouts.on_timeout, scope
        )
        self.timeouts.readers.add(reader)
        try:
            await self.app(scope, reader, send)
        finally:
            self.timeouts.readers.discard(reader)


class RouteBodyLimitMiddleware(BodyLimitMiddleware):
    """:class:`~serving.asgi.BodyLimitMiddleware` with a limit sized to what each route can
    need (``route_limits``: path -> bytes, see :func:`serving.jsonbody.body_limits`): a body that
    could not hold a valid request is refused before it costs any parsing. The smaller of the
    two applies; ``max_body_bytes`` stays the bound of every other path, and a 413 names the
    route whose limit it applied.
    """

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, route_limits: dict[str, int] | None = None
    ) -> None:
        super().__init__(app, max_body_bytes=max_body_bytes)
        self.route_limits = {
            path: min(limit, max_body_bytes) for path, limit in (route_limits or {}).items()
        }

    def limit_for(self, path: str) -> tuple[int, str | None]:
        limit = self.route_limits.get(path)
        return (self.max_body_bytes, None) if limit is None else (limit, path)


class WireObservabilityMiddleware(ObservabilityMiddleware):
    """:class:`~serving.asgi.ObservabilityMiddleware` that counts and logs what the client
    actually received: the status ``serving/protocol.py`` (or ``ReadTimeoutMiddleware``) wrote
    as ``WIRE_STATUS`` when it differs from the app's, and ``ABORTED`` (metric status
    "aborted"; log ``"status": null, "aborted": true``) when the client left before an answer.
    """

    def final_status(self, scope: Scope, status: int) -> int | str:
        wire = scope.get("state", {}).get(WIRE_STATUS)  # what the client got instead
        return status if wire is None else wire

    def log_access(
        self,
        scope: Scope,
        request_id: str,
        route: str,
        status: int | str,
        elapsed: float,
        fields: dict,
    ) -> None:
        if status == ABORTED:
            fields["status"] = None  # first, where the line's status goes
            fields["aborted"] = True
            status = None
        super().log_access(scope, request_id, route, status, elapsed, fields)


class WireObserver:
    """Logs and counts what happens on the wire outside the app: the protocol's own answers
    (431, 408, 400, 503 at accept time) and the events behind them."""

    def __init__(self, metrics: Metrics, logger: logging.Logger, settings: Any) -> None:
        self.metrics = metrics
        self.logger = logger
        self.settings = settings
        self.events = Counter(
            "inference_limit_events",
            "Clients stopped by a limit, or gone before their answer.",
            ["event"],
            registry=metrics.registry,
        )
        for event in LIMIT_EVENTS:
            self.events.labels(event)

    def event(self, name: str) -> None:
        """Count one limit event."""
        self.events.labels(name).inc()

    def response(self, status: int, method: str, path: str, event: str, detail: str) -> None:
        """Log and count an answer the app never saw (the protocol wrote it itself)."""
        self.event(event)
        method = method if method in KNOWN_METHODS else "OTHER"  # the middleware's rule
        self.metrics.child(self.metrics.requests, method, "unmatched", str(status)).inc()
        log_request(  # the access-log line, as the middleware writes it (503 a warning)
            self.logger,
            status,
            {
                "request_id": new_request_id(),
                "method": method,
                "path": path[:200],
                "route": "unmatched",
                "latency_ms": 0.0,
                "error_type": event,
                "error": detail,
            },
        )

    def closed(self, event: str, detail: str) -> None:
        """A connection closed without an answer (nothing was asked yet)."""
        self.event(event)
        self.logger.info("connection_closed", extra={"reason": event, "detail": detail})

    def forced_close(self, detail: str) -> None:
        """Shutdown closed a connection by force (the drain did not end on its own)."""
        global _forced_closes
        _forced_closes += 1
        self.event("drain_forced_close")
        self.logger.warning(
            "connection_closed", extra={"reason": "drain_forced_close", "detail": detail}
        )


_forced_closes = 0  # connections shutdown closed by force, in this process


def connections_closed_by_force() -> int:
    """How many connections the drain closed by force in this process (the shutdown line)."""
    return _forced_closes


# The app registers its observer here; serving/protocol.py reads it (one app per process).
observer: WireObserver | None = None


def install_limits(
    app: Any, settings: Any, metrics: Metrics, logger: logging.Logger
) -> ReadTimeouts:
    """Add the read-timeout middleware and register the wire observer (``observer``, read by
    serving/protocol.py); return the timeouts, which shutdown shortens."""
    global observer
    timeouts = ReadTimeouts(settings.body_timeout_s, settings.drain_timeout_s)
    app.add_middleware(ReadTimeoutMiddleware, timeouts=timeouts)
    observer = wire = WireObserver(metrics, logger, settings)
    timeouts.on_timeout = lambda: wire.event("body_timeout")
    return timeouts

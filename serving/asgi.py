"""Pure ASGI middleware: body-size limit, and request ids + metrics + access log + 500s.

Pure ASGI (a class with ``__call__(scope, receive, send)``) rather than Starlette's
``BaseHTTPMiddleware``: it adds one function call per request instead of an extra task and
memory stream, and it never buffers the body. The benchmark measures this path.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from serving.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class BodyTooLargeError(HTTPException):
    """The request body exceeded the limit while it was being read (chunked upload)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than the limit of {limit} bytes")


async def send_json(send: Send, status: int, body: dict, headers: list | None = None) -> None:
    """Send a complete JSON response from middleware (the app never saw the request)."""
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def error_body(scope: Scope, detail: str) -> dict:
    """An error body, with the request id when an outer middleware has assigned one."""
    request_id = scope.get("state", {}).get("request_id")
    return (
        {"detail": detail} if request_id is None else {"detail": detail, "request_id": request_id}
    )


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_body_bytes`` with 413, before reading them whole.

    A declared ``Content-Length`` over the limit is refused before a single body byte is read.
    A chunked body (no length) is counted as it streams in and refused at the first chunk that
    crosses the limit, so at most ``max_body_bytes`` plus one chunk is ever held.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:  # uvicorn rejects these itself; other servers may not
                    await send_json(send, 400, {"detail": "invalid Content-Length header"})
                    return
                if declared > limit:
                    detail = f"request body of {declared} bytes is larger than the limit of {limit}"
                    await send_json(
                        send, 413, error_body(scope, detail), [(b"connection", b"close")]
                    )
                    return
                break

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError as e:  # frameworks that do not turn it into a response
            if started:
                raise
            await send_json(send, 413, error_body(scope, e.detail), [(b"connection", b"close")])


def request_id_from(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` when it is safe to echo and log, else a new UUID."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if SAFE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    # A version-4 UUID from Python's PRNG: an id needs to be unique, not secret, and
    # uuid.uuid4() costs a system call (os.urandom) on every request.
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


class ObservabilityMiddleware:
    """Per request: an ``X-Request-ID``, Prometheus metrics, one JSON access-log line, and a
    clean 500 for any unexpected error.

    Routes add fields to the access-log line through ``request.state.log`` (a dict), and read
    the id from ``request.state.request_id``. The metric label ``route`` is the path template
    (``/predict``), never the raw path, so unknown URLs cannot blow up the label count.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        logger: logging.Logger,
        off: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.logger = logger
        # Benchmarks only (INFERENCE_BENCH_OFF): switch layers off to measure what each costs.
        self.count = metrics.enabled and "metrics" not in off
        self.access_log = "access_log" not in off
        self.request_ids = "request_id" not in off
        # Label children, bound once per (method, route, status): .labels() costs a lock and a
        # tuple on every call. Bounded: known methods x app routes x status codes.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def _observe(self, method: str, route: str, status: int, elapsed: float) -> None:
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self._counters[method, route, status] = self.metrics.requests.labels(
                method, route, str(status)
            )
        timer = self._timers.get((method, route))
        if timer is None:
            timer = self._timers[method, route] = self.metrics.request_duration.labels(
                method, route
            )
        counter.inc()
        timer.observe(elapsed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        state["log"] = fields = {}
        if self.request_ids:
            request_id = state["request_id"] = request_id_from(scope)
            id_headers = [(b"x-request-id", request_id.encode())]
        else:
            request_id, id_headers = None, []
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                if id_headers:
                    message["headers"] = [*message.get("headers", ()), *id_headers]
            await send(message)

        if self.count:
            self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            status = 500
            fields.update(error_type=type(exc).__name__, error=str(exc))
            # The trace goes to the log; the client only learns the id to quote.
            self.logger.exception(
                "unhandled_error", extra={"request_id": request_id, "path": scope["path"]}
            )
            if started:  # too late for a clean answer; let the server drop the connection
                raise
            await send_json(
                send, 500, {"detail": "internal error", "request_id": request_id}, id_headers
            )
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            if self.count:
                self.metrics.in_progress.dec()
                method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
                self._observe(method, route, status, elapsed)
            if self.access_log:
                self._log_access(scope, request_id, route, status, elapsed, fields)

    def _log_access(
        self, scope: Scope, request_id: str | None, route: str, status: int, elapsed: float, fields
    ) -> None:
        """One access-log line; the logger formats and writes it (off the loop if configured)."""
        self.logger.log(
            # 500 is a bug; 503/504 are the server protecting itself; 4xx are the caller's.
            logging.ERROR if status == 500 else logging.WARNING if status > 500 else logging.INFO,
            "request",
            extra={
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "status": status,
                "latency_ms": round(elapsed * 1000, 3),
                **fields,
            },
        )

"""Pure ASGI middleware: body-size limit (stage 2), and request ids + metrics + access log +
clean 500s (stage 3).

Pure ASGI (a class with ``__call__(scope, receive, send)``) rather than Starlette's
``BaseHTTPMiddleware``: it adds one function call per request instead of an extra task and
memory stream, and it never buffers the body. The benchmark measures this path.

Later stages add to these classes by subclassing, not by switches in them: the hardened stage's
route-sized body limits and the statuses only the connection knows live in serving/limits.py.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException

from serving.context import RequestContext, with_request_id

if TYPE_CHECKING:  # stage 2 imports the body limit alone, without Prometheus
    from serving.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Longest path and method an access-log line keeps: the client chooses them, and a 32 KB path
# per request would let one client rotate every log file away in seconds.
MAX_LOGGED_PATH_CHARS = 200
MAX_LOGGED_METHOD_CHARS = 16


def clip_for_log(value: str, limit: int) -> str:
    """``value``, or its first ``limit`` characters and "..." when it is longer."""
    return value if len(value) <= limit else value[:limit] + "..."


class BodyTooLargeError(HTTPException):
    """The request body exceeded the limit while it was being read (chunked upload)."""

    def __init__(self, limit: int, path: str | None = None) -> None:
        where = f" for {path}" if path else ""
        super().__init__(413, f"request body is larger than the limit of {limit} bytes{where}")


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


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_body_bytes`` with 413, before reading them whole.

    A declared ``Content-Length`` over the limit is refused before a single body byte is read.
    A chunked body (no length) is counted as it streams in and refused at the first chunk that
    crosses the limit, so at most ``max_body_bytes`` plus one chunk is ever held.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    def limit_for(self, path: str) -> tuple[int, str | None]:
        """The limit of a request to ``path``, and the route a 413 names (None: the app's own
        limit). The same for every path here; a subclass sizes it per route."""
        return self.max_body_bytes, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, named = self.limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:  # uvicorn rejects these itself; other servers may not
                    await send_json(send, 400, {"detail": "invalid Content-Length header"})
                    return
                if declared > limit:
                    detail = f"request body of {declared} bytes is larger than the limit of {limit}"
                    if named:
                        detail += f" bytes for {named}"
                    body = with_request_id(scope, {"detail": detail})
                    await send_json(send, 413, body, [(b"connection", b"close")])
                    return
                break

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit, named)
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
            body = with_request_id(scope, {"detail": e.detail})
            await send_json(send, 413, body, [(b"connection", b"close")])


def request_id_from(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` when it is safe to echo and log, else a new UUID."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if SAFE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return new_request_id()


def new_request_id() -> str:
    """A version-4 UUID from Python's PRNG: an id needs to be unique, not secret, and
    ``uuid.uuid4()`` costs a system call (os.urandom) on every request."""
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


class ObservabilityMiddleware:
    """Per request: an ``X-Request-ID``, Prometheus metrics, one JSON access-log line, and a
    clean 500 for any unexpected error.

    The id and the access-log fields live in one :class:`RequestContext` in the scope: routes
    add fields through its ``log`` dict (the ``RequestCtx`` dependency). The metric label
    ``route`` is the path template (``/predict``), never the raw path, so unknown URLs cannot
    blow up the label count.

    A later stage subclasses it through two methods: :meth:`final_status` (the status counted
    and logged) and :meth:`log_access` (the access-log line).
    """

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, logger: logging.Logger, log_text: bool = True
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.logger = logger
        # False: a trace keeps its frames and exception types, not their messages (which may
        # quote a review); the final stage passes INFERENCE_LOG_TEXT.
        self.log_text = log_text

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = request_id_from(scope)
        context = RequestContext(request_id).attach(scope)
        id_header = (b"x-request-id", request_id.encode())
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            status = 500
            self.log_error(scope, request_id, exc, context.log)
            if started:  # too late for a clean answer; the server drops the connection
                return
            body = with_request_id(scope, {"detail": "internal error"})
            await send_json(send, 500, body, [id_header])
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or route_of(scope, self.app)
            final = self.final_status(scope, status)
            self.metrics.in_progress.dec()
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
            self.metrics.observe_request(method, route, str(final), elapsed)
            self.log_access(scope, request_id, route, final, elapsed, context.log)

    def final_status(self, scope: Scope, status: int) -> int | str:
        """The status counted and logged: here the one the app sent. A subclass may name what
        the client actually received instead (serving/limits.py)."""
        return status

    def log_error(self, scope: Scope, request_id: str, exc: Exception, fields: dict) -> None:
        """Log an unhandled exception with its trace; note it in the access-log ``fields``.

        The client only learns the id to quote. An exception's message may quote the input (a
        review), so it is logged only with ``log_text``."""
        error = str(exc) if self.log_text else "(message not logged: INFERENCE_LOG_TEXT)"
        fields.update(error_type=type(exc).__name__, error=error)
        self.logger.error(
            "unhandled_error",
            exc_info=exc if self.log_text else None,
            extra={
                "request_id": request_id,
                "path": clip_for_log(scope["path"], MAX_LOGGED_PATH_CHARS),
            }
            | ({} if self.log_text else {"trace": trace_without_messages(exc)}),
        )

    def log_access(
        self,
        scope: Scope,
        request_id: str,
        route: str,
        status: int | str,
        elapsed: float,
        fields: dict,
    ) -> None:
        """One access-log line; the logger formats and writes it (off the loop if configured)."""
        log_request(
            self.logger,
            status,
            {
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "latency_ms": round(elapsed * 1000, 3),
                **fields,
            },
        )


def log_request(logger: logging.Logger, status: int | str | None, fields: dict[str, Any]) -> None:
    """The access-log line of one answer: ``status`` (None: no answer was sent), and a level
    that says whose problem it was. The client-chosen path and method are clipped
    (``path_chars`` then gives the path's full length)."""
    path = fields.get("path")
    if isinstance(path, str) and len(path) > MAX_LOGGED_PATH_CHARS:
        fields["path"] = clip_for_log(path, MAX_LOGGED_PATH_CHARS)
        fields["path_chars"] = len(path)
    method = fields.get("method")
    if isinstance(method, str):
        fields["method"] = clip_for_log(method, MAX_LOGGED_METHOD_CHARS)
    fields["status"] = status
    # 500 is a bug; 503/504 are the server protecting itself; 4xx are the caller's.
    level = (
        logging.ERROR
        if status == 500
        else logging.WARNING
        if isinstance(status, int) and status > 500
        else logging.INFO
    )
    if logger.isEnabledFor(level):
        # logger.log() without its search for the calling line (a walk up the stack on every
        # request): the JSON line never shows file, line or function, so the record names this
        # function instead. Same record otherwise; same handlers, filters and fields.
        record = logger.makeRecord(
            logger.name, level, __file__, 0, "request", (), None, "log_request", fields
        )
        logger.handle(record)


def route_of(scope: Scope, app: Any) -> str:
    """The route template of a request answered before routing (a 413 decided from its
    Content-Length, a 408), so it is counted under ``/predict`` like the same error found
    later; "unmatched" when no route matches."""
    while app is not None and not hasattr(app, "routes"):
        app = getattr(app, "app", None)
    for route in getattr(app, "routes", ()):
        try:
            match, _ = route.matches(scope)
        except Exception:  # a route that cannot judge this scope
            continue
        if match.name == "FULL":
            return route.path
    return "unmatched"


def trace_without_messages(exc: BaseException) -> list[str]:
    """``file:line in function`` for each frame, and exception types without their messages."""
    lines: list[str] = []
    chain: set[int] = set()  # a context chain can loop back on itself
    seen: BaseException | None = exc
    while seen is not None and id(seen) not in chain:
        chain.add(id(seen))
        frames = traceback.extract_tb(seen.__traceback__)
        lines += [f"{f.filename}:{f.lineno} in {f.name}" for f in frames]
        lines.append(type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    return lines

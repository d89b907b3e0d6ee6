"""Unit tests of the body-limit middleware (log rotation: tests/unit/test_logs_background.py)."""

from __future__ import annotations

import asyncio
import logging

from serving.asgi import BodyLimitMiddleware, log_request


def test_body_limit_rejects_a_content_length_that_is_not_a_number():
    """uvicorn refuses such requests itself; the middleware does not rely on it."""

    async def app(scope, receive, send):  # pragma: no cover - must not be reached
        raise AssertionError("the app was called")

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"x")]}
    asyncio.run(BodyLimitMiddleware(app, max_body_bytes=10)(scope, receive, send))
    assert sent[0]["status"] == 400


def run_limit(path: str, headers: list, body: bytes = b"", **limits) -> list[dict]:
    """What BodyLimitMiddleware sends for one request (the app reads the whole body)."""

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    asyncio.run(BodyLimitMiddleware(app, **limits)(scope, receive, send))
    return sent


def test_a_route_limit_applies_to_its_path_only_and_never_above_the_global_one():
    limits = {"max_body_bytes": 100, "route_limits": {"/small": 10, "/big": 1_000}}
    declared = [(b"content-length", b"50")]
    small = run_limit("/small", declared, **limits)
    assert small[0]["status"] == 413
    assert b"larger than the limit of 10 bytes for /small" in small[1]["body"]
    assert run_limit("/other", declared, **limits)[0]["status"] == 200
    assert run_limit("/big", [(b"content-length", b"500")], **limits)[0]["status"] == 413
    chunked = run_limit("/small", [], b"x" * 11, **limits)  # no Content-Length: counted
    assert chunked[0]["status"] == 413 and b"for /small" in chunked[1]["body"]


def test_log_request_clips_what_the_client_chose():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test_log_request_clips")
    logger.addHandler(Keep())
    logger.propagate = False
    logger.setLevel(logging.INFO)
    log_request(logger, 404, {"method": "X" * 100, "path": "/" + "p" * 5_000})
    log_request(logger, 200, {"method": "GET", "path": "/health"})
    long, short = records
    assert (long.method, long.path, long.path_chars) == (
        "X" * 16 + "...",
        "/" + "p" * 199 + "...",
        5_001,
    )
    assert (short.method, short.path, hasattr(short, "path_chars")) == ("GET", "/health", False)

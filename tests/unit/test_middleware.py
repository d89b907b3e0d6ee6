"""Unit tests of the body-limit middleware (log rotation: tests/unit/test_logs_background.py)."""

from __future__ import annotations

import asyncio

from serving.asgi import BodyLimitMiddleware


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

"""Unit tests of the serving building blocks: middleware, logs, request context, rejections."""

from __future__ import annotations

import asyncio
import json

import serving.logs
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


def test_log_file_is_rotated(monkeypatch, tmp_path):
    monkeypatch.setattr(serving.logs, "MAX_LOG_BYTES", 2_000)
    log = serving.logs.configure_logging(tmp_path / "r.log", name="rotation-test")
    for i in range(100):
        log.info("request", extra={"request_id": f"id-{i}", "status": 200})
    for handler in log.handlers:
        handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files[:3] == ["r.log", "r.log.1", "r.log.2"]
    assert all(json.loads(line) for line in (tmp_path / "r.log").read_text().splitlines())

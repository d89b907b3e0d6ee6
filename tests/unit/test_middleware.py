"""Unit tests of the body-limit middleware, stage 2's and the hardened stage's route-sized one,
and of the access-log line (log rotation: tests/unit/test_logs_background.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from loadtest.bench_app import BenchObservabilityMiddleware
from serving.asgi import BodyLimitMiddleware, ObservabilityMiddleware, log_request
from serving.limits import (
    ABORTED,
    WIRE_STATUS,
    ReadTimeoutMiddleware,
    ReadTimeouts,
    RouteBodyLimitMiddleware,
    WireObservabilityMiddleware,
)
from serving.metrics import Metrics


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


def run_limit(
    path: str, headers: list, body: bytes = b"", middleware=RouteBodyLimitMiddleware, **limits
) -> list[dict]:
    """What ``middleware`` sends for one request (the app reads the whole body)."""

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
    asyncio.run(middleware(app, **limits)(scope, receive, send))
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


def test_the_stage_2_limit_is_one_for_every_path_and_names_none():
    declared = [(b"content-length", b"50")]
    over = run_limit("/small", declared, middleware=BodyLimitMiddleware, max_body_bytes=10)
    assert over[0]["status"] == 413
    assert over[1]["body"].endswith(b'"request body of 50 bytes is larger than the limit of 10"}')
    chunked = run_limit("/x", [], b"x" * 11, middleware=BodyLimitMiddleware, max_body_bytes=10)
    assert chunked[0]["status"] == 413 and b"for " not in chunked[1]["body"]
    fits = run_limit("/x", [], b"x" * 10, middleware=BodyLimitMiddleware, max_body_bytes=10)
    assert fits[0]["status"] == 200


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


# --- Observability: stage 3's middleware, the hardened stage's wire-aware subclass, the bench's
class KeepRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def observe(middleware_class, app, scope_extra: dict | None = None, **kwargs):
    """Run one request through ``middleware_class(app, ...)``: (messages sent, the access-log
    fields, the ``http_requests_total`` samples, other log records)."""
    metrics = Metrics()
    logger = logging.getLogger(f"test_middleware.{middleware_class.__name__}.{id(app)}")
    keep = KeepRecords()
    logger.addHandler(keep)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    middleware = middleware_class(app, metrics=metrics, logger=logger, **kwargs)
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/p", "headers": [], "state": {}}
    scope |= scope_extra or {}
    asyncio.run(middleware(scope, receive, send))
    access = [r for r in keep.records if r.getMessage() == "request"]
    others = [r.getMessage() for r in keep.records if r.getMessage() != "request"]
    fields = {}
    if access:
        [record] = access
        fields = {k: v for k, v in record.__dict__.items() if k not in STANDARD}
        fields["level"] = record.levelname
    samples = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for family in metrics.registry.collect()
        if family.name == "http_requests"
        for s in family.samples
        if s.name == "http_requests_total"
    }
    return sent, fields, samples, others


STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "taskName"}


async def answers_200(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def fails_before_answering(scope, receive, send):
    raise RuntimeError("boom")


async def fails_after_starting(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise RuntimeError("late boom")


async def client_left(scope, receive, send):
    scope["state"][WIRE_STATUS] = ABORTED  # what serving/protocol.py writes
    await answers_200(scope, receive, send)


async def connection_said_408(scope, receive, send):
    scope["state"][WIRE_STATUS] = 408
    await answers_200(scope, receive, send)


def test_stage_3_middleware_counts_and_logs_what_the_app_sent():
    sent, fields, samples, _ = observe(ObservabilityMiddleware, client_left)
    assert sent[0]["status"] == 200 and dict(sent[0]["headers"])[b"x-request-id"]
    assert fields["status"] == 200 and "aborted" not in fields
    assert samples == {("POST", "unmatched", "200"): 1.0}
    sent, fields, samples, others = observe(ObservabilityMiddleware, fails_before_answering)
    assert sent[0]["status"] == 500 and fields["status"] == 500 and fields["level"] == "ERROR"
    assert others == ["unhandled_error"] and samples == {("POST", "unmatched", "500"): 1.0}


def test_the_wire_subclass_counts_and_logs_what_the_client_received():
    _, fields, samples, _ = observe(WireObservabilityMiddleware, client_left)
    assert fields["status"] is None and fields["aborted"] is True and fields["level"] == "INFO"
    assert samples == {("POST", "unmatched", "aborted"): 1.0}
    _, fields, samples, _ = observe(WireObservabilityMiddleware, connection_said_408)
    assert fields["status"] == 408 and "aborted" not in fields
    assert samples == {("POST", "unmatched", "408"): 1.0}


@pytest.mark.parametrize(
    "app",
    [answers_200, fails_before_answering, fails_after_starting, client_left, connection_said_408],
)
@pytest.mark.parametrize("log_text", [True, False])
def test_the_bench_middleware_with_nothing_off_is_the_shipped_one(app, log_text):
    """loadtest/bench_app.py copies the middleware's ``__call__`` to add its switches: with no
    switch off it must answer, count and log exactly as the shipped class does."""
    scope = {"headers": [(b"x-request-id", b"same-id")]}

    def run(cls, **kwargs):
        sent, fields, samples, others = observe(cls, app, scope, log_text=log_text, **kwargs)
        fields.pop("latency_ms", None)
        return sent, fields, samples, others

    shipped = run(WireObservabilityMiddleware)
    bench = run(BenchObservabilityMiddleware, off=frozenset())
    assert bench == shipped
    assert list(bench[1]) == list(shipped[1])  # the same fields, in the same order


def test_the_bench_middleware_skips_what_is_switched_off():
    off = frozenset({"metrics", "access_log", "request_id"})
    sent, fields, samples, _ = observe(BenchObservabilityMiddleware, answers_200, off=off)
    assert sent[0]["status"] == 200 and sent[0]["headers"] == []
    assert fields == {} and samples == {}


def test_a_client_that_leaves_during_its_body_is_marked_aborted_under_plain_uvicorn():
    """Without the protocol class, the body read is where the app learns the client left."""
    seen: list[dict] = []

    async def app(scope, receive, send):
        seen.append(await receive())

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):  # pragma: no cover - nothing is sent
        raise AssertionError(message)

    scope = {"type": "http", "method": "POST", "path": "/p", "headers": [], "state": {}}
    middleware = ReadTimeoutMiddleware(app, timeouts=ReadTimeouts(5.0, 5.0))
    asyncio.run(middleware(scope, receive, send))
    assert seen == [{"type": "http.disconnect"}] and scope["state"] == {WIRE_STATUS: ABORTED}

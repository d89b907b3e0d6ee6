"""Benchmarks only: the final stage with some of its layers switched off, to price each one.

    INFERENCE_BENCH_OFF=metrics,access_log python -m serving.serve loadtest.bench_app:app

``INFERENCE_BENCH_OFF`` is a comma-separated list of the layers to switch off:

* ``metrics``: nothing is counted per request, per model call or per label
  (:class:`SilentMetrics`; the rejection, queue and drop counters still count);
* ``access_log``: no access-log line per request;
* ``request_id``: no ``X-Request-ID`` is read, made, echoed or logged;
* ``batcher``: texts are scored inline on the event loop (:class:`InlineBatcher`): no queue,
  no hand-off to the model thread, no batching.

Empty or unset: the final stage exactly as shipped. ``loadtest/layers.py`` and the benchmark's
layers section serve this app once per value and compare them (lessons/07_fast/README.md).
``INFERENCE_BENCH_STAGE`` names another stage to build the same way (a stage file such as
``lean``; default: the final stage; ``loadtest/budget.py`` compares them).

The server a student runs never reads this variable. :func:`create_bench_app` builds the final
stage with its own ``create_app`` and then swaps parts by composition: a
:class:`SilentMetrics` for the stage's ``WorkerMetrics`` while ``create_app`` runs, a
:class:`BenchObservabilityMiddleware` in place of the stage's observability middleware in
``app.user_middleware``, and a lifespan that makes the batcher it starts an
:class:`InlineBatcher`. Never serve with it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any, Generic, TypeVar

from fastapi import FastAPI
from starlette.middleware import Middleware

from serving.asgi import (
    KNOWN_METHODS,
    Message,
    Receive,
    Scope,
    Send,
    request_id_from,
    route_of,
    send_json,
)
from serving.batcher import BatcherClosedError, BatchStats, Submission
from serving.context import RequestContext, with_request_id
from serving.limits import WireObservabilityMiddleware
from serving.multiprocess import WorkerMetrics
from serving.settings import ENV_PREFIX, Settings, SettingsError
from serving.stages import FINAL_STAGE, STAGES

ENV = f"{ENV_PREFIX}BENCH_OFF"
BENCH_LAYERS = ("metrics", "access_log", "request_id", "batcher")
OBSERVABILITY_LAYERS = frozenset({"metrics", "access_log", "request_id"})  # the middleware's
FINAL_MODULE = "inference_server"  # the repository root's final stage
STAGE_ENV = f"{ENV_PREFIX}BENCH_STAGE"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stage_module(name: str | None = None) -> ModuleType:
    """The module of stage ``name`` (default: ``$INFERENCE_BENCH_STAGE``, else the final
    stage): the root's ``inference_server``, or another stage file imported from its path."""
    name = name or os.environ.get(STAGE_ENV) or FINAL_STAGE
    if name not in STAGES:
        raise SettingsError(f"invalid server settings:\n  {STAGE_ENV}={name!r}: unknown stage")
    if STAGES[name].app_dir == ".":
        return importlib.import_module(FINAL_MODULE)
    module_name = f"bench_stage_{name}"
    if module_name not in sys.modules:
        path = os.path.join(ROOT, STAGES[name].app_dir, "inference_server.py")
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


R = TypeVar("R")


def layers_off(value: str | None = None) -> frozenset[str]:
    """The layers named in ``value`` (default: ``$INFERENCE_BENCH_OFF``); an unknown one stops
    start-up with a message naming the variable, as a bad setting does."""
    value = os.environ.get(ENV, "") if value is None else value
    layers = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(layers - set(BENCH_LAYERS))
    if unknown:
        raise SettingsError(
            f"invalid server settings:\n  {ENV}={value!r}: unknown layer(s) {unknown}; "
            f"choose from {', '.join(BENCH_LAYERS)}"
        )
    return layers


class SilentMetrics(WorkerMetrics):
    """``metrics`` off: the same registry and families, but nothing is recorded per request,
    per model call or per label (what the middleware, the batcher and the routes record)."""

    def observe_request(self, method: str, route: str, status: str, seconds: float) -> None:
        pass

    def observe_batch(self, size: int, duration: float, queue_waits: Any = ()) -> None:
        pass

    def count_labels(self, labels: Any) -> None:
        pass


class BenchObservabilityMiddleware(WireObservabilityMiddleware):
    """The final stage's observability middleware with the layers in ``off`` skipped.

    Its ``__call__`` is :meth:`serving.asgi.ObservabilityMiddleware.__call__` with one switch
    per layer (tests/stages/test_bench_off.py checks that with nothing off it answers, counts
    and logs as the shipped one does); status, error and access-log line come from the shipped
    classes' own methods.
    """

    def __init__(self, app: Any, *, off: frozenset[str], **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.count = "metrics" not in off
        self.access_log = "access_log" not in off
        self.request_ids = "request_id" not in off

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = request_id_from(scope) if self.request_ids else None
        context = RequestContext(request_id or "").attach(scope)  # "": no id in error bodies
        id_headers = [] if request_id is None else [(b"x-request-id", request_id.encode())]
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
            self.log_error(scope, request_id, exc, context.log)
            if started:
                return
            body = with_request_id(scope, {"detail": "internal error"})
            await send_json(send, 500, body, id_headers)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or route_of(scope, self.app)
            final = self.final_status(scope, status)
            if self.count:
                self.metrics.in_progress.dec()
                method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
                self.metrics.observe_request(method, route, str(final), elapsed)
            if self.access_log:
                self.log_access(scope, request_id, route, final, elapsed, context.log)


class InlineBatcher(Generic[R]):
    """``batcher`` off: no queue, no thread, no batching.

    The interface of :class:`serving.batcher.DynamicBatcher`, but ``submit`` runs ``predict``
    on the texts at once, on the event loop, which blocks while the model runs. It exists to
    measure what the hand-off to the batcher costs per request.
    """

    queue_depth = 0
    drain_timed_out = False

    def __init__(
        self,
        predict: Callable[[list[str]], Sequence[R]],
        *,
        on_batch: Callable[[BatchStats], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        **_ignored: Any,
    ) -> None:
        self._predict = predict
        self._on_batch = on_batch
        self._clock = clock
        self._state = "new"

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._state == "running"

    async def start(self) -> None:
        """Accept texts from now on."""
        self._state = "running"

    async def submit(self, texts: list[str], timeout: float) -> Submission[R]:
        """Score ``texts`` now (``timeout`` is ignored: nothing waits in a queue)."""
        if not texts:
            raise ValueError("submit() needs at least one text")
        if not self.running:
            raise BatcherClosedError("the batcher is not running (not started or shutting down)")
        started = self._clock()
        results = list(self._predict(texts))
        if self._on_batch is not None:
            self._on_batch(
                BatchStats(len(texts), [0.0] * len(texts), self._clock() - started, None)
            )
        return Submission(results=results, batch_size=len(texts))

    async def stop(self, drain_timeout: float = 10.0) -> int:
        """Refuse new texts; nothing is ever queued, so nothing is drained."""
        self._state = "stopped"
        return 0


@contextlib.contextmanager
def _replaced(module: ModuleType, name: str, value: object) -> Iterator[None]:
    """``module.name`` is ``value`` inside the block."""
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def _swap_observability(app: FastAPI, off: frozenset[str]) -> None:
    """Replace the stage's observability middleware by :class:`BenchObservabilityMiddleware`
    with the same arguments (the stack is built when the app first runs)."""
    for i, entry in enumerate(app.user_middleware):
        if entry.cls is WireObservabilityMiddleware:
            app.user_middleware[i] = Middleware(
                BenchObservabilityMiddleware, *entry.args, off=off, **entry.kwargs
            )
            return
    raise TypeError("the final stage has no WireObservabilityMiddleware to switch layers off in")


def _score_inline(app: FastAPI, stage: ModuleType) -> None:
    """Wrap the app's lifespan: the batcher it starts (``stage.DynamicBatcher``) is an
    :class:`InlineBatcher` while the app runs."""
    lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def inline_lifespan(app: FastAPI):
        with _replaced(stage, "DynamicBatcher", InlineBatcher):
            async with lifespan(app) as state:
                yield state

    app.router.lifespan_context = inline_lifespan


def create_bench_app(
    off: frozenset[str] | str | None = None,
    settings: Settings | None = None,
    *,
    stage: ModuleType | None = None,
    **create_app_kwargs: Any,
) -> FastAPI:
    """The final stage (``stage.create_app(settings, **create_app_kwargs)``; ``stage`` defaults
    to the root ``inference_server`` module) with the layers in ``off`` switched off (default:
    ``$INFERENCE_BENCH_OFF``; a string is parsed like it)."""
    if off is None or isinstance(off, str):
        off = layers_off(off)
    stage = stage or stage_module()
    metrics_class = SilentMetrics if "metrics" in off else stage.WorkerMetrics
    with _replaced(stage, "WorkerMetrics", metrics_class):
        app = stage.create_app(settings, **create_app_kwargs)
    if off & OBSERVABILITY_LAYERS:
        _swap_observability(app, off)
    if "batcher" in off:
        _score_inline(app, stage)
    return app


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    """``app``: built on first use (``python -m serving.serve loadtest.bench_app:app``), so
    importing this module starts nothing."""
    global _app
    if name == "app":
        if _app is None:
            _app = create_bench_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

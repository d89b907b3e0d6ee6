"""Stage 12, rollout (final): the monitored server plus a new model without dropping a request:
hot reload (SIGHUP, POST /admin/reload), shadow scoring and a canary (POST /admin/canary sets its
share). lessons/12_rollout/README.md walks through it; the logic is in serving/rollout.py.

Run from the repository root:
    uvicorn inference_server:app --host 127.0.0.1 --port 8000
"""

import asyncio
import gc
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response

from sentiment_model import ModelLoadError, Prediction, SentimentModel, load_model
from serving.batcher import BatchStats, DynamicBatcher
from serving.context import RequestCtx, context_of
from serving.dependencies import Ready, ReadyRequest, State
from serving.errors import install_error_handlers, without_paths
from serving.jsonbody import CheckedJSONRoute, body_limits
from serving.limits import (
    RouteBodyLimitMiddleware,
    WireObservabilityMiddleware,
    connections_closed_by_force,
    install_limits,
)
from serving.logs import configure_logging, flush_logs, prediction_fields
from serving.monitoring import (
    FEEDBACK_MAX_BODY_BYTES,
    FeedbackRequest,
    FeedbackResponse,
    FeedbackStore,
    ModelMonitor,
)
from serving.multiprocess import (
    WorkerMetrics,
    mark_worker_exit,
    several_workers,
    worker_log_path,
)
from serving.rejections import install_rejection_handler
from serving.rollout import Rollout, Scored, canary_key
from serving.schemas import (
    BatchResponse,
    ErrorResponse,
    HealthResponse,
    LabelScore,
    PredictResponse,
    ReadyResponse,
    json_response,
    request_models,
)
from serving.settings import Settings, load_settings
from serving.shutdown import ShutdownSignals, record_drain
from serving.state import ServerState, retry_after_s


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


ERRORS: dict = {code: {"model": ErrorResponse} for code in (413, 503, 504)}
GC_YOUNG_THRESHOLD = 20_000  # allocations between two collections of the youngest generation


def create_app(settings: Settings | None = None, *, load_model=load_model) -> FastAPI:
    """The server, built from ``settings`` (default: the INFERENCE_* environment variables).

    ``load_model`` loads the model at start-up; a test passes its own. Nothing is shared
    between two apps: each has its own settings, request models, log and metrics registry.
    """
    # --- Settings: from INFERENCE_* environment variables; a bad value stops start-up -------
    settings = settings or load_settings()
    PredictRequest, BatchRequest = request_models(settings.max_text_chars, settings.max_batch_items)
    metrics = WorkerMetrics()  # one /metrics over several workers (serving/multiprocess.py)
    log = configure_logging(  # one file per worker; lines written off the event loop
        worker_log_path(settings.log_path),
        settings.log_level,
        background=True,
        on_lost=metrics.log_lines_lost.inc,  # a full disk
    )
    # The model's signals and the feedback: serving/monitoring.py (lessons/11_monitoring).
    # Each worker remembers the predictions it answered: with several, feedback that reaches
    # another worker gets 404, and says so.
    feedback = FeedbackStore(
        settings.feedback_max_ids, settings.feedback_ttl_s, several_workers=several_workers()
    )
    monitor = ModelMonitor(metrics.registry, feedback)
    # The stable model (hot reload), the canary and the shadow: serving/rollout.py.
    rollout = Rollout(settings, metrics, log, load_model)

    # --- Start-up: load the model in the background; /health answers meanwhile -------------
    async def load_and_start(state: ServerState) -> None:
        """Load the model off the event loop, then start the batcher. A failure keeps the
        process up but never ready, with the loader's message as the reason."""
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(load_model, settings.model_dir)
            # Score from the fitted arrays, checked against scikit-learn here (lessons/07_fast).
            await asyncio.to_thread(model.use_scorer, settings.scorer, log)
            # Everything alive now lives as long as the process: about 140,000 objects the
            # collector tracks (mostly the libraries'; the vocabulary dict holds only strings
            # and ints). Move them out of its reach, or every full collection walks them all:
            # a pause of about 0.1 s under load (lessons/05_lifecycle/README.md).
            gc.collect()
            gc.freeze()
            # Under load, at the default threshold (700), the youngest generation was collected
            # about once every 7 requests, scanning and promoting the objects of every request
            # in flight each time; at this one, not once in a 3 s step: most of those objects
            # are gone before a collection comes (benchmarks/results/budget/README.md).
            gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
        except Exception as e:
            state.load_error = f"model not loaded: {without_paths(str(e))}"  # log keeps paths
            log.error(
                "model_load_failed",
                extra={"error_type": type(e).__name__, "error": str(e)},
                exc_info=not isinstance(e, ModelLoadError),  # a trace only for the unexpected
            )
            return

        def score_and_observe(model: SentimentModel, cleaned: list[str]) -> list[Prediction]:
            # Runs in a batcher's worker thread, for whichever model (stable or canary) scores
            # the batch: the signals come with the predictions, recorded off the event loop.
            predictions, signals = model.predict_with_signals(cleaned)
            monitor.observe(signals)
            return predictions

        def make_batcher(predict: Callable[[list[str]], list[Scored]]) -> DynamicBatcher:
            # predict runs in the batcher's worker thread: it cleans the texts, reads the model
            # once per batch and returns each answer with the version that scored it.
            return DynamicBatcher(
                predict,
                max_batch_size=settings.max_batch_size,
                max_wait_s=settings.max_batch_wait_ms / 1000,
                max_queue=settings.max_queue,
                on_batch=observe_batch,
                on_queue_depth=metrics.queue_depth.set,  # explicit sets: right with workers
                on_drop=metrics.dropped_texts.inc,  # a text whose caller timed out or left
            )

        rollout.score = score_and_observe
        batcher = make_batcher(rollout.predict_stable)  # the stable model, swapped by a reload
        await rollout.start(model, make_batcher)  # and the canary and shadow, if configured
        await batcher.start()
        metrics.set_model(model.version, model.metadata.sklearn_version)
        state.model, state.batcher = model, batcher
        log.info(
            "model_loaded",
            extra={
                "model_version": model.version,
                "scorer": model.scorer,
                "load_seconds": round(time.perf_counter() - started, 3),
                "settings": settings.model_dump(mode="json"),
            },
        )

    def observe_batch(stats: BatchStats) -> None:
        metrics.observe_batch(stats.size, stats.duration, stats.queue_waits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = app.state.server = ServerState()
        loading = asyncio.create_task(load_and_start(state))

        def swapped(model: SentimentModel) -> None:  # a reload: /health and /model follow
            state.model = model

        rollout.on_swap = swapped

        def begin_shutdown() -> None:  # the first SIGTERM or Ctrl-C
            state.begin_drain()  # /ready and new predictions say 503
            timeouts.begin_drain()  # a stalled upload cannot hold shutdown

        reload_on_hup = rollout.on_sighup(asyncio.get_running_loop())  # SIGHUP: reload the model
        signals = ShutdownSignals(
            begin_shutdown, lambda: timeouts.begin_drain(0), log, reload_on_hup
        )
        signals.install()  # Ctrl-C twice still drains
        if several_workers():  # a shared socket: accept only once able to predict
            await loading
            if state.load_error:  # exit 3: uvicorn's supervisor stops rather than loop
                raise RuntimeError(state.load_error)
        yield
        # uvicorn has already waited for open requests; finish whatever is still queued.
        state.begin_drain()
        loading.cancel()
        drained = await state.batcher.stop(settings.drain_timeout_s) if state.batcher else 0
        drained += await rollout.stop(settings.drain_timeout_s)
        forced = connections_closed_by_force()  # clients that never read their answers
        timed_out = (state.batcher and state.batcher.drain_timed_out) or rollout.drain_timed_out
        complete = not timed_out and not forced
        log.info(
            "shutdown",
            extra={
                "drained_texts": drained,
                "drain_complete": complete,
                "connections_closed_by_force": forced,
                "model_version": state.version,
            },
        )
        # Written now: under plain uvicorn the process then dies by the re-raised SIGTERM,
        # which runs no exit handler, so the background writer would lose the last lines.
        flush_logs(log.name)
        record_drain(complete)  # the launcher's exit code (serving/serve.py)
        mark_worker_exit()  # several workers: this one's in-progress and queue gauges go
        signals.uninstall()

    docs = {} if settings.docs else {"docs_url": None, "redoc_url": None}  # JS from a CDN
    app = FastAPI(
        title="Sentiment inference server (stage 12: rollout)",
        lifespan=lifespan,
        # No redirect from /predict/ to /predict: Starlette builds its Location from the
        # request's Host header, so any client could make the server point elsewhere.
        redirect_slashes=False,
        **docs,
    )
    app.state.metrics, app.state.rollout = metrics, rollout
    # JSON bodies of more nesting or containers than a request needs: 422 before parsing.
    app.router.route_class = CheckedJSONRoute
    # Each prediction route's body limit is what its largest valid request can need.
    predict_limit, batch_limit = body_limits(settings.max_text_chars, settings.max_batch_items)
    app.add_middleware(
        RouteBodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        route_limits={
            "/predict": predict_limit,
            "/predict/batch": batch_limit,
            "/feedback": FEEDBACK_MAX_BODY_BYTES,
        },
    )
    timeouts = install_limits(app, settings, metrics, log)  # slow clients: serving/limits.py
    app.add_middleware(  # outermost; counts and logs what the client actually received
        WireObservabilityMiddleware, metrics=metrics, logger=log, log_text=settings.log_text
    )
    install_error_handlers(app)
    install_rejection_handler(app, metrics)  # full queue 503, timeout 504, not ready 503

    # --- Routes: validate -> preprocess -> infer -> postprocess ------------------------------
    # `async def`: the routes only wait (for the batcher, which runs the model in its own
    # thread), so they run on the event loop without a thread-pool hop.
    # The probes answer HEAD like GET (the server sends no body): some checkers only send HEAD.
    # A second route rather than methods=["GET", "HEAD"], which gives the schema one operation
    # id twice.
    @app.get("/health", response_model=HealthResponse)
    @app.head("/health", include_in_schema=False)
    async def health(state: State) -> Response:
        return json_response(
            HealthResponse(model_loaded=state.model is not None, model_version=state.version)
        )

    @app.get("/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
    @app.head("/ready", include_in_schema=False)
    async def ready(state: State) -> Response:
        reason = state.not_ready_reason()
        answer = ReadyResponse(ready=reason is None, reason=reason)
        if reason is None:
            return json_response(answer, exclude_none=True)
        response = json_response(answer, 503, exclude_none=True)
        response.headers["Retry-After"] = str(retry_after_s(reason))
        return response

    @app.get("/model", responses={503: {"model": ErrorResponse}})
    async def model_info(state: Ready) -> Response:
        return json_response(state.model.metadata)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return metrics.response()

    @app.post("/admin/reload", include_in_schema=False)
    async def admin_reload(request: Request) -> Response:
        # 404 unless INFERENCE_ADMIN_TOKEN is set; 401/403 without the right bearer token.
        return await rollout.admin_reload(request)

    @app.post("/admin/canary", include_in_schema=False)
    async def admin_canary(request: Request) -> Response:
        # The same guard; {"fraction": 0..1}: the canary's share from the next request on.
        return await rollout.admin_canary(request)

    # The prediction routes resolve one dependency, not three (Ready needs State, plus
    # RequestCtx): FastAPI's resolution cost more than the route's own code. The state and the
    # request's context come from the request; readiness is still checked before the body.
    @app.post("/predict", response_model=PredictResponse, responses=ERRORS)
    async def predict(body: PredictRequest, request: ReadyRequest) -> Response:
        started = time.perf_counter()
        state, context = request.app.state.server, context_of(request.scope)
        texts = [body.text]  # cleaned like the training data in the batcher's thread
        # Stable or canary by the request's key. A full queue, a timeout or a shutdown raise:
        # serving/rejections.py answers 503/504.
        key = canary_key(request, context.request_id)
        submission = await rollout.submit(state.batcher, texts, key, settings.request_timeout_s)
        [prediction] = submission.results
        version = prediction.version  # the model that scored it (a reload may just have run)
        metrics.count_labels([prediction.label])
        monitor.remember(context.request_id, [prediction.label])  # for POST /feedback
        context.log.update(
            prediction_fields([body.text], version, submission.batch_size, settings.log_text)
        )
        return json_response(
            PredictResponse(
                label=prediction.label,
                score=prediction.score,
                model_version=version,
                latency_ms=elapsed_ms(started),
            )
        )

    @app.post("/predict/batch", response_model=BatchResponse, responses=ERRORS)
    async def predict_batch(body: BatchRequest, request: ReadyRequest) -> Response:
        started = time.perf_counter()
        state, context = request.app.state.server, context_of(request.scope)
        texts = body.texts
        key = canary_key(request, context.request_id)
        submission = await rollout.submit(state.batcher, texts, key, settings.request_timeout_s)
        predictions = submission.results
        version = predictions[0].version  # one model scored them all (serving/rollout.py)
        labels = [p.label for p in predictions]
        metrics.count_labels(labels)
        monitor.remember(context.request_id, labels)  # feedback names a text by its index
        context.log.update(
            prediction_fields(body.texts, version, submission.batch_size, settings.log_text)
        )
        return json_response(
            BatchResponse(
                predictions=[LabelScore(label=p.label, score=p.score) for p in predictions],
                model_version=version,
                latency_ms=elapsed_ms(started),
            )
        )

    @app.post(
        "/feedback",
        response_model=FeedbackResponse,
        responses={code: {"model": ErrorResponse} for code in (404, 409, 413)},
    )
    async def give_feedback(body: FeedbackRequest, context: RequestCtx) -> Response:
        """The true label of an earlier prediction, named by its X-Request-ID (and its index
        in a /predict/batch request): counted in inference_feedback_total{outcome}."""
        answer = monitor.give_feedback(body)  # 404 unknown or expired, 409 given before
        context.log.update(feedback_for=body.request_id, correct=answer.correct)
        return json_response(answer, exclude_none=True)

    return app


app = create_app()  # the app uvicorn serves (the command above)

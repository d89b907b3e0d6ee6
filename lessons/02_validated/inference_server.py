"""Stage 2, validated: a stable contract, limits derived from the data, and clear errors.

Run from the repository root:
    uvicorn --app-dir lessons/02_validated inference_server:app --host 127.0.0.1 --port 8000
"""

import time
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from sentiment_model import SentimentModel, load_model
from sentiment_model.data import clean_text
from serving.asgi import BodyLimitMiddleware
from serving.errors import install_error_handlers
from serving.schemas import (
    BatchResponse,
    HealthResponse,
    LabelScore,
    PredictResponse,
    json_response,
    request_models,
)
from serving.settings import Settings, load_settings


# --- Dependencies ----------------------------------------------------------------------------
# `async def` for a plain lookup: FastAPI runs a `def` dependency in its thread pool.
async def get_model(request: Request) -> SentimentModel:
    return request.app.state.model


Model = Annotated[SentimentModel, Depends(get_model)]


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def create_app(settings: Settings | None = None, *, load_model=load_model) -> FastAPI:
    """The server, built from ``settings`` (default: the INFERENCE_* environment variables).

    ``load_model`` loads the model at start-up; a test passes its own. Nothing is shared
    between two apps: each has its own settings and request models.
    """
    # --- Settings: from INFERENCE_* environment variables; a bad value stops start-up -------
    settings = settings or load_settings()
    PredictRequest, BatchRequest = request_models(settings.max_text_chars, settings.max_batch_items)

    # --- Start-up: load the model once, before the first request -----------------------------
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.model = load_model(settings.model_dir)
        yield

    app = FastAPI(title="Sentiment inference server (stage 2: validated)", lifespan=lifespan)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    install_error_handlers(app)

    # --- Routes: validate -> preprocess -> infer -> postprocess ------------------------------
    # Plain `def`: FastAPI runs them in its thread pool, so the CPU-bound model call never
    # blocks the event loop (which keeps accepting connections and answering /health meanwhile).
    @app.get("/health", response_model=HealthResponse)
    def health(model: Model) -> Response:
        return json_response(HealthResponse(model_loaded=True, model_version=model.version))

    @app.get("/model")
    def model_info(model: Model) -> Response:
        return json_response(model.metadata)

    @app.post("/predict", response_model=PredictResponse)
    def predict(body: PredictRequest, model: Model) -> Response:
        started = time.perf_counter()
        texts = [clean_text(body.text)]  # the same cleaning as the training data
        [prediction] = model.predict(texts)
        return json_response(
            PredictResponse(
                label=prediction.label,
                score=prediction.score,
                model_version=model.version,
                latency_ms=elapsed_ms(started),
            )
        )

    @app.post("/predict/batch", response_model=BatchResponse)
    def predict_batch(body: BatchRequest, model: Model) -> Response:
        started = time.perf_counter()
        texts = [clean_text(text) for text in body.texts]
        predictions = model.predict(texts)
        return json_response(
            BatchResponse(
                predictions=[LabelScore(label=p.label, score=p.score) for p in predictions],
                model_version=model.version,
                latency_ms=elapsed_ms(started),
            )
        )

    return app


app = create_app()  # the app uvicorn serves (the command above)

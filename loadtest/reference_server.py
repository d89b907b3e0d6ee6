"""The FastAPI ceiling: an app that validates each request exactly as the final stage does and
answers a constant, with no model, no batching, no metrics and no logs.

    uvicorn loadtest.reference_server:app --host 127.0.0.1 --port 8001

No FastAPI server on one core can serve ``/predict`` faster than this one, so the benchmark
reports the final stage's throughput as a fraction of it (and the model-alone ceiling as the
other bound). Same request models and limits as the final stage (``serving.schemas``,
``serving.settings``); the answers are well-formed but meaningless.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response

from serving.schemas import BatchResponse, LabelScore, PredictResponse, request_models
from serving.settings import load_settings

settings = load_settings()
PredictRequest, BatchRequest = request_models(settings.max_text_chars, settings.max_batch_items)
ANSWER = LabelScore(label="positive", score=0.5)
PREDICT_BODY = PredictResponse(
    **ANSWER.model_dump(), model_version="reference", latency_ms=0.0
).model_dump_json()

app = FastAPI(title="Reference: FastAPI validation and a constant answer, no model")


@app.get("/ready")
async def ready() -> dict:
    return {"ready": True}


@app.post("/predict", response_model=PredictResponse)
async def predict(body: PredictRequest) -> Response:
    return Response(PREDICT_BODY, media_type="application/json")


@app.post("/predict/batch", response_model=BatchResponse)
async def predict_batch(body: BatchRequest) -> Response:
    answer = BatchResponse(
        predictions=[ANSWER] * len(body.texts), model_version="reference", latency_ms=0.0
    )
    return Response(answer.model_dump_json(), media_type="application/json")

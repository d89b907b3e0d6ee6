"""The bare batched reference: what the final stage would serve with none of production's layers.

    python -m serving.serve --app-dir . loadtest.bare_batched:app --port 8001

The benchmark serves it as ``bare`` (``python -m loadtest.bench --stages naive fast bare``), so
the price of production is a measured bar next to the stages, not a sentence. It keeps exactly
what makes the final stage fast and drops everything that makes it a production service:

* the final stage's request model (``serving.schemas.request_models``, the same limits), and
  its answer (``PredictResponse``, serialised once by pydantic-core, as the final stage does);
* the same greedy batcher: ``serving.batcher.DynamicBatcher`` itself, with the final stage's
  batch size and queue bound and no window. The class, not a 30-line copy of its policy, so
  that the hand-off (futures, queue, model thread) is the same code in both and the gap
  between them is production's layers only;
* the same scorer: the direct scorer (``model.use_scorer("direct")``), texts cleaned as the
  training data in the model thread;
* the same free speed-ups, which are not production features: ``gc.freeze()`` after loading
  (stage 5 on) and the young generation's threshold of stage 10 (``lean``), so the reference is
  never slower for a reason that has nothing to do with production's layers.

Nothing else: no metrics, no logs, no request ids, no body, header or connection limits beyond
what the request model checks, no readiness, no drain, no error handlers. Never deploy it.
"""

from __future__ import annotations

import gc
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import Response

from sentiment_model import load_model
from sentiment_model.data import clean_text
from serving.batcher import DynamicBatcher
from serving.schemas import PredictResponse, request_models
from serving.settings import load_settings

settings = load_settings()  # INFERENCE_MODEL_DIR, the limits and the batch size, as the stages
PredictRequest, _ = request_models(settings.max_text_chars, settings.max_batch_items)


@asynccontextmanager
async def lifespan(app: FastAPI):
    model = load_model(settings.model_dir)
    model.use_scorer("direct")
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)  # as lessons/10_price/inference_server.py
    batcher = DynamicBatcher(
        lambda texts: model.predict([clean_text(t) for t in texts]),
        max_batch_size=settings.max_batch_size,
        max_queue=settings.max_queue,
    )
    await batcher.start()
    app.state.model, app.state.batcher = model, batcher
    yield
    await batcher.stop(settings.drain_timeout_s)


app = FastAPI(title="Bare batched reference (benchmarks only)", lifespan=lifespan)


@app.post("/predict", response_model=PredictResponse)
async def predict(body: PredictRequest) -> Response:
    started = time.perf_counter()
    submission = await app.state.batcher.submit([body.text], settings.request_timeout_s)
    [prediction] = submission.results
    answer = PredictResponse(
        label=prediction.label,
        score=prediction.score,
        model_version=app.state.model.version,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
    )
    return Response(answer.model_dump_json(), media_type="application/json")

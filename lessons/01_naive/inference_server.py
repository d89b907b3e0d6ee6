"""Stage 1, naive: the server a notebook turns into first. It works; README.md shows what
goes wrong with it.

Run from the repository root:
    uvicorn --app-dir lessons/01_naive inference_server:app --host 127.0.0.1 --port 8000
"""

import os

from fastapi import FastAPI
from pydantic import BaseModel

from sentiment_model import load_model

# Loaded once, when the module is imported (INFERENCE_MODEL_DIR unset: models/LATEST).
model = load_model(os.environ.get("INFERENCE_MODEL_DIR") or None)

app = FastAPI()


class Review(BaseModel):
    text: str


@app.post("/predict")
def predict(review: Review):
    prediction = model.predict([review.text])[0]
    return {"label": prediction.label, "score": prediction.score}

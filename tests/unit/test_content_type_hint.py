"""A body sent without ``Content-Type: application/json`` gets a 422 that says so."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from serving.errors import install_error_handlers

HINT = "send the header Content-Type: application/json"


class Review(BaseModel):
    text: str


def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/predict")
    def predict(review: Review) -> dict:
        return {"text": review.text}

    return TestClient(app)


def test_form_body_gets_the_content_type_hint():
    # What `curl -d '{"text": "x"}'` sends without -H: application/x-www-form-urlencoded.
    answer = client().post(
        "/predict",
        content=b'{"text": "x"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["body"] and error["msg"].endswith(HINT)


def test_json_body_errors_have_no_hint():
    answer = client().post("/predict", json={"text": 1})
    assert answer.status_code == 422
    assert HINT not in answer.text
    assert client().post("/predict", json={"text": "x"}).json() == {"text": "x"}

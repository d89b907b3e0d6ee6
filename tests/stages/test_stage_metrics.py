"""Stage 3 (metrics): metrics, JSON logs and request ids on top of stage 2 (lesson 03)."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def client(start_stage):
    with start_stage("metrics") as c:
        yield c


def value(stage: FastAPI, name: str, **labels: str) -> float:
    return stage.state.metrics.registry.get_sample_value(name, labels) or 0.0


def test_metrics_exposed_and_moving(client):
    stage = client.app
    client.post("/predict", json={"text": "A wonderful film."})
    client.post("/predict/batch", json={"texts": ["great", "awful", "fine"]})
    client.post("/predict", json={"text": ""})
    text = client.get("/metrics").text
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {
        "http_requests",
        "http_request_duration_seconds",
        "http_requests_in_progress",
        "inference_batch_size",
        "inference_batch_duration_seconds",
        "inference_predictions",
        "model_info",
    } <= names
    ok = {"method": "POST", "route": "/predict", "status": "200"}
    assert value(stage, "http_requests_total", **ok) == 1
    assert value(stage, "http_requests_total", method="POST", route="/predict", status="422") == 1
    assert value(stage, "inference_batch_size_count") == 2
    assert value(stage, "inference_batch_size_sum") == 4
    labels = ("positive", "negative")
    assert sum(value(stage, "inference_predictions_total", label=x) for x in labels) == 4


def test_request_id_echoed_or_created(client):
    r = client.post("/predict", json={"text": "good"}, headers={"X-Request-ID": "abc-1"})
    assert r.headers["x-request-id"] == "abc-1"
    r = client.post("/predict", json={"text": ""}, headers={"X-Request-ID": "bad id!"})
    assert r.headers["x-request-id"] != "bad id!"
    assert r.json()["request_id"] == r.headers["x-request-id"]


def test_one_json_log_line_per_request(client, tmp_path):
    client.post("/predict", json={"text": "secret words"}, headers={"X-Request-ID": "log-1"})
    client.get("/health", headers={"X-Request-ID": "log-2"})
    lines = [json.loads(x) for x in (tmp_path / "requests.log").read_text().splitlines()]
    events = [x["event"] for x in lines]
    assert events[0] == "model_loaded"
    [predict] = [x for x in lines if x.get("request_id") == "log-1"]
    assert predict["status"] == 200 and predict["text_chars"] == len("secret words")
    assert predict["batch_size"] == 1 and predict["latency_ms"] > 0
    assert len([x for x in lines if x.get("request_id") == "log-2"]) == 1
    assert "secret words" not in (tmp_path / "requests.log").read_text()


def test_model_error_is_500_with_request_id(client, monkeypatch, tmp_path):
    stage = client

    def broken(texts):
        raise RuntimeError("the model exploded")

    monkeypatch.setattr(stage.app.state.model, "predict", broken)
    r = client.post("/predict", json={"text": "good"}, headers={"X-Request-ID": "err-1"})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error", "request_id": "err-1"}
    log = (tmp_path / "requests.log").read_text()
    assert "Traceback" in log and "the model exploded" in log  # the trace is in the log

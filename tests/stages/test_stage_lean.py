"""Stage 10, lean: the cuts keep the fast stage's contract. Same answers, headers, metrics and
access-log fields; 503 while not ready; the collector's threshold set once the model is in."""

from __future__ import annotations

import gc
import json
import threading

import pytest

from sentiment_model import load_model
from serving.logs import flush_logs

TEXTS = ["A wonderful, moving film.", "Terrible and boring.", "Café crème, naïve!"]


@pytest.fixture
def gc_threshold():
    """The stage sets the process's collector threshold: put it back after the test."""
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def answered(start_stage, stage: str, log_path) -> tuple[list, list[dict], float]:
    """(answers with their request ids, access-log lines, requests counted) of ``stage``."""
    with start_stage(stage, log_path=log_path) as client:
        responses = [
            client.post("/predict", json={"text": t}, headers={"X-Request-ID": f"id-{i}"})
            for i, t in enumerate(TEXTS)
        ]
        batch = client.post("/predict/batch", json={"texts": TEXTS})
        metrics = client.get("/metrics").text
    flush_logs()
    lines = [json.loads(x) for x in log_path.read_text(encoding="utf-8").splitlines()]
    answers = [(r.status_code, r.headers["x-request-id"], r.json()) for r in responses]
    answers.append((batch.status_code, None, batch.json()))
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("http_requests_total{") and 'route="/predict"' in line
    )
    predictions = [x for x in lines if x.get("route") in ("/predict", "/predict/batch")]
    return answers, predictions, counted


def test_lean_answers_counts_and_logs_as_fast(start_stage, tmp_path, gc_threshold):
    fast, fast_log, fast_counted = answered(start_stage, "fast", tmp_path / "fast.log")
    lean, lean_log, lean_counted = answered(start_stage, "lean", tmp_path / "lean.log")

    def comparable(answers):
        return [
            (status, rid, {k: v for k, v in body.items() if k != "latency_ms"})
            for status, rid, body in answers
        ]

    assert comparable(lean) == comparable(fast)
    assert [s for s, _, _ in lean] == [200] * 4
    assert lean_counted == fast_counted == 3
    assert len(lean_log) == len(fast_log) == 4
    for a, b in zip(fast_log, lean_log, strict=True):
        assert set(a) == set(b)  # the same fields on every access-log line
        assert {k: a[k] for k in ("status", "route", "texts", "batch_size")} == {
            k: b[k] for k in ("status", "route", "texts", "batch_size")
        }
    assert [x["request_id"] for x in lean_log[:3]] == ["id-0", "id-1", "id-2"]
    assert lean_log[0]["level"] == "INFO"


def test_lean_sets_the_young_generation_threshold_once_loaded(start_stage, gc_threshold):
    gc.set_threshold(700, 10, 10)
    module = start_stage.module("lean")
    with start_stage("lean") as client:
        assert client.post("/predict", json={"text": "Fine."}).status_code == 200
        assert gc.get_threshold() == (module.GC_YOUNG_THRESHOLD, 10, 10)


def test_lean_predictions_503_until_ready(start_stage, small_model_dir, gc_threshold):
    gate = threading.Event()

    def slow_load(path):
        gate.wait(30)
        return load_model(path)

    try:
        with start_stage("lean", load_model=slow_load, ready=False) as client:
            for path, body in (
                ("/predict", {"text": "Fine."}),
                ("/predict/batch", {"texts": ["A"]}),
            ):
                response = client.post(path, json=body)
                assert response.status_code == 503
                assert response.json()["request_id"] == response.headers["x-request-id"]
                assert "Retry-After" in response.headers
            gate.set()
            start_stage.wait_ready(client)
            assert client.post("/predict", json={"text": "Fine."}).status_code == 200
    finally:
        gate.set()


@pytest.mark.parametrize("stage", ["fast", "lean"])
def test_invalid_body_while_not_ready(start_stage, small_model_dir, gc_threshold, stage):
    """Readiness is decided before the body is validated, in both: 503, not 422."""
    gate = threading.Event()

    def slow_load(path):
        gate.wait(30)
        return load_model(path)

    try:
        with start_stage(stage, load_model=slow_load, ready=False) as client:
            response = client.post("/predict", json={"text": ""})
            assert response.status_code == 503
            gate.set()
    finally:
        gate.set()

"""INFERENCE_BENCH_OFF (benchmarks only: loadtest/bench_app.py) switches the final stage's layers
off, one by one, without the final stage itself reading the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from loadtest.bench_app import InlineBatcher, create_bench_app
from serving.batcher import DynamicBatcher
from serving.logs import flush_logs
from serving.multiprocess import WorkerMetrics
from serving.settings import load_settings
from serving.stages import FINAL_STAGE


def bench_app(start_stage, off: str | None, **settings):
    """The bench factory over the final stage's module (small model, the test's log)."""
    overrides = start_stage.defaults | {name.lower(): value for name, value in settings.items()}
    stage = start_stage.module(FINAL_STAGE)
    return create_bench_app(off, load_settings(**overrides), stage=stage)


def run(start_stage, log_path: Path, off: str):
    """Start the final stage with ``BENCH_OFF=off``, send a few requests, stop it."""
    with TestClient(bench_app(start_stage, off, log_path=log_path)) as client:
        start_stage.wait_ready(client)
        single = client.post("/predict", json={"text": "A wonderful film."})
        batch = client.post("/predict/batch", json={"texts": ["Dull.", "Great!"]})
        bad = client.post("/predict", json={"text": ""})
        scrape = client.get("/metrics").text
        batcher = client.app.state.server.batcher
    flush_logs()
    return single, batch, bad, scrape, batcher, log_path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "off", ["", "metrics", "access_log", "request_id", "batcher", "metrics,access_log,batcher"]
)
def test_each_layer_switches_off_alone(start_stage, tmp_path, off):
    single, batch, bad, scrape, batcher, log = run(start_stage, tmp_path / "r.log", off)
    layers = set(off.split(",")) - {""}
    assert single.status_code == 200 and single.json()["label"] == "positive"
    assert batch.status_code == 200 and len(batch.json()["predictions"]) == 2
    assert bad.status_code == 422
    assert ("x-request-id" in single.headers) == ("request_id" not in layers)
    assert ('"event":"request"' in log) == ("access_log" not in layers)
    assert ('http_requests_total{method="POST"' in scrape) == ("metrics" not in layers)
    assert ("inference_predictions_total{" in scrape) == ("metrics" not in layers)
    inline = type(batcher).__name__ == "InlineBatcher"
    assert inline == ("batcher" in layers)


def test_unknown_layer_stops_start_up(start_stage, tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="INFERENCE_BENCH_OFF"):
        bench_app(start_stage, "metrics,gc", LOG_PATH=tmp_path / "r.log")
    monkeypatch.setenv("INFERENCE_BENCH_OFF", "metrics, gc")  # what the benchmark sets
    with pytest.raises(SystemExit, match=r"INFERENCE_BENCH_OFF='metrics, gc': .*\['gc'\]"):
        bench_app(start_stage, None, LOG_PATH=tmp_path / "r.log")


def test_the_final_stage_itself_ignores_the_variable(start_stage, monkeypatch):
    """The switches live in the bench factory only: the server a student runs never reads it,
    and the factory leaves the stage's module as it found it."""
    monkeypatch.setenv("INFERENCE_BENCH_OFF", "metrics,access_log,request_id,batcher")
    with start_stage(FINAL_STAGE) as client:
        answer = client.post("/predict", json={"text": "A wonderful film."})
        assert "x-request-id" in answer.headers
        assert type(client.app.state.server.batcher) is DynamicBatcher
        assert 'http_requests_total{method="POST"' in client.get("/metrics").text
    stage = start_stage.module(FINAL_STAGE)
    with TestClient(bench_app(start_stage, None)) as client:
        start_stage.wait_ready(client)
        assert type(client.app.state.server.batcher) is InlineBatcher
        assert stage.DynamicBatcher is InlineBatcher  # while the bench app runs
    assert stage.DynamicBatcher is DynamicBatcher and stage.WorkerMetrics is WorkerMetrics

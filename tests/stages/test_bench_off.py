"""INFERENCE_BENCH_OFF (benchmarks only) switches the final stage's layers off, one by one."""

from __future__ import annotations

import importlib.util
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.logs import flush_logs

ROOT = Path(__file__).resolve().parents[2]


def final_stage(monkeypatch, **env):
    for name, value in env.items():
        monkeypatch.setenv(f"INFERENCE_{name}", str(value))
    spec = importlib.util.spec_from_file_location(
        f"stage_{uuid.uuid4().hex}", ROOT / "inference_server.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(module, log_path: Path):
    with TestClient(module.app) as client:
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.02)
        single = client.post("/predict", json={"text": "A wonderful film."})
        batch = client.post("/predict/batch", json={"texts": ["Dull.", "Great!"]})
        bad = client.post("/predict", json={"text": ""})
        scrape = client.get("/metrics").text
    flush_logs()
    return single, batch, bad, scrape, log_path.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "off", ["", "metrics", "access_log", "request_id", "batcher", "metrics,access_log,batcher"]
)
def test_each_layer_switches_off_alone(monkeypatch, tmp_path, small_model_dir, off):
    log_path = tmp_path / "r.log"
    module = final_stage(monkeypatch, MODEL_DIR=small_model_dir, LOG_PATH=log_path, BENCH_OFF=off)
    single, batch, bad, scrape, log = run(module, log_path)
    layers = set(off.split(",")) - {""}
    assert single.status_code == 200 and single.json()["label"] == "positive"
    assert batch.status_code == 200 and len(batch.json()["predictions"]) == 2
    assert bad.status_code == 422
    assert ("x-request-id" in single.headers) == ("request_id" not in layers)
    assert ('"event":"request"' in log) == ("access_log" not in layers)
    assert ('http_requests_total{method="POST"' in scrape) == ("metrics" not in layers)
    assert ("inference_predictions_total{" in scrape) == ("metrics" not in layers)
    inline = type(module.app.state.server.batcher).__name__ == "InlineBatcher"
    assert inline == ("batcher" in layers)


def test_unknown_layer_stops_start_up(monkeypatch, tmp_path):
    with pytest.raises(SystemExit, match="INFERENCE_BENCH_OFF"):
        final_stage(monkeypatch, BENCH_OFF="metrics,gc", LOG_PATH=tmp_path / "r.log")

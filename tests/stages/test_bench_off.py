"""INFERENCE_BENCH_OFF (benchmarks only) switches the final stage's layers off, one by one."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.logs import flush_logs


def run(start_stage, log_path: Path, off: str):
    """Start the final stage with ``BENCH_OFF=off``, send a few requests, stop it."""
    with start_stage("fast", log_path=log_path, BENCH_OFF=off) as client:
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


def test_unknown_layer_stops_start_up(start_stage, tmp_path):
    with pytest.raises(SystemExit, match="INFERENCE_BENCH_OFF"):
        start_stage.app("fast", BENCH_OFF="metrics,gc", LOG_PATH=tmp_path / "r.log")

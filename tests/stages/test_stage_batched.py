"""The final stage's contract (top-level inference_server.py), line by line; a test of what an
earlier stage introduced runs on that stage and every later one (``stages_from``).

Each test builds its own app with ``start_stage`` (tests/conftest.py), so settings, metrics
registry and log file are the test's own; ``client`` is tests/stages/conftest.py's and the
gate helpers are tests/stages/gating.py's. Scenarios that need requests in
flight at the same time run in one event loop (httpx.ASGITransport) and hold the model with a
gate, so they are deterministic: no sleeps decide an outcome.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
import uuid
from pathlib import Path

import httpx
import pytest
from gating import GatedModel, metric, run_scenario, stages_from, until
from prometheus_client.parser import text_string_to_metric_families

from sentiment_model import load_model
from sentiment_model.data import clean_text
from serving.logs import flush_logs

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
POSITIVE = "A wonderful, moving film with brilliant acting. I loved every minute of it."
NEGATIVE = "Terrible, boring and badly acted. The worst movie I have seen, a waste of time."


def log_lines(path: Path) -> list[dict]:
    """Every line of the JSON log (each must parse on its own)."""
    flush_logs()  # the final stage writes its log in a background thread
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- health, readiness, model, predictions ----------------------------------------------------
def test_health(client, small_model_dir):
    version = load_model(small_model_dir).version
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model_loaded": True, "model_version": version}


def test_ready(client):
    r = client.get("/ready")
    assert (r.status_code, r.json()) == (200, {"ready": True})


def test_model_metadata(client, small_model_dir):
    r = client.get("/model")
    assert r.status_code == 200
    meta = json.loads((small_model_dir / "metadata.json").read_text())
    assert r.json() == meta


def test_predict(client, small_model_dir):
    model = load_model(small_model_dir)
    for text, expected in ((POSITIVE, "positive"), (NEGATIVE, "negative")):
        r = client.post("/predict", json={"text": text})
        assert r.status_code == 200
        body = r.json()
        assert set(body) == {"label", "score", "model_version", "latency_ms"}
        assert body["label"] == expected
        assert body["model_version"] == model.version
        assert body["latency_ms"] > 0
        # score is the probability of the returned label
        proba = model.predict_proba([clean_text(text)])[0]
        assert body["score"] == pytest.approx(proba[model.labels.index(expected)])
        assert body["score"] >= 0.5


def test_predict_batch_keeps_input_order(client, small_model_dir):
    model = load_model(small_model_dir)
    texts = [POSITIVE, NEGATIVE, "fine", NEGATIVE + " really", "great great great", "meh"]
    r = client.post("/predict/batch", json={"texts": texts})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"predictions", "model_version", "latency_ms"}
    assert body["model_version"] == model.version and body["latency_ms"] > 0
    expected = [model.predict([clean_text(t)])[0] for t in texts]
    assert [p["label"] for p in body["predictions"]] == [e.label for e in expected]
    assert [p["score"] for p in body["predictions"]] == pytest.approx([e.score for e in expected])


def test_limits_themselves_are_accepted(client):
    assert client.post("/predict", json={"text": "x" * 10_000}).status_code == 200
    assert client.post("/predict", json={"text": "a"}).status_code == 200
    assert client.post("/predict/batch", json={"texts": ["good"] * 64}).status_code == 200


# --- validation: each bad input its own case --------------------------------------------------
BAD_PREDICT = {
    "number": ({"text": 5}, "text"),
    "float": ({"text": 1.5}, "text"),
    "bool": ({"text": True}, "text"),
    "null": ({"text": None}, "text"),
    "list": ({"text": ["good"]}, "text"),
    "object": ({"text": {"a": 1}}, "text"),
    "missing field": ({}, "text"),
    "unknown field": ({"text": "good", "lang": "en"}, "lang"),
    "empty": ({"text": ""}, "text"),
    "whitespace only": ({"text": " \n\t "}, "text"),
    "too long": ({"text": "x" * 10_001}, "text"),
    "body is a list": (["good"], "body"),
    "body is a string": ("good", "body"),
}
BAD_BATCH = {
    "empty list": ({"texts": []}, "texts"),
    "too many": ({"texts": ["good"] * 65}, "texts"),
    "not a list": ({"texts": "good"}, "texts"),
    "number inside": ({"texts": ["good", 5]}, "texts"),
    "empty text inside": ({"texts": ["good", ""]}, "texts"),
    "blank text inside": ({"texts": ["good", "   "]}, "texts"),
    "long text inside": ({"texts": ["good", "x" * 10_001]}, "texts"),
    "unknown field": ({"texts": ["good"], "text": "bad"}, "text"),
    "missing field": ({}, "texts"),
}


@pytest.mark.parametrize("body,field", BAD_PREDICT.values(), ids=BAD_PREDICT.keys())
def test_predict_rejects(client, body, field):
    r = client.post("/predict", json=body)
    assert r.status_code == 422
    problems = r.json()["detail"]
    assert any(field in map(str, p["loc"]) for p in problems), problems


@pytest.mark.parametrize("body,field", BAD_BATCH.values(), ids=BAD_BATCH.keys())
def test_predict_batch_rejects(client, body, field):
    r = client.post("/predict/batch", json=body)
    assert r.status_code == 422
    problems = r.json()["detail"]
    assert any(field in map(str, p["loc"]) for p in problems), problems


@pytest.mark.parametrize(
    "raw", [b'{"text": "good"', b"not json", b"", b'{"text": "a"}{"text": "b"}', b"\xff\xfe"]
)
def test_malformed_json_is_422(client, raw):
    r = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"]


def test_whitespace_message_names_the_problem(client):
    r = client.post("/predict", json={"text": "   "})
    assert "whitespace" in r.json()["detail"][0]["msg"]


def test_unknown_path_and_wrong_method(client):
    assert client.get("/nope").status_code == 404
    assert client.get("/predict").status_code == 405
    assert client.put("/predict/batch", json={"texts": ["a"]}).status_code == 405
    assert client.post("/health").status_code == 405


@pytest.mark.parametrize("stage", stages_from("hardened"))
@pytest.mark.parametrize("path", ["/predict/", "/predict/batch/", "/health/", "/ready/"])
def test_trailing_slash_is_404_not_a_redirect_built_from_the_host_header(start_stage, stage, path):
    """Starlette's slash redirect wrote the client's Host into Location (an open redirect)."""
    with start_stage(stage) as client:
        responses = (client.get(path, headers={"Host": "evil.example"}), client.post(path, json={}))
    for r in responses:
        assert r.status_code == 404, r.headers
        assert "location" not in r.headers


@pytest.mark.parametrize("stage", stages_from("lifecycle"))
@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_probes_answer_head_like_get(start_stage, stage, path):
    with start_stage(stage) as client:
        get, head = client.get(path), client.head(path)
        assert (head.status_code, get.status_code) == (200, 200)
        assert head.headers["content-type"] == get.headers["content-type"] == "application/json"
        labels = {"method": "HEAD", "route": path, "status": "200"}
        assert metric(client.app, "http_requests_total", **labels) == 1


@pytest.mark.parametrize("stage", stages_from("lifecycle"))
def test_head_on_a_draining_server_says_503_with_retry_after(start_stage, stage):
    with start_stage(stage) as client:
        client.app.state.server.begin_drain()
        r = client.head("/ready")
        assert r.status_code == 503 and r.headers["retry-after"] == "1"


# --- body size ------------------------------------------------------------------------------
def test_body_over_limit_is_413(start_stage):
    with start_stage(MAX_BODY_BYTES=4096) as c:
        ok = c.post("/predict", json={"text": "x" * 4000})
        assert ok.status_code == 200
        r = c.post("/predict", json={"text": "x" * 5000})
        assert r.status_code == 413
        assert "4096" in r.json()["detail"]
        assert r.json()["request_id"] == r.headers["x-request-id"]


def test_default_limit_refuses_multi_megabyte_body(client):
    r = client.post("/predict", json={"text": "x" * 3_000_000})
    assert r.status_code == 413


def test_chunked_body_refused_before_read_whole(start_stage):
    """No Content-Length: the body is counted as it streams; reading stops at the limit."""
    app = start_stage.app(MAX_BODY_BYTES=4096)
    chunks_sent = 0
    sent: list[dict] = []

    async def receive():
        nonlocal chunks_sent
        chunks_sent += 1
        if chunks_sent > 1000:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    async def send(message):
        sent.append(message)

    async def main():
        async with app.router.lifespan_context(app):
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/predict",
                "raw_path": b"/predict",
                "root_path": "",
                "query_string": b"",
                "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 80),
                "state": {},
            }
            await app(scope, receive, send)

    asyncio.run(main())
    assert sent[0]["status"] == 413
    assert chunks_sent <= 5  # 4 KiB limit, 1 KiB chunks: it stopped reading right away


# --- X-Request-ID -----------------------------------------------------------------------------
@pytest.mark.parametrize("given", ["abc-123", "A.b_c-9", "x" * 128])
def test_safe_request_id_is_echoed(client, given):
    r = client.post("/predict", json={"text": "good"}, headers={"X-Request-ID": given})
    assert r.headers["x-request-id"] == given


@pytest.mark.parametrize("given", ["x" * 129, "has space", "semi;colon", "new\tline", "ümlaut", ""])
def test_unsafe_request_id_is_replaced(client, given):
    r = client.get("/health", headers={"X-Request-ID": given.encode()})
    assert r.headers["x-request-id"] != given
    assert UUID.fullmatch(r.headers["x-request-id"])


def test_every_response_has_a_request_id(client):
    responses = [
        client.get("/health"),
        client.get("/ready"),
        client.get("/metrics"),
        client.get("/model"),
        client.post("/predict", json={"text": "good"}),
        client.post("/predict", json={"text": ""}),
        client.get("/nope"),
        client.delete("/predict"),
    ]
    ids = [r.headers["x-request-id"] for r in responses]
    assert all(UUID.fullmatch(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert responses[5].json()["request_id"] == ids[5]  # error bodies quote it too


# --- metrics ----------------------------------------------------------------------------------
METRIC_NAMES = {
    "http_requests": "counter",
    "http_request_duration_seconds": "histogram",
    "http_requests_in_progress": "gauge",
    "inference_batch_size": "histogram",
    "inference_queue_wait_seconds": "histogram",
    "inference_batch_duration_seconds": "histogram",
    "inference_queue_depth": "gauge",
    "inference_predictions": "counter",
    "inference_rejections": "counter",
    "model_info": "gauge",
}


def test_metrics_endpoint_exposes_every_metric(client, small_model_dir):
    client.post("/predict", json={"text": "good"})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name, kind in METRIC_NAMES.items():
        assert families[name].type == kind, name
    [info] = families["model_info"].samples
    model = load_model(small_model_dir)
    assert info.labels == {
        "version": model.version,
        "sklearn_version": model.metadata.sklearn_version,
    }
    assert info.value == 1
    reasons = {s.labels["reason"] for s in families["inference_rejections"].samples}
    assert {"queue_full", "timeout", "not_ready"} <= reasons
    buckets = [
        float(s.labels["le"])
        for s in families["http_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"
    ]
    assert min(buckets) == 0.0005 and max(buckets) == 10.0
    sizes = {s.labels["le"] for s in families["inference_batch_size"].samples if "le" in s.labels}
    assert {"1.0", "64.0"} <= sizes


def test_metrics_move(client):
    server = client.app
    requests = ("http_requests_total", {"method": "POST", "route": "/predict", "status": "200"})
    before = {
        "requests": metric(server, requests[0], **requests[1]),
        "bad": metric(server, "http_requests_total", method="POST", route="/predict", status="422"),
        "duration": metric(
            server, "http_request_duration_seconds_count", method="POST", route="/predict"
        ),
        "positive": metric(server, "inference_predictions_total", label="positive"),
        "negative": metric(server, "inference_predictions_total", label="negative"),
        "batches": metric(server, "inference_batch_size_count"),
        "texts": metric(server, "inference_batch_size_sum"),
        "waits": metric(server, "inference_queue_wait_seconds_count"),
        "model_time": metric(server, "inference_batch_duration_seconds_count"),
        "unmatched": metric(
            server, "http_requests_total", method="GET", route="unmatched", status="404"
        ),
    }
    client.post("/predict", json={"text": POSITIVE})
    client.post("/predict", json={"text": NEGATIVE})
    client.post("/predict/batch", json={"texts": [POSITIVE, NEGATIVE, POSITIVE]})
    client.post("/predict", json={"text": ""})
    client.get("/no/such/page/12345")
    assert metric(server, requests[0], **requests[1]) == before["requests"] + 2
    assert (
        metric(server, "http_requests_total", method="POST", route="/predict", status="422")
        == before["bad"] + 1
    )
    assert (
        metric(server, "http_request_duration_seconds_count", method="POST", route="/predict")
        == before["duration"] + 3
    )
    assert metric(server, "inference_predictions_total", label="positive") == before["positive"] + 3
    assert metric(server, "inference_predictions_total", label="negative") == before["negative"] + 2
    assert metric(server, "inference_batch_size_count") == before["batches"] + 3
    assert metric(server, "inference_batch_size_sum") == before["texts"] + 5
    assert metric(server, "inference_queue_wait_seconds_count") == before["waits"] + 5
    assert metric(server, "inference_batch_duration_seconds_count") == before["model_time"] + 3
    # unknown paths share one label value: no label per URL
    assert (
        metric(server, "http_requests_total", method="GET", route="unmatched", status="404")
        == before["unmatched"] + 1
    )
    assert metric(server, "http_requests_in_progress") == 0
    assert metric(server, "inference_queue_depth") == 0


# --- logs -------------------------------------------------------------------------------------
def test_one_json_log_line_per_request(client, tmp_path, small_model_dir):
    secret = "a very particular review text 8f3a"
    ids = []
    for method, path, body in [
        ("POST", "/predict", {"text": secret}),
        ("POST", "/predict/batch", {"texts": [secret, "ok"]}),
        ("POST", "/predict", {"text": ""}),
        ("GET", "/health", None),
        ("GET", "/nope", None),
    ]:
        rid = f"test-{uuid.uuid4().hex}"
        client.request(method, path, json=body, headers={"X-Request-ID": rid})
        ids.append(rid)
    lines = log_lines(tmp_path / "requests.log")
    by_id = {}
    for line in lines:
        if line["event"] == "request":
            by_id.setdefault(line["request_id"], []).append(line)
    assert all(len(by_id[rid]) == 1 for rid in ids)
    version = load_model(small_model_dir).version
    single, batch, bad, health, missing = (by_id[rid][0] for rid in ids)
    for line in (single, batch, bad, health, missing):
        assert {
            "timestamp",
            "level",
            "event",
            "method",
            "path",
            "status",
            "latency_ms",
        } <= line.keys()
        assert line["timestamp"].endswith("+00:00")  # UTC
    assert (single["status"], single["model_version"], single["batch_size"]) == (200, version, 1)
    assert single["text_chars"] == len(secret)
    assert (batch["texts"], batch["text_chars"]) == (2, len(secret) + 2)
    assert bad["status"] == 422 and bad["error_type"] == "RequestValidationError"
    assert "body.text" in bad["error"]
    assert (missing["status"], missing["path"], missing["route"]) == (404, "/nope", "unmatched")
    assert secret not in (tmp_path / "requests.log").read_text()  # never the raw text


def test_log_text_opt_in(start_stage, tmp_path):
    with start_stage(LOG_TEXT="true") as c:
        assert c.post("/predict", json={"text": "opt-in review text"}).status_code == 200
    flush_logs()  # the final stage writes its log in a background thread
    assert "opt-in review text" in (tmp_path / "requests.log").read_text(encoding="utf-8")


@pytest.mark.parametrize("stage", stages_from("lifecycle"))
def test_start_up_and_shutdown_are_logged(start_stage, tmp_path, small_model_dir, stage):
    with start_stage(stage, MAX_BATCH_WAIT_MS="3"):
        pass
    lines = log_lines(tmp_path / "requests.log")
    [loaded] = [line for line in lines if line["event"] == "model_loaded"]
    assert loaded["model_version"] == load_model(small_model_dir).version
    assert loaded["load_seconds"] >= 0
    assert loaded["settings"]["max_batch_wait_ms"] == 3.0
    [shutdown] = [line for line in lines if line["event"] == "shutdown"]
    assert shutdown["drained_texts"] == 0
    assert shutdown["drain_complete"] is True


# --- readiness --------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", stages_from("lifecycle"))
def test_not_ready_while_loading(start_stage, stage):
    release = threading.Event()

    def slow_load(path):
        release.wait(10)
        return load_model(path)

    with start_stage(stage, load_model=slow_load, ready=False) as c:
        server = c.app
        r = c.get("/health")
        assert r.json() == {"status": "ok", "model_loaded": False, "model_version": None}
        r = c.get("/ready")
        assert (r.status_code, r.json()) == (503, {"ready": False, "reason": "model is loading"})
        assert r.headers["retry-after"] == "5"
        for response in (
            c.post("/predict", json={"text": "good"}),
            c.post("/predict/batch", json={"texts": ["good"]}),
            c.get("/model"),
        ):
            assert response.status_code == 503
            assert response.json()["detail"] == "model is loading"
            assert response.headers["retry-after"] == "5"  # every 503 says when to come back
        assert metric(server, "inference_rejections_total", reason="not_ready") == 3
        release.set()
        start_stage.wait_ready(c)
        assert c.post("/predict", json={"text": "good"}).status_code == 200
        assert c.get("/health").json()["model_loaded"] is True


def corrupt_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    data = bytearray((dst / "model.skops").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (dst / "model.skops").write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("stage", stages_from("lifecycle"))
@pytest.mark.parametrize("problem", ["missing", "checksum"])
def test_model_that_cannot_load_keeps_process_up(
    start_stage, tmp_path, small_model_dir, problem, stage
):
    if problem == "missing":
        model_dir, expected = tmp_path / "no-such-model", "model directory does not exist"
    else:
        model_dir, expected = corrupt_copy(small_model_dir, tmp_path / "bad"), "sha256"
    with start_stage(stage, MODEL_DIR=model_dir, ready=False) as c:
        start_stage.wait_until(lambda: c.app.state.server.load_error is not None, "no error")
        assert c.get("/health").json() == {
            "status": "ok",
            "model_loaded": False,
            "model_version": None,
        }
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["ready"] is False
        assert expected in r.json()["reason"] and r.headers["retry-after"] == "60"
        assert str(model_dir) not in r.text and "/" not in r.json()["reason"]  # log keeps paths
        for response in (
            c.post("/predict", json={"text": "good"}),
            c.post("/predict/batch", json={"texts": ["good"]}),
        ):
            assert response.status_code == 503 and response.headers["retry-after"] == "60"
            assert expected in response.json()["detail"]
        assert c.get("/metrics").status_code == 200
    failures = [
        x for x in log_lines(tmp_path / "requests.log") if x["event"] == "model_load_failed"
    ]
    assert len(failures) == 1  # logged once, clearly
    assert expected in failures[0]["error"] and failures[0]["level"] == "ERROR"
    assert model_dir.name in failures[0]["error"]


def test_shutting_down_refuses_new_predictions(client):
    client.app.state.server.begin_drain()  # what SIGTERM does first
    r = client.get("/ready")
    assert (r.status_code, r.json()) == (503, {"ready": False, "reason": "server is shutting down"})
    assert r.headers["retry-after"] == "1"
    r = client.post("/predict", json={"text": "good"})
    assert r.status_code == 503 and r.json()["detail"] == "server is shutting down"
    assert r.headers["retry-after"] == "1"
    assert client.get("/health").status_code == 200  # still alive


# --- overload, timeout, failures --------------------------------------------------------------
@pytest.mark.parametrize("stage", stages_from("batched"))
def test_full_queue_is_503_with_retry_after(start_stage, stage):
    gate = GatedModel()
    server = start_stage.app(
        stage, MAX_QUEUE=3, MAX_BATCH_ITEMS=2, MAX_BATCH_WAIT_MS=0, load_model=gate.load
    )
    results: dict = {}

    async def scenario(c: httpx.AsyncClient):
        running = asyncio.create_task(c.post("/predict", json={"text": "hold me"}))
        await until(gate.entered.is_set)  # the model is busy; the queue is empty
        queued = [
            asyncio.create_task(c.post("/predict/batch", json={"texts": ["q1", "q2"]})),
            asyncio.create_task(c.post("/predict", json={"text": "q3"})),
        ]
        batcher = server.state.server.batcher
        await until(lambda: batcher.queue_depth == 3)  # full
        results["depth"] = metric(server, "inference_queue_depth")
        results["single"] = await c.post("/predict", json={"text": "one too many"})
        results["batch"] = await c.post("/predict/batch", json={"texts": ["a", "b"]})
        gate.release.set()
        results["running"] = await running
        results["queued_batch"], results["queued_single"] = await asyncio.gather(*queued)
        results["after"] = await c.post("/predict", json={"text": "room again"})

    run_scenario(server, scenario)
    assert results.pop("depth") == 3  # the gauge reads the queue at scrape time
    for key in ("single", "batch"):
        assert results[key].status_code == 503
        assert results[key].headers["retry-after"] == "1"
        assert "overloaded" in results[key].json()["detail"]
    for key in ("running", "queued_batch", "queued_single", "after"):
        assert results[key].status_code == 200, key
    assert metric(server, "inference_rejections_total", reason="queue_full") == 2
    # the two queued requests rode in one batch of three texts
    assert ["q1", "q2", "q3"] in [sorted(b) for b in gate.batches]
    assert all("one too many" not in b for b in gate.batches)


@pytest.mark.parametrize("stage", stages_from("batched"))
def test_waiting_too_long_is_504_and_never_runs(start_stage, stage):
    gate = GatedModel()
    server = start_stage.app(
        stage, REQUEST_TIMEOUT_S="0.2", MAX_BATCH_WAIT_MS=0, load_model=gate.load
    )
    results: dict[str, httpx.Response] = {}

    async def scenario(c: httpx.AsyncClient):
        running = asyncio.create_task(c.post("/predict", json={"text": "hold on"}))
        await until(gate.entered.is_set)
        results["late"] = await c.post("/predict", json={"text": "too late"})  # times out
        gate.release.set()
        results["running"] = await running
        results["next"] = await c.post("/predict", json={"text": "next one"})

    run_scenario(server, scenario)
    # the held request itself also waited > 0.2 s: it times out too, the model still ran it
    assert results["late"].status_code == 504
    assert "0.2" in results["late"].json()["detail"]
    assert results["next"].status_code == 200
    assert all("too late" not in batch for batch in gate.batches)  # dropped, never run
    assert ["next one"] in gate.batches
    assert metric(server, "inference_rejections_total", reason="timeout") >= 1


def test_latency_includes_queueing(start_stage):
    gate = GatedModel()
    server = start_stage.app(MAX_BATCH_WAIT_MS=0, load_model=gate.load)
    results: dict[str, httpx.Response] = {}

    async def scenario(c: httpx.AsyncClient):
        running = asyncio.create_task(c.post("/predict", json={"text": "hold"}))
        await until(gate.entered.is_set)
        queued = asyncio.create_task(c.post("/predict", json={"text": "queued"}))
        await until(lambda: server.state.server.batcher.queue_depth == 1)
        await asyncio.sleep(0.3)
        gate.release.set()
        results["queued"], results["running"] = await queued, await running

    run_scenario(server, scenario)
    assert results["queued"].status_code == 200
    assert results["queued"].json()["latency_ms"] >= 250  # it waited >= 0.3 s in the queue
    assert metric(server, "inference_queue_wait_seconds_bucket", le="0.25") < metric(
        server, "inference_queue_wait_seconds_count"
    )


def test_failing_batch_is_500_and_server_keeps_serving(start_stage, tmp_path):
    gate = GatedModel()
    with start_stage(load_model=gate.load) as c:
        r = c.post("/predict", json={"text": "boom"}, headers={"X-Request-ID": "fail-1"})
        assert r.status_code == 500
        assert r.json() == {"detail": "internal error", "request_id": "fail-1"}
        assert r.headers["x-request-id"] == "fail-1"
        assert "Traceback" not in r.text and "exploded" not in r.text
        assert c.post("/predict", json={"text": "fine"}).status_code == 200
        r = c.post("/predict/batch", json={"texts": ["ok", "boom too"]})
        assert r.status_code == 500
        assert c.post("/predict/batch", json={"texts": ["ok", "fine"]}).status_code == 200
    lines = [x for x in log_lines(tmp_path / "requests.log") if x.get("request_id") == "fail-1"]
    errors = [x for x in lines if x["event"] == "unhandled_error"]
    assert errors and "in predict" in " ".join(errors[0]["trace"])  # the trace goes to the log
    text = (tmp_path / "requests.log").read_text()
    assert "boom" not in text and "exploded" not in text  # its message quotes the input
    [access] = [x for x in lines if x["event"] == "request"]
    assert access["status"] == 500 and access["error_type"] == "RuntimeError"
    assert access["level"] == "ERROR"


def test_concurrent_requests_share_a_batch(start_stage, tmp_path):
    gate = GatedModel()
    server = start_stage.app(MAX_BATCH_WAIT_MS=0, load_model=gate.load)
    results: list[httpx.Response] = []

    async def scenario(c: httpx.AsyncClient):
        running = asyncio.create_task(c.post("/predict", json={"text": "hold"}))
        await until(gate.entered.is_set)
        texts = [POSITIVE, NEGATIVE, "fine"]
        queued = [asyncio.create_task(c.post("/predict", json={"text": t})) for t in texts]
        await until(lambda: server.state.server.batcher.queue_depth == 3)
        gate.release.set()
        results.extend(await asyncio.gather(running, *queued))

    run_scenario(server, scenario)
    assert [r.status_code for r in results] == [200] * 4
    assert [r.json()["label"] for r in results[1:3]] == ["positive", "negative"]
    assert sorted([POSITIVE, NEGATIVE, "fine"]) in [sorted(b) for b in gate.batches]
    sizes = [x["batch_size"] for x in log_lines(tmp_path / "requests.log") if "batch_size" in x]
    assert sorted(sizes) == [1, 3, 3, 3]


# --- settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "env,named",
    [
        ({"MAX_BATCH_SIZE": "0"}, "INFERENCE_MAX_BATCH_SIZE"),
        ({"MAX_TEXT_CHARS": "lots"}, "INFERENCE_MAX_TEXT_CHARS"),
        ({"REQUEST_TIMEOUT_S": "0"}, "INFERENCE_REQUEST_TIMEOUT_S"),
        ({"MAX_BATCH_WAIT_MS": "-1"}, "INFERENCE_MAX_BATCH_WAIT_MS"),
        ({"LOG_LEVEL": "LOUD"}, "INFERENCE_LOG_LEVEL"),
        ({"LOG_TEXT": "perhaps"}, "INFERENCE_LOG_TEXT"),
        ({"MAX_QUEUE": "8"}, "INFERENCE_MAX_QUEUE"),  # smaller than MAX_BATCH_ITEMS (64)
    ],
)
def test_bad_setting_stops_start_up(start_stage, env, named):
    with pytest.raises(SystemExit) as stopped:
        start_stage.app(**env)
    assert named in str(stopped.value)


def test_openapi_documents_the_limits(client):
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    text = components["PredictRequest"]["properties"]["text"]
    assert (text["minLength"], text["maxLength"]) == (1, 10_000)
    assert components["PredictRequest"]["additionalProperties"] is False
    texts = components["BatchRequest"]["properties"]["texts"]
    assert (texts["minItems"], texts["maxItems"]) == (1, 64)


@pytest.mark.parametrize("raw", [b"\x00\x00\x00\x00\x00", b"\x80\xff", b"\xef\xbb\xbf{"])
def test_undecodable_body_is_422_not_400_or_500(client, raw):
    for content_type in ("application/json", "text/plain"):
        r = client.post("/predict", content=raw, headers={"content-type": content_type})
        assert r.status_code == 422, (content_type, r.text)


def test_texts_are_cleaned_like_the_training_data(client, small_model_dir):
    model = load_model(small_model_dir)
    raw = "A dull film.<br /><br />Boring   and\tlong, a waste."
    r = client.post("/predict", json={"text": raw})
    [expected] = model.predict([clean_text(raw)])
    assert r.json()["score"] == pytest.approx(expected.score)


def test_caller_that_goes_away_does_not_break_the_batch(start_stage):
    gate = GatedModel()
    server = start_stage.app(MAX_BATCH_WAIT_MS=0, load_model=gate.load)
    results: dict[str, httpx.Response] = {}

    async def scenario(c: httpx.AsyncClient):
        running = asyncio.create_task(c.post("/predict", json={"text": "hold"}))
        await until(gate.entered.is_set)
        gone = asyncio.create_task(c.post("/predict", json={"text": "gone away"}))
        stays = asyncio.create_task(c.post("/predict", json={"text": "stays"}))
        await until(lambda: server.state.server.batcher.queue_depth == 2)
        gone.cancel()  # the client disconnects while its text waits in the queue
        await asyncio.gather(gone, return_exceptions=True)
        gate.release.set()
        results["running"], results["stays"] = await running, await stays
        results["next"] = await c.post("/predict", json={"text": "next"})

    run_scenario(server, scenario)
    assert {k: r.status_code for k, r in results.items()} == {
        "running": 200,
        "stays": 200,
        "next": 200,
    }
    assert all("gone away" not in batch for batch in gate.batches)  # never run
    assert ["stays"] in gate.batches


def test_drain_that_times_out_is_reported(start_stage, monkeypatch, tmp_path):
    """A model stuck past DRAIN_TIMEOUT_S: queued texts get 503 and the drain is recorded as
    incomplete (the launcher's exit code 4, serving/serve.py)."""
    import serving.shutdown

    monkeypatch.setattr(serving.shutdown, "_drains", [])
    gate = GatedModel()
    app = start_stage.app(DRAIN_TIMEOUT_S="0.2", MAX_BATCH_WAIT_MS=0, load_model=gate.load)
    results: dict[str, httpx.Response] = {}

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            async with app.router.lifespan_context(app):
                await until(lambda: app.state.server.not_ready_reason() is None)
                running = asyncio.create_task(c.post("/predict", json={"text": "hold"}))
                await until(gate.entered.is_set)
                queued = asyncio.create_task(c.post("/predict", json={"text": "queued"}))
                await until(lambda: app.state.server.batcher.queue_depth == 1)
            # the lifespan has ended: its drain gave up after 0.2 s with the model still held
            gate.release.set()
            results["running"], results["queued"] = await asyncio.gather(running, queued)

    asyncio.run(main())
    assert results["queued"].status_code == 503
    assert results["queued"].json()["detail"] == "server is shutting down"
    assert all("queued" not in batch for batch in gate.batches)  # refused, never run
    [shutdown] = [x for x in log_lines(tmp_path / "requests.log") if x["event"] == "shutdown"]
    assert shutdown["drain_complete"] is False
    assert serving.shutdown.drains_complete() is False

"""Stage 2 (validated): its own contract (lesson 02)."""

from __future__ import annotations

import json

import pytest

from sentiment_model import load_model


@pytest.fixture
def client(start_stage):
    with start_stage("validated") as c:
        yield c


def test_health_and_model(client, small_model_dir):
    version = load_model(small_model_dir).version
    r = client.get("/health")
    assert r.json() == {"status": "ok", "model_loaded": True, "model_version": version}
    assert client.get("/model").json() == json.loads(
        (small_model_dir / "metadata.json").read_text()
    )


def test_predict_and_batch(client, small_model_dir):
    version = load_model(small_model_dir).version
    r = client.post("/predict", json={"text": "A wonderful, moving film. I loved it."})
    body = r.json()
    assert r.status_code == 200 and body["label"] == "positive"
    assert body["model_version"] == version and body["latency_ms"] > 0
    texts = ["A wonderful, moving film. I loved it.", "Dull, boring, a waste of time."]
    r = client.post("/predict/batch", json={"texts": texts})
    assert [p["label"] for p in r.json()["predictions"]] == ["positive", "negative"]
    assert client.post("/predict", json={"text": "x" * 10_000}).status_code == 200


BAD = {
    "number": ("/predict", {"text": 5}),
    "list": ("/predict", {"text": ["good"]}),
    "null": ("/predict", {"text": None}),
    "missing": ("/predict", {}),
    "unknown field": ("/predict", {"text": "good", "txet": "typo"}),
    "empty": ("/predict", {"text": ""}),
    "blank": ("/predict", {"text": "  \t\n"}),
    "too long": ("/predict", {"text": "x" * 10_001}),
    "batch empty": ("/predict/batch", {"texts": []}),
    "batch too many": ("/predict/batch", {"texts": ["a"] * 65}),
    "batch bad item": ("/predict/batch", {"texts": ["a", ""]}),
}


@pytest.mark.parametrize("path,body", BAD.values(), ids=BAD.keys())
def test_bad_input_is_422_naming_the_field(client, path, body):
    r = client.post(path, json=body)
    assert r.status_code == 422
    assert all(p["loc"][0] == "body" and len(p["loc"]) >= 2 for p in r.json()["detail"])


def test_malformed_json_is_422(client):
    r = client.post("/predict", content=b'{"text": ', headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_body_over_limit_is_413(start_stage):
    with start_stage("validated", MAX_BODY_BYTES=2048) as c:
        assert c.post("/predict", json={"text": "x" * 3000}).status_code == 413
        assert c.post("/predict", json={"text": "x" * 1000}).status_code == 200


def test_unknown_path_and_wrong_method(client):
    assert client.get("/nope").status_code == 404
    assert client.get("/predict").status_code == 405


def test_bad_setting_stops_start_up(start_stage):
    with pytest.raises(SystemExit, match="INFERENCE_MAX_TEXT_CHARS"):
        start_stage.app("validated", MAX_TEXT_CHARS="0")


def test_body_that_is_not_utf8_is_422(client):
    r = client.post("/predict", content=b"\x80\xff", headers={"content-type": "text/plain"})
    assert r.status_code == 422

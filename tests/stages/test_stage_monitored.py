"""Stage 11, monitored: the model's signals in /metrics and POST /feedback, in-process (the small
model). The store's own rules are tested in tests/unit/test_feedback_store.py; here, the HTTP
contract: every answer and every refusal as a client sees it."""

from __future__ import annotations

import time

import pytest
from gating import metric

from sentiment_model import load_model
from sentiment_model.data import clean_text
from sentiment_model.signals import CONFIDENCE_BUCKETS, TOKEN_BUCKETS, UNKNOWN_BUCKETS, compute

STAGE = "monitored"
TEXTS = [
    "A wonderful, moving film with brilliant acting. I loved every minute of it.",
    "Terrible, boring and badly acted. The worst movie I have seen.",
    "zzqxv plorbnik wubbalubba",  # nothing the vocabulary knows
]
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def client(start_stage):
    with start_stage(STAGE) as c:
        yield c


def predict(client, text: str = TEXTS[0], request_id: str | None = None) -> tuple[str, str]:
    """POST /predict; (request id, label)."""
    headers = {"X-Request-ID": request_id} if request_id else {}
    r = client.post("/predict", json={"text": text}, headers=headers)
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"], r.json()["label"]


def other(label: str) -> str:
    return "negative" if label == "positive" else "positive"


def test_signals_of_every_scored_text_are_in_metrics(client, small_model_dir):
    for text in TEXTS[:2]:
        predict(client, text)
    assert client.post("/predict/batch", json={"texts": TEXTS}).status_code == 200
    app = client.app
    scored = TEXTS[:2] + TEXTS
    model = load_model(small_model_dir)
    cleaned = [clean_text(t) for t in scored]
    expected = compute(model.pipeline.steps[0][1], cleaned, model.predict_proba(cleaned)[:, 1])
    names = {
        "inference_prediction_confidence": ("confidence", CONFIDENCE_BUCKETS),
        "inference_input_tokens": ("tokens", TOKEN_BUCKETS),
        "inference_unknown_token_ratio": ("unknown_ratio", UNKNOWN_BUCKETS),
    }
    for name, (field, bounds) in names.items():
        assert metric(app, f"{name}_count") == len(scored), name
        total = sum(getattr(s, field) for s in expected)
        assert metric(app, f"{name}_sum") == pytest.approx(total), name
        for bound in bounds:  # cumulative, as Prometheus' le
            within = sum(getattr(s, field) <= bound for s in expected)
            assert metric(app, f"{name}_bucket", le=str(float(bound))) == within, (name, bound)
    assert metric(app, "inference_unknown_token_ratio_bucket", le="0.5") < len(scored)
    labels = sum(
        metric(app, "inference_predictions_total", label=x) for x in ("negative", "positive")
    )
    assert labels == len(scored)
    text = client.get("/metrics").text
    assert 'inference_feedback_total{outcome="correct"} 0.0' in text
    assert 'inference_feedback_total{outcome="wrong"} 0.0' in text


def test_feedback_on_a_prediction_counts_right_and_wrong(client):
    first, label = predict(client)
    second, label2 = predict(client, TEXTS[1])
    r = client.post("/feedback", json={"request_id": first, "label": label})
    assert r.status_code == 200
    assert r.json() == {"request_id": first, "predicted": label, "correct": True}
    r = client.post("/feedback", json={"request_id": second, "label": other(label2)})
    assert r.json() == {"request_id": second, "predicted": label2, "correct": False}
    app = client.app
    assert metric(app, "inference_feedback_total", outcome="correct") == 1
    assert metric(app, "inference_feedback_total", outcome="wrong") == 1


def test_feedback_names_a_prediction_by_the_callers_own_request_id(client):
    _, label = predict(client, request_id="order-17.review-3")
    r = client.post("/feedback", json={"request_id": "order-17.review-3", "label": label})
    assert r.status_code == 200 and r.json()["correct"] is True


def test_feedback_on_a_batch_names_the_text_by_index(client):
    r = client.post("/predict/batch", json={"texts": TEXTS[:2]})
    request_id, labels = r.headers["x-request-id"], [p["label"] for p in r.json()["predictions"]]
    r = client.post("/feedback", json={"request_id": request_id, "index": 1, "label": labels[1]})
    assert r.json() == {
        "request_id": request_id,
        "index": 1,
        "predicted": labels[1],
        "correct": True,
    }
    r = client.post("/feedback", json={"request_id": request_id, "label": labels[0]})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "index"] and "give index 0..1" in error["msg"]
    r = client.post("/feedback", json={"request_id": request_id, "index": 2, "label": "positive"})
    assert r.status_code == 404 and "no index 2" in r.json()["detail"]


def test_unknown_request_id_is_404(client):
    r = client.post("/feedback", json={"request_id": "never-predicted", "label": "positive"})
    assert r.status_code == 404
    assert "never-predicted" in r.json()["detail"] and "INFERENCE_FEEDBACK_MAX_IDS" in r.text
    assert "request_id" in r.json()  # this request's own id, as every error body has


def test_the_id_of_a_request_that_was_not_a_prediction_is_404(client):
    request_id = client.get("/health").headers["x-request-id"]
    r = client.post("/feedback", json={"request_id": request_id, "label": "positive"})
    assert r.status_code == 404


def test_expired_request_id_is_404(start_stage):
    with start_stage(STAGE, FEEDBACK_TTL_S=0.2) as client:
        request_id, label = predict(client)
        time.sleep(0.3)
        r = client.post("/feedback", json={"request_id": request_id, "label": label})
    assert r.status_code == 404 and "older than INFERENCE_FEEDBACK_TTL_S" in r.json()["detail"]


def test_only_the_last_max_ids_predictions_are_remembered(start_stage):
    with start_stage(STAGE, FEEDBACK_MAX_IDS=2) as client:
        ids = [predict(client, text) for text in TEXTS]
        oldest = client.post("/feedback", json={"request_id": ids[0][0], "label": "positive"})
        newest = [
            client.post("/feedback", json={"request_id": i, "label": label}) for i, label in ids[1:]
        ]
    assert oldest.status_code == 404
    assert [r.status_code for r in newest] == [200, 200]


def test_second_feedback_for_the_same_prediction_is_409(client):
    request_id, label = predict(client)
    assert client.post("/feedback", json={"request_id": request_id, "label": label}).is_success
    r = client.post("/feedback", json={"request_id": request_id, "label": other(label)})
    assert r.status_code == 409 and "already given" in r.json()["detail"]
    assert metric(client.app, "inference_feedback_total", outcome="wrong") == 0  # not counted


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"label": "positive"}, "request_id"),
        ({"request_id": "x"}, "label"),
        ({"request_id": "x", "label": "neutral"}, "label"),
        ({"request_id": "x", "label": True}, "label"),
        ({"request_id": 12, "label": "positive"}, "request_id"),
        ({"request_id": "", "label": "positive"}, "request_id"),
        ({"request_id": "x" * 129, "label": "positive"}, "request_id"),
        ({"request_id": "../etc", "label": "positive"}, "request_id"),
        ({"request_id": "x", "label": "positive", "index": -1}, "index"),
        ({"request_id": "x", "label": "positive", "index": 1.5}, "index"),
        ({"request_id": "x", "label": "positive", "correct": True}, "correct"),
    ],
)
def test_bad_feedback_body_is_422_naming_the_field(client, body, field):
    r = client.post("/feedback", json=body)
    assert r.status_code == 422
    assert field in {str(part) for error in r.json()["detail"] for part in error["loc"]}


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b'["x", "positive"]', b'"x"', b'{"request_id": "x", "label": '],
)
def test_feedback_body_that_is_not_a_json_object_is_422(client, raw):
    assert client.post("/feedback", content=raw, headers=JSON).status_code == 422


def test_oversized_feedback_body_is_413(client):
    body = '{"request_id": "x", "label": "positive", "pad": "' + "x" * 2000 + '"}'
    r = client.post("/feedback", content=body, headers=JSON)
    assert r.status_code == 413 and "/feedback" in r.json()["detail"]


def test_feedback_is_logged_with_the_prediction_it_names(start_stage, tmp_path):
    import json

    with start_stage(STAGE) as client:
        request_id, label = predict(client)
        client.post("/feedback", json={"request_id": request_id, "label": label})
    deadline = time.monotonic() + 5
    while True:  # lines are written by a background thread
        lines = [json.loads(x) for x in (tmp_path / "requests.log").read_text().splitlines()]
        found = [x for x in lines if x.get("route") == "/feedback"]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    [line] = found
    assert (line["feedback_for"], line["correct"], line["status"]) == (request_id, True, 200)

"""Stage 1 (naive): it answers, and these tests pin down what goes wrong with it (lesson 01)."""

from __future__ import annotations

from types import ModuleType

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def naive(start_stage) -> ModuleType:
    """The module itself: the naive stage keeps its model in a module global."""
    return start_stage.module("naive")


@pytest.fixture
def client(naive):
    with TestClient(naive.app, raise_server_exceptions=False) as c:
        yield c


def test_it_predicts(client):
    r = client.post("/predict", json={"text": "A wonderful, moving film. I loved it."})
    assert r.status_code == 200
    assert r.json()["label"] == "positive" and 0.5 <= r.json()["score"] <= 1


def test_problem_empty_and_blank_text_get_a_confident_answer(client):
    for text in ("", "   \n  "):
        r = client.post("/predict", json={"text": text})
        assert r.status_code == 200  # a sentiment for nothing at all
        assert r.json()["label"] in {"positive", "negative"}


def test_problem_multi_megabyte_body_is_accepted(client):
    text = "this film was fine " * 150_000  # 2.85 MB of JSON, read whole, then run
    assert len(text) > 2_500_000
    r = client.post("/predict", json={"text": text})
    assert r.status_code == 200


def test_problem_typos_in_field_names_are_ignored(client):
    r = client.post("/predict", json={"text": "good", "txet": "the real review"})
    assert r.status_code == 200  # the misspelt field is silently dropped


def test_problem_no_way_to_see_errors_or_latency(naive, client, monkeypatch):
    r = client.post("/predict", json={"text": "good"})
    assert set(r.json()) == {"label", "score"}  # no latency, no model version
    assert "x-request-id" not in r.headers  # nothing to quote in a bug report
    for path in ("/health", "/metrics", "/model"):
        assert client.get(path).status_code == 404  # no health check, no metrics

    def broken(texts):
        raise RuntimeError("the model exploded")

    monkeypatch.setattr(naive.model, "predict", broken)
    r = client.post("/predict", json={"text": "good"})
    assert r.status_code == 500
    assert r.text == "Internal Server Error"  # no id, no JSON: the client learns nothing


def test_problem_a_body_that_is_not_utf8_crashes_the_error_handler(client):
    # FastAPI's default 422 handler echoes the bytes back and fails to encode them.
    r = client.post("/predict", content=b"\x80", headers={"content-type": "text/plain"})
    assert r.status_code == 500

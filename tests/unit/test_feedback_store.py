"""serving/monitoring.py on its own: the feedback store's bounds, expiry and refusals, and the
signal histograms with the buckets of the artifact's reference (sentiment_model/signals.py)."""

from __future__ import annotations

import gc
import tracemalloc
import uuid

import pytest
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry, Histogram
from pydantic import ValidationError

from sentiment_model.signals import (
    CONFIDENCE_BUCKETS,
    TOKEN_BUCKETS,
    UNKNOWN_BUCKETS,
    Signals,
)
from serving.monitoring import FeedbackRequest, FeedbackStore, ModelMonitor, observe_all
from serving.settings import SettingsError, load_settings


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feedback(request_id: str, label: str = "positive", index: int | None = None):
    return FeedbackRequest(request_id=request_id, label=label, index=index)


def refusal(store: FeedbackStore, request: FeedbackRequest) -> HTTPException:
    with pytest.raises(HTTPException) as caught:
        store.give(request)
    return caught.value


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_feedback_says_whether_the_prediction_was_right(clock):
    store = FeedbackStore(10, 60, clock=clock)
    store.remember("a", ["positive"])
    store.remember("b", ["negative"])
    right = store.give(feedback("a", "positive"))
    wrong = store.give(feedback("b", "positive"))
    assert (right.predicted, right.correct) == ("positive", True)
    assert (wrong.predicted, wrong.correct) == ("negative", False)
    assert right.index is None and right.request_id == "a"


def test_unknown_id_is_404_naming_both_bounds(clock):
    error = refusal(FeedbackStore(10, 60, clock=clock), feedback("never-seen"))
    assert error.status_code == 404
    assert "never-seen" in error.detail and "INFERENCE_FEEDBACK_MAX_IDS" in error.detail
    assert "INFERENCE_FEEDBACK_TTL_S" in error.detail and "worker" not in error.detail


def test_expired_id_is_404_and_says_expired(clock):
    store = FeedbackStore(10, 60, clock=clock)
    store.remember("a", ["positive"])
    clock.now += 59.9
    store.remember("b", ["positive"])
    clock.now += 0.1  # "a" is exactly 60 s old: gone
    error = refusal(store, feedback("a"))
    assert error.status_code == 404 and "older than INFERENCE_FEEDBACK_TTL_S (60 s)" in error.detail
    assert store.give(feedback("b")).correct


def test_expired_entries_leave_memory_at_the_next_prediction(clock):
    store = FeedbackStore(100, 60, clock=clock)
    for i in range(5):
        store.remember(f"id{i}", ["positive"])
    clock.now += 61
    store.remember("new", ["negative"])
    assert len(store) == 1


def test_the_oldest_predictions_go_beyond_the_bound(clock):
    store = FeedbackStore(3, 60, clock=clock)
    for i in range(4):
        store.remember(f"id{i}", ["positive"])
    assert len(store) == 3
    assert refusal(store, feedback("id0")).status_code == 404
    assert all(store.give(feedback(f"id{i}")).correct for i in (1, 2, 3))


def test_a_batch_counts_each_of_its_texts_against_the_bound(clock):
    store = FeedbackStore(5, 60, clock=clock)
    store.remember("batch1", ["positive", "negative", "positive"])
    store.remember("batch2", ["negative", "negative", "negative"])  # 6 > 5: batch1 goes
    assert len(store) == 3
    assert refusal(store, feedback("batch1", index=0)).status_code == 404
    store.remember("huge", ["positive"] * 6)  # larger than the whole store: not remembered
    assert len(store) == 3 and refusal(store, feedback("huge", index=0)).status_code == 404


def test_a_second_feedback_for_the_same_prediction_is_409(clock):
    store = FeedbackStore(10, 60, clock=clock)
    store.remember("a", ["positive"])
    store.give(feedback("a", "negative"))
    error = refusal(store, feedback("a", "positive"))
    assert error.status_code == 409 and "already given" in error.detail


def test_batch_feedback_names_the_text_by_index(clock):
    store = FeedbackStore(10, 60, clock=clock)
    store.remember("b", ["positive", "negative", "positive"])
    answer = store.give(feedback("b", "negative", index=1))
    assert (answer.index, answer.predicted, answer.correct) == (1, "negative", True)
    assert not store.give(feedback("b", "negative", index=0)).correct
    assert refusal(store, feedback("b", index=1)).status_code == 409  # given already
    assert store.give(feedback("b", "positive", index=2)).correct  # the other texts still can


def test_batch_feedback_without_index_is_422(clock):
    store = FeedbackStore(10, 60, clock=clock)
    store.remember("b", ["positive", "negative"])
    with pytest.raises(RequestValidationError) as caught:
        store.give(feedback("b"))
    [error] = caught.value.errors()
    assert error["loc"] == ("body", "index") and "give index 0..1" in error["msg"]


def test_index_beyond_the_request_is_404(clock):
    store = FeedbackStore(10, 60, clock=clock)
    store.remember("b", ["positive", "negative"])
    store.remember("one", ["positive"])
    assert "no index 2" in refusal(store, feedback("b", index=2)).detail
    assert refusal(store, feedback("one", index=1)).status_code == 404
    assert store.give(feedback("one", index=0)).correct  # index 0 of a single prediction: fine


def test_a_request_id_seen_again_replaces_the_older_prediction(clock):
    store = FeedbackStore(10, 60, clock=clock)
    store.remember("mine", ["positive", "positive"])
    store.remember("mine", ["negative"])  # a client that reuses its own X-Request-ID
    assert len(store) == 1
    assert store.give(feedback("mine", "negative")).correct


def test_with_several_workers_the_404_says_not_known_to_this_worker(clock):
    store = FeedbackStore(10, 60, several_workers=True, clock=clock)
    error = refusal(store, feedback("elsewhere"))
    assert error.status_code == 404 and "not known to this worker" in error.detail


def test_memory_per_remembered_prediction_is_bounded():
    """About 100000 (the default bound) x the bytes below: tens of MB per worker at most."""
    ids = [str(uuid.uuid4()) for _ in range(20_000)]  # made before measuring: they are the
    store = FeedbackStore(len(ids), 3600)  # request's own strings, kept alive by the store
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for request_id in ids:
            store.remember(request_id, ["positive"])
        per_prediction = (tracemalloc.get_traced_memory()[0] - before) / len(ids)
    finally:
        tracemalloc.stop()
    assert len(store) == len(ids)
    assert per_prediction < 300, per_prediction


def test_remembered_predictions_leave_the_garbage_collectors_walk():
    """A full collection walks every tracked object; after one pass the store's entries are
    no longer tracked, so a full store costs later collections nothing (lessons/05)."""
    store = FeedbackStore(100, 3600)
    for i in range(50):
        store.remember(f"id{i}", ["positive", "negative"] if i % 2 else ["positive"])
    store.give(feedback("id1", index=1))  # a given label is replaced in a new tuple
    gc.collect()
    assert not any(gc.is_tracked(entry) for entry in store._entries.values())


@pytest.mark.parametrize(
    "body",
    [
        {"label": "positive"},  # no request_id
        {"request_id": "a"},  # no label
        {"request_id": "a", "label": "neutral"},  # not a label of the model
        {"request_id": "a", "label": 1},  # not a string
        {"request_id": 7, "label": "positive"},  # strict: no coercion
        {"request_id": "", "label": "positive"},  # empty id
        {"request_id": "a" * 129, "label": "positive"},  # longer than any id the server gives
        {"request_id": "a b/c", "label": "positive"},  # characters no id has
        {"request_id": "a", "label": "positive", "index": -1},
        {"request_id": "a", "label": "positive", "index": "1"},
        {"request_id": "a", "label": "positive", "extra": 1},  # closed model
    ],
)
def test_bad_feedback_bodies_are_refused(body):
    with pytest.raises(ValidationError):
        FeedbackRequest.model_validate(body)


def test_settings_bound_and_expiry_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("INFERENCE_FEEDBACK_MAX_IDS", "7")
    monkeypatch.setenv("INFERENCE_FEEDBACK_TTL_S", "2.5")
    settings = load_settings()
    assert (settings.feedback_max_ids, settings.feedback_ttl_s) == (7, 2.5)
    monkeypatch.setenv("INFERENCE_FEEDBACK_MAX_IDS", "0")
    with pytest.raises(SettingsError, match="INFERENCE_FEEDBACK_MAX_IDS"):
        load_settings()
    monkeypatch.delenv("INFERENCE_FEEDBACK_MAX_IDS")
    monkeypatch.setenv("INFERENCE_FEEDBACK_TTL_S", "0")
    with pytest.raises(SettingsError, match="INFERENCE_FEEDBACK_TTL_S"):
        load_settings()
    monkeypatch.delenv("INFERENCE_FEEDBACK_TTL_S")
    assert (load_settings().feedback_max_ids, load_settings().feedback_ttl_s) == (100_000, 3600)


def buckets(registry: CollectorRegistry, name: str) -> dict[str, float]:
    """le -> cumulative count of histogram ``name``."""
    [family] = [f for f in registry.collect() if f.name == name]
    return {s.labels["le"]: s.value for s in family.samples if s.name == f"{name}_bucket"}


def test_signal_histograms_use_the_reference_buckets():
    registry = CollectorRegistry()
    monitor = ModelMonitor(registry, FeedbackStore(10, 60))
    monitor.observe([Signals(3, 0.0, 0.55), Signals(40, 0.12, 0.97), Signals(5000, 1.0, 1.0)])
    expected = {
        "inference_prediction_confidence": CONFIDENCE_BUCKETS,
        "inference_input_tokens": TOKEN_BUCKETS,
        "inference_unknown_token_ratio": UNKNOWN_BUCKETS,
    }
    for name, bounds in expected.items():
        counts = buckets(registry, name)
        assert list(counts) == [*(str(float(b)) for b in bounds), "+Inf"], name
        assert counts["+Inf"] == 3
    assert buckets(registry, "inference_prediction_confidence")["0.6"] == 1
    assert buckets(registry, "inference_prediction_confidence")["0.99"] == 2
    assert buckets(registry, "inference_input_tokens")["5.0"] == 1  # 3 words
    assert buckets(registry, "inference_input_tokens")["1000.0"] == 2  # 5000 only in +Inf
    assert buckets(registry, "inference_unknown_token_ratio")["0.05"] == 1
    assert buckets(registry, "inference_unknown_token_ratio")["0.15"] == 2
    assert registry.get_sample_value("inference_input_tokens_sum") == 5043


def test_feedback_is_counted_by_outcome_from_zero():
    registry = CollectorRegistry()
    store = FeedbackStore(10, 60)
    monitor = ModelMonitor(registry, store)

    def count(outcome: str) -> float | None:
        return registry.get_sample_value("inference_feedback_total", {"outcome": outcome})

    assert (count("correct"), count("wrong")) == (0, 0)  # exported before any feedback
    monitor.remember("a", ["positive"])
    monitor.remember("b", ["positive"])
    monitor.give_feedback(feedback("a", "positive"))
    monitor.give_feedback(feedback("b", "negative"))
    with pytest.raises(HTTPException):
        monitor.give_feedback(feedback("b", "negative"))  # refused: not counted again
    assert (count("correct"), count("wrong")) == (1, 1)


def test_a_batch_observed_at_once_gives_what_observe_gives_value_by_value():
    values = [0.5, 0.6, 0.6000001, 0.7, 0.95, 0.99, 1.0, 0.61, 0.83, 0.999, 0.6, 1.0]
    tokens = [0, 5, 6, 20, 21, 1000, 1001, 5000, 3, 3]
    for bounds, batch in ((CONFIDENCE_BUCKETS, values), (TOKEN_BUCKETS, tokens)):
        one_by_one, at_once = CollectorRegistry(), CollectorRegistry()
        a = Histogram("h", "h", buckets=bounds, registry=one_by_one)
        b = Histogram("h", "h", buckets=bounds, registry=at_once)
        for v in batch:
            a.observe(v)
        observe_all(b, batch[:-1])
        observe_all(b, batch[-1:])  # one value: its own path
        observe_all(b, [])  # nothing to add
        assert buckets(at_once, "h") == buckets(one_by_one, "h")
        assert at_once.get_sample_value("h_sum") == pytest.approx(
            one_by_one.get_sample_value("h_sum")
        )
        assert at_once.get_sample_value("h_count") == len(batch)


def test_a_histogram_without_the_private_parts_gets_plain_observe():
    class Plain:  # another version of the library, say
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, value: float) -> None:
            self.seen.append(value)

    plain = Plain()
    observe_all(plain, [0.7, 0.9])
    observe_all(plain, [0.8])
    assert plain.seen == [0.7, 0.9, 0.8]

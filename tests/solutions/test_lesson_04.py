"""Lesson 4's runnable answers (lessons/04_batched/solutions/) give the outcomes its
solutions/README.md states. Fake models only: the whole file runs in a few seconds."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from answers import solution as lesson_solution

solution = partial(lesson_solution, "04_batched")


def test_exercise_2_queue_wait_from_the_committed_ceiling() -> None:
    answers = solution("queue_wait").main()
    assert answers["long_batch_ms"] == pytest.approx(10.32, abs=0.01)
    assert answers["long_worst_wait_ms"] == pytest.approx(82.5, abs=0.1)
    assert answers["short_worst_wait_ms"] == pytest.approx(8.2, abs=0.1)
    assert answers["largest_queue_long_500ms"] == 1536


def test_exercise_3_a_timed_out_request_never_reaches_the_model() -> None:
    outcome = asyncio.run(solution("batcher_checks").timeout_is_dropped())
    assert outcome["timed_out"]
    assert not outcome["late_texts_ran"]
    assert outcome["dropped_texts"] == 2
    assert outcome["batches"] == [["blocker"], ["after"]]
    assert outcome["after"] == ["AFTER"]


def test_exercise_4_a_full_queue_refuses_any_request_and_answers_the_queued() -> None:
    outcome = asyncio.run(solution("batcher_checks").all_or_nothing())
    assert outcome == {"refused": {1: True, 64: True}, "queued_answered": 64}


def test_exercise_4_a_queue_smaller_than_a_batch_request_stops_start_up(monkeypatch) -> None:
    for name in ("INFERENCE_MAX_QUEUE", "INFERENCE_MAX_BATCH_ITEMS"):
        monkeypatch.delenv(name, raising=False)
    message = solution("batcher_checks").small_queue_is_refused_at_start_up()
    assert "INFERENCE_MAX_QUEUE (32) must be at least INFERENCE_MAX_BATCH_ITEMS (64)" in message


def test_exercise_5_greedy_batches_a_fixed_cost_model_without_a_window() -> None:
    fixed_cost = solution("fixed_cost")
    greedy = asyncio.run(fixed_cost.drive(0, seconds=0.4))
    # 8 callers, 20 ms per call: texts queue while the model sleeps, so greedy calls hold
    # several texts each. (Only the shape is checked; latencies depend on the machine.)
    assert greedy["answers"] > 0
    assert greedy["mean_batch"] >= 2

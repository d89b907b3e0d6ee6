"""The runnable answers of lesson 6 (lessons/06_hardened/solutions/): each gives the outcome
its solutions/README.md states. In-process, no network, no model: well under a second each."""

from __future__ import annotations

from functools import partial

from answers import solution as lesson_solution

solution = partial(lesson_solution, "06_hardened")


def test_exercise_1_only_bodies_beyond_any_request_are_refused_before_parsing():
    assert solution("body_shapes").answers() == {
        "brackets inside the text": None,  # strings are skipped
        "a list inside the list": None,  # 3 containers, 3 deep: pydantic names the field
        "nine levels deep": "body is nested more than 8 levels deep",
        "seventy empty lists": "body has more than 64 arrays and objects",
    }


def test_exercise_2_the_predict_limit_follows_max_text_chars(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing the exercise writes lands in the repository
    answers = solution("route_limits").answers(1000)
    assert answers["predict_limit"] == 1000 * 12 + 16 + 1024 == 13_040
    assert answers["batch_limit"] == (1000 * 12 + 16) * 64 + 1024
    status, detail = answers["at the limit"]
    assert status == 503 and detail.startswith("model not loaded")  # past the size check
    status, detail = answers["one byte over"]
    assert status == 413 and "limit of 13040 bytes for /predict" in detail

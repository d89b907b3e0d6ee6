"""The runnable answers of lesson 7 (lessons/07_fast/solutions/): each gives the outcome its
solutions/README.md states."""

from __future__ import annotations

from functools import partial

import pandas as pd
import pytest
from answers import solution as lesson_solution

from sentiment_model import load_model

solution = partial(lesson_solution, "07_fast")


def test_exercise_1_final_over_naive_at_every_ladder_step():
    table = solution("ladder_ratios").ratios().set_index(["profile", "users"])["ratio"]
    # the per-step ratios targets.csv of the same run states
    short = [1.50, 1.78, 2.25, 2.85, 2.66]
    long = [1.27, 1.54, 1.67, 1.88, 2.07]
    for profile, expected in (("short", short), ("long", long)):
        got = [round(table[(profile, users)], 2) for users in (1, 4, 16, 64, 256)]
        assert got == expected
    assert table.min() > 1  # never slower than naive


@pytest.mark.slow  # trains a model or starts a process: seconds, not milliseconds
def test_exercise_2_stop_words_pass_and_l1_is_refused_by_name(sample: pd.DataFrame):
    assert solution("direct_scorer").answers(sample) == {
        "default": "accepted",
        "stop_words='english'": "accepted",
        "norm='l1'": "refused: norm='l1'",
    }


def test_exercise_3_the_vectorizer_takes_most_of_the_pipeline(small_model_dir, splits):
    shares = solution("vectorizer_share").shares(load_model(small_model_dir).pipeline, splits.test)
    assert set(shares) == {"short", "long"}
    assert all(share > 0.5 for share in shares.values()), shares

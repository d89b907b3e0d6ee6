"""Lesson 00's answers, run on the small fixture model and the training sample (seconds):
the threshold, the size of a bigger search's vocabulary, the three broken artifacts."""

from __future__ import annotations

from functools import partial

import pytest
from answers import solution

from sentiment_model import load_model

load = partial(solution, "00_model")


def test_exercise_1_the_threshold_keeps_false_positives_under_10_percent(small_model_dir, splits):
    solution = load("threshold")
    y, p = solution.rotten_tomatoes(load_model(small_model_dir), splits.test)
    chosen = solution.threshold_for_fpr(y, p, max_fpr=0.10)
    assert chosen["fpr"] < 0.10
    again = solution.at_threshold(y, p, chosen["threshold"])  # the ROC point is what you get
    assert again == pytest.approx({"fpr": chosen["fpr"], "recall": chosen["recall"]})
    default = solution.at_threshold(y, p, 0.5)
    if default["fpr"] >= 0.10:  # as with the real model: stricter threshold, less recall
        assert chosen["threshold"] > 0.5 and chosen["recall"] <= default["recall"]


def test_exercise_2_trigrams_grow_the_vocabulary_and_min_df_shrinks_it(sample):
    sizes = load("bigger_search").vocabulary_sizes(sample)
    default = sizes["default: 1-2 grams, min_df=2"]
    assert sizes["1-3 grams, min_df=2"] > default > sizes["1-2 grams, min_df=3"]


def test_exercise_3_each_breakage_has_its_own_answer(small_model_dir, tmp_path):
    outcomes = load("break_loader").try_each(small_model_dir, tmp_path)
    assert outcomes["metadata.json deleted"].startswith("ArtifactNotFoundError:")
    assert "metadata file is missing" in outcomes["metadata.json deleted"]
    assert outcomes["one byte of model.skops changed"].startswith("ChecksumMismatchError:")
    assert outcomes["sklearn_version edited"].startswith("ModelVersionWarning:")
    assert "trained with scikit-learn 1.0.0" in outcomes["sklearn_version edited"]
    assert load_model(small_model_dir).version  # the original is untouched

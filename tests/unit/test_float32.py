"""The float32 experiment (sentiment_model/experiments/float32.py): its variants, its memory
figures and the recommendation it derives from the measured numbers. No speed is asserted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sentiment_model.experiments import float32


def _results(speed_gain: float, accuracy_change: float = 0.0) -> dict:
    """A results dict shaped like run_experiment's, float32 ``speed_gain`` faster."""
    keys = ("short_batch1", "short_batch32", "long_batch1", "long_batch32")

    def variant(speed: float, acc: float) -> dict:
        return {
            "texts_per_s": dict.fromkeys(keys, speed),
            "test_accuracy": acc,
            "test_accuracy_by_source": {"imdb": acc, "rotten_tomatoes": acc},
            "feature_matrix_bytes_test_split": 9 * 2**20,
            "peak_alloc_bytes_predict_test_split": 20 * 2**20,
            "fit_s": 1.0,
            "vs_float64": {"label_disagreements": 0},
        }

    v32 = variant(1000 * (1 + speed_gain), 0.88 + accuracy_change)
    v32["feature_matrix_bytes_test_split"] = 6 * 2**20
    return {
        "variants": {"float64": variant(1000, 0.88), "float32": v32},
        "time_split_batch32": {"short": {"vectorizer_share": 0.93}},
    }


def test_recommendation_keeps_float64_without_a_clear_gain() -> None:
    text = float32.recommend(_results(0.02))
    assert "Keep float64" in text and "33% smaller" in text


def test_recommendation_adopts_a_faster_variant_only_at_equal_accuracy() -> None:
    assert "Adopt float32" in float32.recommend(_results(0.2))
    assert "Keep float64" in float32.recommend(_results(0.2, accuracy_change=-0.01))


def test_markdown_has_one_column_per_variant() -> None:
    results = _results(0.0)
    results["recommendation"] = float32.recommend(results)
    md = float32.to_markdown(results)
    assert "| metric | float64 | float32 |" in md
    assert "python -m sentiment_model.experiments.float32" in md
    assert "**Recommendation.** float32: " in md and "Keep float64 in the final stage" in md


def test_variants_differ_only_in_dtype(sample: pd.DataFrame) -> None:
    small = sample.groupby(["source", "label"]).head(25)
    texts, labels = small["text"].tolist(), small["label"].to_numpy()
    variants = float32._variants(texts, labels, dict(float32.DEFAULT_PARAMS), log=lambda _: None)
    assert list(variants) == ["float64", "float32", "float32+coef"]
    dtypes = [
        v["pipeline"].named_steps["tfidf"].transform(["a b"]).dtype for v in variants.values()
    ]
    assert dtypes == [np.float64, np.float32, np.float32]
    assert variants["float32+coef"]["pipeline"].named_steps["clf"].coef_.dtype == np.float32
    p64, p32 = (variants[n]["pipeline"].predict_proba(texts)[:, 1] for n in ("float64", "float32"))
    assert np.abs(p64 - p32).max() < 1e-4
    b64 = float32.feature_bytes(variants["float64"]["pipeline"], texts)
    b32 = float32.feature_bytes(variants["float32"]["pipeline"], texts)
    assert b32 < b64
    split = float32.time_split(variants["float64"]["pipeline"], texts, batch=4, rounds=2)
    assert 0 < split["vectorizer_share"] < 1

"""Model signals (sentiment_model/signals.py): definitions, buckets, the reference, and the
direct scorer's cheap path that must agree with the reference definition."""

from __future__ import annotations

import numpy as np
import pytest

from sentiment_model import load_model, scorer, signals
from sentiment_model.data import Splits


def test_tokens_follow_from_terms_exactly():
    for high in (1, 2, 3, 4):
        for n in range(0, 30):
            terms = sum(max(0, n - k + 1) for k in range(1, high + 1))
            assert signals.tokens_from_terms(terms, (1, high)) == n
    with pytest.raises(ValueError):
        signals.tokens_from_terms(3, (2, 2))


def test_unknown_ratio_and_confidence_definitions():
    assert signals.unknown_ratio(0, 0) == 1.0  # no term at all: nothing the model knows
    assert signals.unknown_ratio(4, 4) == 0.0
    assert signals.unknown_ratio(4, 1) == 0.75
    assert signals.confidence(0.2) == pytest.approx(0.8)
    assert signals.confidence(0.5) == 0.5 and signals.confidence(0.9) == 0.9


def test_bucket_edges_are_inclusive_upper_bounds():
    bounds = signals.CONFIDENCE_BUCKETS
    assert signals.bucket_index(0.5, bounds) == 0
    assert signals.bucket_index(0.6, bounds) == 0  # le="0.6" holds 0.6
    assert signals.bucket_index(0.6000001, bounds) == 1
    assert signals.bucket_index(1.0, bounds) == len(bounds) - 1
    assert signals.bucket_index(1001, signals.TOKEN_BUCKETS) == len(signals.TOKEN_BUCKETS)
    assert signals.histogram([5, 6, 10, 2000], signals.TOKEN_BUCKETS) == [1, 2, 0, 0, 0, 0, 0, 0, 1]
    for bounds in signals.BUCKETS.values():
        assert list(bounds) == sorted(set(bounds))


def test_reference_fractions_sum_to_one():
    sig = [
        signals.Signals(3, 0.0, 0.55),
        signals.Signals(40, 0.12, 0.97),
        signals.Signals(0, 1.0, 0.5),
    ]
    ref = signals.reference(sig, ["positive", "negative", "positive"], ["positive"] * 3)
    assert ref["n"] == 3
    for name, bounds in signals.BUCKETS.items():
        entry = ref["signals"][name]
        assert entry["le"] == [*bounds, "+Inf"]
        assert sum(entry["fractions"]) == pytest.approx(1.0)
        assert sum(entry["counts"]) == 3
    assert ref["signals"]["unknown_ratio"]["counts"][-2] == 1  # the empty text: le="1.0"
    assert ref["label_mix"] == {"negative": 1 / 3, "positive": 2 / 3}
    assert ref["true_label_mix"] == {"positive": 1.0}
    with pytest.raises(ValueError):
        signals.reference([], [])


def test_direct_scorer_signals_match_the_definition(small_model_dir, splits: Splits):
    model = load_model(small_model_dir)
    direct = scorer.build_direct_scorer(model.pipeline)
    edge = ["", "   ", "!!!", "zzqxv plorbnik qqq", "good", "Good GOOD good", "Café crème"]
    texts = edge + splits.test["text"].head(300).tolist() + list(scorer.PROBE_TEXTS)
    proba, got = direct.predict_with_signals(texts)
    # Same probabilities as predict_proba, bit for bit.
    np.testing.assert_array_equal(proba, direct.predict_proba(texts))
    expected = signals.compute(model.pipeline.steps[0][1], texts, proba[:, 1])
    assert [(s.tokens, s.unknown_ratio) for s in got] == [
        (s.tokens, s.unknown_ratio) for s in expected
    ]
    np.testing.assert_array_equal([s.confidence for s in got], proba.max(axis=1))
    by_text = dict(zip(texts, got, strict=True))
    assert by_text[""] == (0, 1.0, by_text[""].confidence)
    assert by_text["zzqxv plorbnik qqq"].unknown_ratio == 1.0
    assert by_text["zzqxv plorbnik qqq"].tokens == 3
    assert by_text["!!!"].tokens == 3  # the token pattern keeps "!"
    assert by_text["good"].tokens == 1 and by_text["good"].unknown_ratio == 0.0
    assert direct.predict_with_signals([])[0].shape == (0, 2)


def test_model_predict_with_signals_agrees_across_scorers(small_model_dir, splits: Splits):
    model = load_model(small_model_dir)
    texts = ["", "a fine film", *splits.test["text"].head(50).tolist()]
    plain = model.predict(texts)
    preds, sk = model.predict_with_signals(texts)
    assert preds == plain
    assert model.use_scorer("direct") == "direct"
    preds_direct, dr = model.predict_with_signals(texts)
    assert [p.label for p in preds_direct] == [p.label for p in plain]
    assert [(s.tokens, s.unknown_ratio) for s in dr] == [(s.tokens, s.unknown_ratio) for s in sk]
    assert [s.confidence for s in dr] == [p.score for p in preds_direct]
    assert model.predict_with_signals([]) == ([], [])

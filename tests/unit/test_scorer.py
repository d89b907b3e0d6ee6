"""The direct scorer (sentiment_model/scorer.py) against scikit-learn's predict_proba.

Equivalence is tested on every text of the test split with the small fixture model (same
pipeline parameters as the default model, smaller vocabulary) and, marked slow, with the full
default model when one has been trained. The fallbacks to scikit-learn are tested too.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from sentiment_model import load_model, scorer
from sentiment_model.artifact import MODELS_ROOT
from sentiment_model.data import Splits, clean_text


def assert_same_as_sklearn(model, texts: list[str]) -> None:
    """Same label and a probability within 1e-9 of scikit-learn's, for every text."""
    model.use_scorer("sklearn")
    expected = model.predict(texts)
    assert model.use_scorer("direct") == "direct"
    got = model.predict(texts)
    assert [p.label for p in got] == [p.label for p in expected]
    diff = np.abs(np.array([p.score for p in got]) - np.array([p.score for p in expected]))
    assert diff.max() <= scorer.TOLERANCE


def test_test_split_same_labels_and_probabilities(small_model_dir, splits: Splits):
    texts = [clean_text(t) for t in splits.test["text"]]
    assert len(texts) == 3344
    assert_same_as_sklearn(load_model(small_model_dir), texts)


@pytest.mark.slow
def test_test_split_with_the_default_model(splits: Splits):
    if not (MODELS_ROOT / "LATEST").is_file():
        pytest.skip("no default model trained (make model)")
    texts = [clean_text(t) for t in splits.test["text"]]
    assert_same_as_sklearn(load_model(), texts)


def test_probe_texts_and_edge_cases(small_model_dir):
    model = load_model(small_model_dir)
    direct = scorer.build_direct_scorer(model.pipeline)
    assert scorer.verify(direct, model.pipeline) is None
    # A text with no known term scores the intercept alone, as scikit-learn's all-zero row.
    proba = direct.predict_proba(["", "qqqzzz"])
    np.testing.assert_allclose(proba, model.pipeline.predict_proba(["", "qqqzzz"]), atol=1e-12)
    assert direct.predict_proba([]).shape == (0, 2)


def test_direct_is_used_after_a_passing_check(small_model_dir, caplog):
    model = load_model(small_model_dir)
    assert model.scorer == "sklearn"  # what load_model gives: the naive stages' scorer
    with caplog.at_level(logging.WARNING):
        assert model.use_scorer("direct") == "direct"
    assert "direct_scorer_refused" not in caplog.text


@pytest.mark.parametrize(
    "change,named",
    [
        (lambda p: p.steps[0][1].set_params(norm="l1"), "norm='l1'"),
        (lambda p: p.steps[0][1].set_params(analyzer="char"), "analyzer='char'"),
        (lambda p: p.steps[0][1].set_params(dtype=np.float32), "dtype"),
        (lambda p: p.steps[1][1].set_params(multi_class="multinomial"), "multi_class"),
    ],
)
def test_unsupported_parameter_logs_a_warning_and_keeps_sklearn(
    small_model_dir, caplog, change, named
):
    model = load_model(small_model_dir)
    change(model.pipeline)
    log = logging.getLogger("test-scorer")
    with caplog.at_level(logging.WARNING, logger="test-scorer"):
        assert model.use_scorer("direct", log) == "sklearn"
    [record] = [r for r in caplog.records if r.getMessage() == "direct_scorer_refused"]
    assert record.levelno == logging.WARNING
    assert "unsupported pipeline" in record.problem and named in record.problem
    texts = ["A fine film.", "Dull."]
    assert model.predict_proba(texts).tolist() == model.pipeline.predict_proba(texts).tolist()


def test_failing_probe_check_logs_a_warning_and_keeps_sklearn(small_model_dir, caplog, monkeypatch):
    model = load_model(small_model_dir)
    real_build = scorer.build_direct_scorer

    def off_by_a_little(pipeline):
        built = real_build(pipeline)
        built.intercept += 1e-6  # a scorer that is wrong by far more than the tolerance
        return built

    monkeypatch.setattr(scorer, "build_direct_scorer", off_by_a_little)
    with caplog.at_level(logging.WARNING):
        assert model.use_scorer("direct") == "sklearn"
    [record] = [r for r in caplog.records if r.getMessage() == "direct_scorer_refused"]
    assert "differs from scikit-learn on the probe texts" in record.problem
    assert model.scorer == "sklearn"


def test_a_check_that_raises_keeps_sklearn(small_model_dir, caplog, monkeypatch):
    model = load_model(small_model_dir)

    def broken(pipeline):
        raise RuntimeError("analyzer exploded")

    monkeypatch.setattr(scorer, "build_direct_scorer", broken)
    with caplog.at_level(logging.WARNING):
        assert model.use_scorer("direct") == "sklearn"
    assert "analyzer exploded" in caplog.records[-1].problem


def test_unknown_scorer_is_refused(small_model_dir):
    with pytest.raises(ValueError, match="unknown scorer"):
        load_model(small_model_dir).use_scorer("onnx")

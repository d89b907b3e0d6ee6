"""Calibration (sentiment_model/calibration.py): the measures, the fits, and the fold into the
classifier that keeps the artifact a plain pipeline the direct scorer reproduces."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from scipy.special import expit

from sentiment_model import calibration, load_model, scorer
from sentiment_model.artifact import export_model
from sentiment_model.data import Splits
from sentiment_model.train import data_summary, signals_reference


def test_ece_and_brier_on_hand_made_cases():
    y = np.array([0, 1, 0, 1])
    assert calibration.ece([0.0, 1.0, 0.0, 1.0], y) == 0.0
    assert calibration.brier([0.0, 1.0, 0.0, 1.0], y) == 0.0
    # All scored 0.75, half positive: one bin, |0.75 - 0.5|.
    assert calibration.ece([0.75] * 4, y) == pytest.approx(0.25)
    assert calibration.brier([0.75] * 4, y) == pytest.approx((0.75**2 + 0.25**2) / 2)
    # On the predicted label: confidence 0.75, half correct.
    assert calibration.ece([0.75] * 4, y, on="label") == pytest.approx(0.25)
    # 1.0 falls in the last bin, not in an eleventh.
    assert len(calibration.reliability([1.0, 0.95], [1, 1])) == 1
    with pytest.raises(ValueError):
        calibration.ece([0.5], [1], on="other")


def test_fits_recover_a_known_scale():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20_000)
    y = (rng.random(z.size) < expit(1.5 * z - 0.3)).astype(int)
    a, b = calibration.fit_platt(z, y)
    assert a == pytest.approx(1.5, abs=0.08) and b == pytest.approx(-0.3, abs=0.06)
    assert calibration.fit_temperature(z, y) == pytest.approx(1.5, abs=0.1)
    iso = calibration.fit_isotonic(z, y)
    assert np.all(np.diff(iso.predict(np.sort(z))) >= 0)


@pytest.fixture(scope="module")
def calibrated(small_model_dir, splits: Splits):
    """The small fixture model, calibrated on 400 validation texts (Platt, so b != 0 too)."""
    pipeline = copy.deepcopy(load_model(small_model_dir).pipeline)
    record = calibration.calibrate(
        pipeline, splits.validation.head(400), splits.test.head(400), method="platt"
    )
    return pipeline, record


def test_fold_is_exact_in_sklearn_and_in_the_direct_scorer(small_model_dir, calibrated, splits):
    raw = load_model(small_model_dir).pipeline
    pipeline, record = calibrated
    a, b = record["parameters"]["a"], record["parameters"]["b"]
    assert a > 0 and b != 0.0
    texts = splits.test["text"].head(500).tolist() + list(scorer.PROBE_TEXTS)
    expected = expit(a * raw.decision_function(texts) + b)
    proba = pipeline.predict_proba(texts)
    np.testing.assert_allclose(proba[:, 1], expected, rtol=0, atol=1e-12)
    # predict() agrees with predict_proba: the label is the more probable one.
    assert (pipeline.predict(texts) == (proba[:, 1] > 0.5).astype(int)).all()
    direct = scorer.build_direct_scorer(pipeline)
    assert scorer.verify(direct, pipeline) is None
    diff, labels_differ = scorer.max_difference(direct, pipeline, texts)
    assert labels_differ == 0 and diff <= scorer.TOLERANCE


def test_temperature_keeps_every_label(small_model_dir, splits):
    raw = load_model(small_model_dir).pipeline
    pipeline = copy.deepcopy(raw)
    record = calibration.calibrate(pipeline, splits.validation.head(400), splits.test.head(200))
    assert record["method"] == "temperature" and record["parameters"]["b"] == 0.0
    texts = splits.test["text"].head(300).tolist()
    assert (pipeline.predict(texts) == raw.predict(texts)).all()


def test_only_an_affine_map_folds(small_model_dir, splits):
    pipeline = copy.deepcopy(load_model(small_model_dir).pipeline)
    with pytest.raises(ValueError):
        calibration.calibrate(
            pipeline, splits.validation.head(50), splits.test.head(50), "isotonic"
        )
    with pytest.raises(ValueError):
        calibration.fold_affine(pipeline, -1.0)


def test_metadata_records_calibration_and_reference(calibrated, splits, tmp_path):
    pipeline, record = calibrated
    small = Splits(splits.train.head(10), splits.validation.head(400), splits.test.head(400))
    reference = signals_reference(pipeline, small.validation)
    path = export_model(
        pipeline,
        name="sentiment-calibrated",
        hyperparameters={"note": "test"},
        data=data_summary(small),
        metrics={},
        models_root=tmp_path,
        make_latest=False,
        calibration=record,
        reference=reference,
    )
    assert not (tmp_path / "LATEST").exists()
    meta = json.loads((path / "metadata.json").read_text())
    cal = meta["calibration"]
    assert cal["method"] == "platt" and cal["fitted_on"] == "validation"
    assert set(cal["parameters"]) == {"a", "b", "temperature"}
    for when in ("before", "after"):
        for split in ("validation", "test"):
            by = cal[when][split]
            assert set(by) == {"overall", "imdb", "rotten_tomatoes"}
            for m in by.values():
                assert set(m) == {"n", "ece", "ece_label", "brier", "accuracy"}
                assert 0 <= m["ece"] <= 1 and 0 <= m["brier"] <= 1
    assert cal["before"]["test"]["overall"]["n"] == 400
    ref = meta["reference"]
    assert ref["n"] == 400 and ref["split"] == "validation"
    for name in ("confidence", "tokens", "unknown_ratio"):
        fractions = ref["signals"][name]["fractions"]
        assert sum(fractions) == pytest.approx(1.0)
        assert sum(ref["signals"][name]["counts"]) == 400
        assert ref["signals"][name]["le"][-1] == "+Inf"
    assert sum(ref["label_mix"].values()) == pytest.approx(1.0)
    # The loaded artifact predicts what the calibrated pipeline predicted, with both scorers.
    model = load_model(path)
    texts = splits.test["text"].head(200).tolist()
    np.testing.assert_allclose(model.predict_proba(texts), pipeline.predict_proba(texts), atol=0)
    model.use_scorer("direct")
    assert model.scorer == "direct"
    np.testing.assert_allclose(
        model.predict_proba(texts), pipeline.predict_proba(texts), rtol=0, atol=scorer.TOLERANCE
    )


def test_comparison_record_has_every_method():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 2_000)
    y = (rng.random(z.size) < expit(1.3 * z)).astype(int)
    sources = np.where(np.arange(z.size) % 4 == 0, "rotten_tomatoes", "imdb")
    out = calibration.compare(z[:1000], y[:1000], z[1000:], y[1000:], sources[1000:])
    assert list(out) == list(calibration.METHODS)
    assert out["none"]["test"]["overall"]["ece"] > out["temperature"]["test"]["overall"]["ece"]
    assert "| temperature | imdb |" in calibration.table({"methods": out})

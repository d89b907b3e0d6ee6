"""Training, evaluation, export and the safety checks of loading."""

from __future__ import annotations

import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, ClassifierMixin

from sentiment_model import (
    ArtifactNotFoundError,
    ChecksumMismatchError,
    CorruptArtifactError,
    MetadataError,
    ModelVersionWarning,
    UntrustedTypeError,
    default_model_dir,
    export_model,
    load_model,
)
from sentiment_model.artifact import compact_for_export, reproducible_skops, sha256_file
from sentiment_model.baseline import DummySentimentModel
from sentiment_model.evaluate import comparison_table, evaluate, misclassified
from sentiment_model.train import fit

TEXTS = [
    "An absolute joy from start to finish, I loved every minute.",
    "Dull, predictable and far too long. A waste of an evening.",
    "Ce film est magnifique ! Très émouvant.",
    "😀😀😀 best movie ever 🎬",
    "这部电影很好看",
    "",
    "Terrible acting. " * 5_000,  # ~85,000 characters
]


@pytest.fixture
def artifact(small_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the small artifact that a test may damage."""
    return Path(shutil.copytree(small_model_dir, tmp_path / small_model_dir.name))


def rewrite_metadata(path: Path, **changes) -> None:
    meta = json.loads((path / "metadata.json").read_text())
    meta.update(changes)
    (path / "metadata.json").write_text(json.dumps(meta))


# --- training and evaluation ------------------------------------------------------------


@pytest.mark.slow  # trains a model or starts a process: seconds, not milliseconds
def test_model_on_sample_beats_keyword_baseline(sample, splits):
    val = splits.validation
    model_report = evaluate(fit(sample), val)
    dummy_report = evaluate(DummySentimentModel(), val)
    assert model_report["overall"]["accuracy"] > dummy_report["overall"]["accuracy"] + 0.05
    assert set(model_report["by_source"]) == {"imdb", "rotten_tomatoes"}
    table = comparison_table({"model": model_report, "keywords": dummy_report})
    assert list(table.index) == ["model", "keywords", "published baseline"]


@pytest.mark.slow  # trains a model or starts a process: seconds, not milliseconds
def test_evaluation_report_is_complete_and_consistent(sample, splits):
    report = evaluate(fit(sample), splits.validation)
    overall = report["overall"]
    assert overall["n"] == len(splits.validation)
    assert np.sum(overall["confusion_matrix"]) == overall["n"]
    correct = overall["confusion_matrix"][0][0] + overall["confusion_matrix"][1][1]
    assert overall["accuracy"] == pytest.approx(correct / overall["n"])
    assert 0.5 < overall["roc_auc"] <= 1
    for label in ("negative", "positive"):
        assert set(overall["per_class"][label]) == {"precision", "recall", "f1", "support"}
    wrong = misclassified(fit(sample), splits.validation.head(300), n=3)
    assert len(wrong) == 3 and (wrong["predicted"] != wrong["label"]).all()


def test_dummy_model_counts_keywords():
    dummy = DummySentimentModel()
    predictions = dummy.predict(["a great, wonderful film", "awful and boring", "no opinion"])
    assert predictions.tolist() == [1, 0, 1]


# --- export -------------------------------------------------------------------------------


@pytest.mark.slow  # trains a model or starts a process: seconds, not milliseconds
def test_export_then_load_gives_identical_predictions(sample, tmp_path):
    pipeline = fit(sample)
    before = pipeline.predict_proba(TEXTS)
    path = export_model(
        pipeline, name="t", hyperparameters={}, data={}, metrics={}, models_root=tmp_path
    )
    model = load_model(path)
    np.testing.assert_array_equal(model.predict_proba(TEXTS), before)
    assert (tmp_path / "LATEST").read_text().strip() == path.name
    assert default_model_dir(tmp_path) == path


@pytest.mark.slow  # trains a model or starts a process: seconds, not milliseconds
def test_training_twice_exports_the_same_bytes_and_version(sample, tmp_path):
    first = export_model(
        fit(sample), name="t", hyperparameters={}, data={}, metrics={}, models_root=tmp_path / "a"
    )
    second = export_model(
        fit(sample), name="t", hyperparameters={}, data={}, metrics={}, models_root=tmp_path / "b"
    )
    assert first.name == second.name
    assert (first / "model.skops").read_bytes() == (second / "model.skops").read_bytes()
    created = json.loads((first / "metadata.json").read_text())["created_at"]
    # Exporting it again into the same place keeps the artifact as it is.
    again = export_model(
        fit(sample), name="t", hyperparameters={}, data={}, metrics={}, models_root=tmp_path / "a"
    )
    assert again == first
    assert json.loads((again / "metadata.json").read_text())["created_at"] == created
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["LATEST", first.name]


@pytest.mark.slow  # trains a model or starts a process: seconds, not milliseconds
def test_reproducible_archive_has_no_addresses_or_timestamps(sample):
    pipeline = fit(sample)
    compact_for_export(pipeline)
    blob = reproducible_skops(pipeline)
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        infos = z.infolist()
        schema = z.read("schema.json").decode()
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert [i.filename for i in infos[:-1]] == [f"{n}.npy" for n in range(1, len(infos))]
    assert not re.search(r"\d{9,}", schema)  # no id() left, in ids or in values
    loaded = sio.load(io.BytesIO(blob), trusted=None)
    np.testing.assert_array_equal(loaded.predict_proba(TEXTS), pipeline.predict_proba(TEXTS))


@pytest.mark.slow  # trains a model or starts a process: seconds, not milliseconds
def test_damaged_artifact_of_the_same_version_is_replaced(sample, tmp_path):
    path = export_model(
        fit(sample), name="t", hyperparameters={}, data={}, metrics={}, models_root=tmp_path
    )
    (path / "model.skops").write_bytes(b"truncated")
    again = export_model(
        fit(sample), name="t", hyperparameters={}, data={}, metrics={}, models_root=tmp_path
    )
    assert again == path
    load_model(path)


def test_metadata_describes_the_artifact(small_model_dir):
    meta = json.loads((small_model_dir / "metadata.json").read_text())
    assert meta["sha256"] == sha256_file(small_model_dir / "model.skops")
    assert meta["version"] == meta["sha256"][:12]
    assert small_model_dir.name == f"{meta['name']}-{meta['version']}"
    assert meta["created_at"].endswith("+00:00")
    assert meta["labels"] == ["negative", "positive"]
    assert meta["data"]["rows"]["train"] == 2_000
    assert len(meta["data"]["train_sha256"]) == 64
    for key in ("python_version", "sklearn_version", "skops_version", "size_bytes"):
        assert meta[key]
    with zipfile.ZipFile(small_model_dir / "model.skops") as z:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())


@pytest.mark.slow  # trains a model or starts a process: seconds, not milliseconds
def test_compaction_drops_stop_words_and_stores_vocabulary_as_array(sample):
    pipeline = fit(sample)
    tfidf = pipeline.named_steps["tfidf"]
    tfidf.stop_words_ = {"pruned", "terms"}  # what scikit-learn < 1.6 kept after fitting
    dict_size = len(sio.dumps(pipeline, compression=zipfile.ZIP_DEFLATED))
    before = pipeline.predict_proba(TEXTS)
    report = compact_for_export(pipeline)
    assert report == {"stop_words_removed": 2, "vocabulary_terms": len(tfidf.vocabulary)}
    assert not hasattr(tfidf, "stop_words_")
    assert len(sio.dumps(pipeline, compression=zipfile.ZIP_DEFLATED)) < dict_size
    np.testing.assert_array_equal(pipeline.predict_proba(TEXTS), before)


# --- predict --------------------------------------------------------------------------


def test_predict_keeps_input_order_and_handles_any_text(small_model_dir):
    model = load_model(small_model_dir)
    together = model.predict(TEXTS)
    one_by_one = [model.predict([t])[0] for t in TEXTS]
    assert together == one_by_one
    assert [p.label for p in model.predict(TEXTS[:2])] == ["positive", "negative"]
    for p in together:
        assert p.label in ("negative", "positive") and 0.5 <= p.score <= 1.0
    assert model.predict(list(reversed(TEXTS))) == list(reversed(together))
    assert model.predict([]) == []


# --- load failures: each has its own error that names the file -----------------------------


def test_missing_directory(tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="model directory does not exist") as e:
        load_model(tmp_path / "nope")
    assert "nope" in str(e.value)


def test_missing_model_file(artifact):
    (artifact / "model.skops").unlink()
    with pytest.raises(ArtifactNotFoundError, match=r"model\.skops: model file is missing"):
        load_model(artifact)


def test_missing_metadata_file(artifact):
    (artifact / "metadata.json").unlink()
    with pytest.raises(ArtifactNotFoundError, match=r"metadata\.json: metadata file is missing"):
        load_model(artifact)


def test_metadata_not_json(artifact):
    (artifact / "metadata.json").write_text("{not json")
    with pytest.raises(MetadataError, match=r"metadata\.json: invalid metadata"):
        load_model(artifact)


def test_metadata_missing_field(artifact):
    meta = json.loads((artifact / "metadata.json").read_text())
    del meta["sha256"]
    (artifact / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(MetadataError, match="sha256: Field required"):
        load_model(artifact)


def test_tampered_model_fails_checksum(artifact):
    data = bytearray((artifact / "model.skops").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (artifact / "model.skops").write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=r"model\.skops: sha256 is"):
        load_model(artifact)


def test_truncated_model_fails_checksum(artifact):
    data = (artifact / "model.skops").read_bytes()
    (artifact / "model.skops").write_bytes(data[: len(data) // 2])
    with pytest.raises(ChecksumMismatchError):
        load_model(artifact)


def test_truncated_model_with_matching_checksum_is_corrupt(artifact):
    data = (artifact / "model.skops").read_bytes()
    (artifact / "model.skops").write_bytes(data[: len(data) // 2])
    rewrite_metadata(artifact, sha256=sha256_file(artifact / "model.skops"))
    with pytest.raises(CorruptArtifactError, match="cannot read the archive"):
        load_model(artifact)


def test_not_an_archive_is_corrupt(artifact):
    (artifact / "model.skops").write_bytes(b"import os; os.system('echo pwned')")
    rewrite_metadata(artifact, sha256=sha256_file(artifact / "model.skops"))
    with pytest.raises(CorruptArtifactError, match="BadZipFile"):
        load_model(artifact)


def test_archive_holding_something_other_than_a_classifier_is_corrupt(artifact):
    sio.dump({"not": "a model"}, artifact / "model.skops")
    rewrite_metadata(artifact, sha256=sha256_file(artifact / "model.skops"))
    with pytest.raises(CorruptArtifactError, match="holds a dict, not a classifier"):
        load_model(artifact)


class SneakyClassifier(ClassifierMixin, BaseEstimator):
    """A type outside skops' safe list, standing in for anything an attacker could name."""

    classes_ = np.array([0, 1])


def test_untrusted_type_is_refused(artifact):
    sio.dump(SneakyClassifier(), artifact / "model.skops")
    rewrite_metadata(artifact, sha256=sha256_file(artifact / "model.skops"))
    with pytest.raises(UntrustedTypeError, match="SneakyClassifier"):
        load_model(artifact)


def test_other_sklearn_version_warns(artifact):
    rewrite_metadata(artifact, sklearn_version="0.0.1")
    with pytest.warns(ModelVersionWarning, match="trained with scikit-learn 0.0.1"):
        model = load_model(artifact)
    assert model.predict(["fine"])[0].label in ("negative", "positive")


def test_no_default_model_yet(tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="no default model yet"):
        default_model_dir(tmp_path)

"""The promotion gate's smoke test with real servers: ``python -m sentiment_model.registry``
starts the final stage on each candidate (127.0.0.1, a free port), then stops it. A temporary
models root throughout: the student's models/LATEST is never touched."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sentiment_model import registry
from sentiment_model.artifact import export_model, read_metadata
from sentiment_model.data import Splits
from sentiment_model.train import data_summary, fit

ROOT = Path(__file__).resolve().parents[2]


def with_metrics(folder: Path, metrics: dict) -> None:
    meta = json.loads((folder / "metadata.json").read_text())
    (folder / "metadata.json").write_text(json.dumps(meta | {"metrics": metrics}))


@pytest.fixture
def root(tmp_path: Path, small_model_dir: Path, sample, splits) -> tuple[Path, str]:
    """A models root with the small model as the default (metrics written in), and a broken
    candidate: the labels inverted, with metadata that claims the same metrics (a lie only the
    smoke test can catch)."""
    models = tmp_path / "models"
    stable = models / small_model_dir.name
    shutil.copytree(small_model_dir, stable)
    metrics = {
        "test": {
            "overall": {"accuracy": 0.8, "roc_auc": 0.9},
            "by_source": {"imdb": {"accuracy": 0.83}, "rotten_tomatoes": {"accuracy": 0.73}},
        }
    }
    with_metrics(stable, metrics)
    (models / "LATEST").write_text(stable.name + "\n")
    few = sample.groupby(["source", "label"]).head(150)
    inverted = export_model(
        fit(few.assign(label=1 - few["label"])),
        name="sentiment-inverted",
        hyperparameters={"note": "labels inverted on purpose"},
        data=data_summary(Splits(few, splits.validation.head(200), splits.test.head(200))),
        metrics=metrics,
        models_root=models,
        make_latest=False,
    )
    return models, inverted.name


def run(models: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sentiment_model.registry", "--models-root", str(models), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_smoke_test_passes_on_a_working_model_and_reports_each_answer(small_model_dir):
    result = registry.smoke_test(small_model_dir)
    assert result["passed"] == f"{len(registry.SMOKE_TEXTS)}/{len(registry.SMOKE_TEXTS)}"
    version = read_metadata(small_model_dir).version
    assert {a["version"] for a in result["answers"]} == {version}


def test_a_model_that_answers_wrong_is_refused_by_the_smoke_test(root):
    models, inverted = root
    stable = (models / "LATEST").read_text()
    result = run(models, "promote", inverted)
    assert result.returncode == registry.EXIT_SMOKE_FAILED, result.stderr
    assert "check 2 metrics: within 0.005" in result.stderr  # it got that far ...
    assert "refused: smoke test failed: 4 of 4 smoke answers wrong" in result.stderr
    assert (models / "LATEST").read_text() == stable  # ... and no further
    [entry] = registry.history(models)
    assert entry["failed_check"] == "smoke" and len(entry["checks"]["smoke"]["answers"]) == 4

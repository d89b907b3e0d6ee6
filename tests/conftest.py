"""Shared fixtures: a small model trained in seconds, so most tests need not load the full one.

And a guard: the test run (notebooks included) must leave the student's default model alone.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sentiment_model.artifact import MODELS_ROOT, export_model
from sentiment_model.data import Splits, load_splits
from sentiment_model.train import data_summary, fit

_MODELS_BEFORE = pytest.StashKey[tuple[str, list[str]]]()


def _models_state() -> tuple[str, list[str]]:
    """What a test must not change: models/LATEST, the artifacts next to it, the files in logs/."""
    latest = MODELS_ROOT / "LATEST"
    names = [
        f"{folder.name}/{p.name}"
        for folder in (MODELS_ROOT, MODELS_ROOT.parent / "logs")
        if folder.is_dir()
        for p in sorted(folder.iterdir())
    ]
    return (latest.read_text() if latest.is_file() else "", names)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``slow`` marker and note the state of models/ before any test runs."""
    config.addinivalue_line("markers", "slow: runs real processes (servers, notebooks, locust)")
    config.stash[_MODELS_BEFORE] = _models_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if it changed models/LATEST, or added or removed an artifact or a log file."""
    before = session.config.stash.get(_MODELS_BEFORE, None)
    if before is not None and _models_state() != before:
        message = f"the tests changed models/ or logs/: {before} -> {_models_state()}"
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_sep("!", message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def splits() -> Splits:
    """The course's real train / validation / test split."""
    return load_splits()


@pytest.fixture(scope="session")
def sample(splits: Splits) -> pd.DataFrame:
    """2,000 training rows, stratified by source and label: enough for a sensible model."""
    return splits.train.groupby(["source", "label"]).sample(500, random_state=0)


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory, sample: pd.DataFrame, splits: Splits) -> Path:
    """A real artifact of a model fitted on the sample (loads in well under a second)."""
    pipeline = fit(sample)
    small = Splits(sample, splits.validation.head(200), splits.test.head(200))
    return export_model(
        pipeline,
        name="sentiment-small",
        hyperparameters={"note": "test fixture"},
        data=data_summary(small),
        metrics={},
        models_root=tmp_path_factory.mktemp("models"),
        make_latest=False,
    )

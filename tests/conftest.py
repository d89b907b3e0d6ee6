"""Shared fixtures: a small model trained in seconds, so most tests need not load the full one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sentiment_model.artifact import export_model
from sentiment_model.data import Splits, load_splits
from sentiment_model.train import data_summary, fit


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

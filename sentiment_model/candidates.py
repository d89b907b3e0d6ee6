"""Small candidate models in seconds, for the rollout drills and their tests (lesson 12).

The default model trains for a minute on the whole train split. A rollout drill needs a stable
version and candidates to roll out, each exported like the default (test metrics and the test
split's fingerprint in its metadata, which the promotion gate compares), and each into a
temporary models root, so that the student's ``models/LATEST`` is never touched::

    root = Path(tempfile.mkdtemp())
    stable = train_candidate(root, rows_per_group=500, make_latest=True)
    better = train_candidate(root, rows_per_group=800)
    broken = train_candidate(root, shuffle_labels=True)   # learns nothing: about 50 % accuracy
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sentiment_model.artifact import export_model
from sentiment_model.data import Splits, load_splits
from sentiment_model.evaluate import evaluate
from sentiment_model.train import DEFAULT_PARAMS, MODEL_NAME, data_summary, fit


def train_candidate(
    models_root: Path,
    *,
    rows_per_group: int = 500,
    C: float = DEFAULT_PARAMS["C"],
    shuffle_labels: bool = False,
    seed: int = 0,
    splits: Splits | None = None,
    test_rows: int | None = None,
    make_latest: bool = False,
) -> Path:
    """Fit the course's pipeline on ``rows_per_group`` training rows per (source, label), score
    it on the test split (its first ``test_rows`` rows when given), export it into
    ``models_root`` and return the artifact's folder.

    ``shuffle_labels`` permutes the sample's labels first: a model that learned nothing, the
    bad candidate of the drills. ``seed`` chooses the sample (and the permutation).
    """
    splits = load_splits() if splits is None else splits
    sample = splits.train.groupby(["source", "label"]).sample(rows_per_group, random_state=seed)
    if shuffle_labels:
        labels = np.random.default_rng(seed).permutation(sample["label"].to_numpy())
        sample = sample.assign(label=labels)
    pipeline = fit(sample, token_pattern=DEFAULT_PARAMS["token_pattern"], C=C)
    test = splits.test if test_rows is None else splits.test.head(test_rows)
    report = evaluate(pipeline, test)
    variant = {"rows_per_group": rows_per_group, "shuffle_labels": shuffle_labels, "seed": seed}
    return export_model(
        pipeline,
        name=MODEL_NAME,
        hyperparameters=DEFAULT_PARAMS | {"C": C, "candidate": variant},
        data=data_summary(Splits(sample, splits.validation, test)),
        metrics={"test": report},
        models_root=models_root,
        make_latest=make_latest,
    )

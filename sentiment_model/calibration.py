"""Calibrated scores: measure how far the model's probabilities are from the truth, and fix it.

A score is *calibrated* when, among the texts scored about 0.8, about 80 % really are positive.
Logistic regression fitted with regularisation (here C=8) on L2-normalised TF-IDF rows is not:
on the validation split its decision values are too small, so its probabilities sit too close
to 0.5 (the model is under-confident, most of all on long IMDB reviews).

Three classic fixes are fitted on the validation split (never on train, never on test), all on
the logistic regression's decision value ``z`` (its logit):

* **temperature scaling**: ``p = sigmoid(a * z)``, one parameter; never changes a label;
* **Platt scaling**: ``p = sigmoid(a * z + b)``, two parameters; ``b`` moves the threshold;
* **isotonic regression**: any non-decreasing step function of ``z``.

The first two are an affine map of the logit, so they fold into the classifier itself
(:func:`fold_affine`): ``coef_ *= a`` and ``intercept_ = a * intercept_ + b``. The exported
artifact stays the same skops ``Pipeline``, scikit-learn's own ``predict_proba`` is calibrated,
``predict`` agrees with it, and the direct scorer reads the folded arrays unchanged.

The measure: **ECE**, the expected calibration error, with 10 equal-width bins on the
probability of the *positive class* (the bins of ``sklearn.calibration.calibration_curve`` and
of the reliability diagram): the mean, weighted by the share of texts in each bin, of
``|mean predicted P(positive) - observed share of positives|``. :func:`ece` can bin on the
probability of the predicted label instead (``on="label"``). **Brier**: the mean squared error
of P(positive) against the 0/1 label.

``python -m sentiment_model.calibration`` fits the uncalibrated default pipeline on train,
fits the three methods on validation, measures each on the test split per source, and writes
``benchmarks/results/calibration/calibration.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression

BINS = 10
METHODS = ("none", "temperature", "platt", "isotonic")
CHOSEN = "temperature"  # see choose() and lessons/00_model/README.md, "Calibrated scores"
RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "calibration"


# --- measures ------------------------------------------------------------------------------


def _binned(p: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each probability: [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0] for 10 bins."""
    return np.minimum((np.asarray(p) * bins).astype(np.intp), bins - 1)


def reliability(p_positive, y, bins: int = BINS) -> pd.DataFrame:
    """One row per non-empty bin of P(positive): bin bounds, texts, mean predicted, observed."""
    p, y = np.asarray(p_positive, dtype=np.float64), np.asarray(y)
    idx = _binned(p, bins)
    rows = []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            rows.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "n": int(mask.sum()),
                    "predicted": float(p[mask].mean()),
                    "observed": float(y[mask].mean()),
                }
            )
    return pd.DataFrame(rows, columns=["low", "high", "n", "predicted", "observed"])


def ece(p_positive, y, bins: int = BINS, on: str = "positive") -> float:
    """Expected calibration error with ``bins`` equal-width bins.

    ``on="positive"`` (the default, used everywhere in the course) bins P(positive) and compares
    it with the share of positives; ``on="label"`` bins the probability of the predicted label
    and compares it with the share of correct predictions (the "top-label" ECE; for two classes
    only the bins above 0.5 are used).
    """
    p, y = np.asarray(p_positive, dtype=np.float64), np.asarray(y)
    if len(p) == 0:
        return float("nan")
    if on == "positive":
        score, hit = p, y.astype(np.float64)
    elif on == "label":
        predicted = (p >= 0.5).astype(int)
        score, hit = np.where(predicted == 1, p, 1.0 - p), (predicted == y).astype(np.float64)
    else:
        raise ValueError(f"on={on!r}: choose 'positive' or 'label'")
    idx = _binned(score, bins)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.mean() * abs(score[mask].mean() - hit[mask].mean())
    return float(total)


def brier(p_positive, y) -> float:
    """Mean squared difference between P(positive) and the 0/1 label."""
    p, y = np.asarray(p_positive, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.mean((p - y) ** 2))


def scores(p_positive, y, sources) -> dict:
    """ECE (both binnings), Brier and accuracy, overall and per source."""
    p, y, sources = np.asarray(p_positive), np.asarray(y), np.asarray(sources)
    parts = {"overall": np.ones(len(y), dtype=bool)}
    parts |= {str(s): sources == s for s in sorted(set(sources.tolist()))}
    return {
        name: {
            "n": int(mask.sum()),
            "ece": round(ece(p[mask], y[mask]), 6),
            "ece_label": round(ece(p[mask], y[mask], on="label"), 6),
            "brier": round(brier(p[mask], y[mask]), 6),
            "accuracy": round(float(((p[mask] >= 0.5) == y[mask]).mean()), 6),
        }
        for name, mask in parts.items()
    }


# --- methods --------------------------------------------------------------------------------


def _log_loss(a: float, b: float, z: np.ndarray, y: np.ndarray) -> float:
    q = a * z + b
    return float(np.mean(np.logaddexp(0.0, q) - y * q))


def fit_temperature(z, y) -> float:
    """The ``a`` of ``sigmoid(a * z)`` with the smallest log loss on (z, y); ``a = 1 / T``."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64)
    result = minimize_scalar(
        lambda a: _log_loss(a, 0.0, z, y), bounds=(1e-3, 100.0), method="bounded",
        options={"xatol": 1e-10},
    )  # fmt: skip
    return float(result.x)


def fit_platt(z, y) -> tuple[float, float]:
    """The ``(a, b)`` of ``sigmoid(a * z + b)`` with the smallest log loss on (z, y)."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def loss_and_grad(ab):
        a, b = ab
        q = a * z + b
        r = expit(q) - y
        return float(np.mean(np.logaddexp(0.0, q) - y * q)), np.array([np.mean(r * z), np.mean(r)])

    result = minimize(loss_and_grad, [1.0, 0.0], jac=True, method="BFGS", options={"gtol": 1e-10})
    return float(result.x[0]), float(result.x[1])


def fit_isotonic(z, y) -> IsotonicRegression:
    """A non-decreasing step function from z to P(positive), clipped outside the fitted range."""
    return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
        np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64)
    )


def fold_affine(pipeline, a: float, b: float = 0.0):
    """Fold ``sigmoid(a * z + b)`` into the pipeline's LogisticRegression, in place.

    ``z = x . coef_ + intercept_`` becomes ``a * z + b`` with ``coef_ * a`` and
    ``intercept_ * a + b``: ``predict_proba``, ``decision_function`` and ``predict`` of the
    same pipeline are calibrated, and nothing new is stored. ``a`` must be positive (a
    calibration never reverses the order of the scores). Returns the pipeline.
    """
    if not a > 0:
        raise ValueError(f"a={a!r}: a calibration must keep the order of the scores (a > 0)")
    clf = pipeline.steps[-1][1]
    clf.coef_ = clf.coef_ * a
    clf.intercept_ = clf.intercept_ * a + b
    return pipeline


def calibrate(pipeline, validation: pd.DataFrame, test: pd.DataFrame, method: str = CHOSEN):
    """Fit ``method`` (``"temperature"`` or ``"platt"``) on ``validation``, fold it into
    ``pipeline`` (in place) and return the record the artifact's metadata keeps: the method,
    its parameters, and ECE / Brier / accuracy before and after on both splits, per source."""
    if method not in ("temperature", "platt"):
        raise ValueError(f"method={method!r}: only an affine map of the logit folds into the model")
    z_val = pipeline.decision_function(validation["text"].tolist())
    z_test = pipeline.decision_function(test["text"].tolist())
    y_val = validation["label"].to_numpy()
    if method == "temperature":
        a, b = fit_temperature(z_val, y_val), 0.0
    else:
        a, b = fit_platt(z_val, y_val)
    fold_affine(pipeline, a, b)
    record = {
        "method": method,
        "formula": "p = sigmoid(a * z + b), z the logistic regression's decision value; "
        "folded into coef_ (times a) and intercept_ (times a, plus b)",
        "parameters": {"a": a, "b": b, "temperature": 1.0 / a},
        "fitted_on": "validation",
        "ece": f"{BINS} equal-width bins on P(positive); ece_label: on P(predicted label)",
        "before": {},
        "after": {},
    }
    for name, df, z in (("validation", validation, z_val), ("test", test, z_test)):
        y, sources = df["label"].to_numpy(), df["source"].to_numpy()
        record["before"][name] = scores(expit(z), y, sources)
        after = pipeline.predict_proba(df["text"].tolist())[:, 1]
        record["after"][name] = scores(after, y, sources)
    return record


# --- the measurement ------------------------------------------------------------------------


def compare(z_validation, y_validation, z_test, y_test, sources_test) -> dict:
    """Fit each method on validation and score it on test: {method: {parameters, test}}."""
    a_t = fit_temperature(z_validation, y_validation)
    a_p, b_p = fit_platt(z_validation, y_validation)
    iso = fit_isotonic(z_validation, y_validation)
    p_test = {
        "none": expit(z_test),
        "temperature": expit(a_t * np.asarray(z_test)),
        "platt": expit(a_p * np.asarray(z_test) + b_p),
        "isotonic": iso.predict(np.asarray(z_test, dtype=np.float64)),
    }
    parameters = {
        "none": {},
        "temperature": {"a": a_t, "temperature": 1.0 / a_t},
        "platt": {"a": a_p, "b": b_p},
        "isotonic": {"steps": len(iso.X_thresholds_)},
    }
    return {
        m: {"parameters": parameters[m], "test": scores(p_test[m], y_test, sources_test)}
        for m in METHODS
    }


def measure(log=print) -> dict:
    """Fit the uncalibrated default pipeline on train, compare the methods, return the record."""
    from sentiment_model.data import load_splits
    from sentiment_model.train import DEFAULT_PARAMS, fit

    start = time.perf_counter()
    splits = load_splits()
    log(f"fitting the default pipeline {DEFAULT_PARAMS} on train ...")
    pipeline = fit(splits.train, **DEFAULT_PARAMS)
    z_val = pipeline.decision_function(splits.validation["text"].tolist())
    z_test = pipeline.decision_function(splits.test["text"].tolist())
    methods = compare(
        z_val,
        splits.validation["label"].to_numpy(),
        z_test,
        splits.test["label"].to_numpy(),
        splits.test["source"].to_numpy(),
    )
    return {
        "command": "python -m sentiment_model.calibration",
        "fitted_on": "validation",
        "scored_on": "test",
        "ece": f"{BINS} equal-width bins on P(positive); ece_label: on P(predicted label)",
        "model": DEFAULT_PARAMS,
        "rows": splits.sizes(),
        "chosen": CHOSEN,
        "methods": methods,
        "seconds": round(time.perf_counter() - start, 1),
    }


def table(record: dict) -> str:
    """The comparison as a markdown table: method x source, ECE / Brier / accuracy."""
    lines = [
        "| method | source | n | ECE | ECE (label) | Brier | accuracy |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for method, entry in record["methods"].items():
        for source, m in entry["test"].items():
            lines.append(
                f"| {method} | {source} | {m['n']:,} | {m['ece']:.4f} | {m['ece_label']:.4f} | "
                f"{m['brier']:.4f} | {m['accuracy']:.4f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: measure, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "calibration.json")
    args = parser.parse_args(argv)
    record = measure()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(table(record))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

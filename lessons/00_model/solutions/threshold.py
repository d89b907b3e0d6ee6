"""Lesson 00, exercise 1: a threshold for Rotten Tomatoes that keeps false positives under 10 %.

.venv/bin/python lessons/00_model/solutions/threshold.py      # the default model (LATEST)
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve


def threshold_for_fpr(y_true, p_positive, max_fpr: float = 0.10) -> dict:
    """The lowest threshold on P(positive) whose false-positive rate stays under ``max_fpr``
    (the lowest such threshold keeps the most recall), with its rates."""
    fpr, tpr, thresholds = roc_curve(y_true, p_positive)
    i = np.flatnonzero(fpr < max_fpr)[-1]
    return {"threshold": float(thresholds[i]), "fpr": float(fpr[i]), "recall": float(tpr[i])}


def at_threshold(y_true, p_positive, threshold: float) -> dict:
    """False-positive rate and recall when "positive" means P(positive) >= ``threshold``."""
    y, said = np.asarray(y_true) == 1, np.asarray(p_positive) >= threshold
    return {
        "fpr": float((said & ~y).sum() / (~y).sum()),
        "recall": float((said & y).sum() / y.sum()),
    }


def rotten_tomatoes(model, test) -> tuple[np.ndarray, np.ndarray]:
    """Labels (1 = positive) and P(positive) for the Rotten Tomatoes rows of ``test``."""
    rt = test[test["source"] == "rotten_tomatoes"]
    positive = model.metadata.labels.index("positive")
    return rt["label"].to_numpy(), model.predict_proba(rt["text"].tolist())[:, positive]


def main() -> None:
    from sentiment_model import load_model
    from sentiment_model.data import load_splits

    model = load_model()
    y, p = rotten_tomatoes(model, load_splits().test)
    default, chosen = at_threshold(y, p, 0.5), threshold_for_fpr(y, p)
    print(f"model {model.version}, {len(y)} Rotten Tomatoes test sentences")
    print(f"threshold 0.50: false positives {default['fpr']:.1%}, recall {default['recall']:.1%}")
    print(
        f"threshold {chosen['threshold']:.2f}: false positives {chosen['fpr']:.1%}, "
        f"recall {chosen['recall']:.1%}"
    )


if __name__ == "__main__":
    main()

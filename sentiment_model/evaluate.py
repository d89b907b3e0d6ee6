"""Honest evaluation: the metrics the lesson reports, overall and per source."""

from __future__ import annotations

import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

LABELS = ("negative", "positive")

# Published results on the two sources, for context (different splits, so not a like-for-like
# comparison): Maas et al. (2011) on the IMDB test set, and NBSVM (Wang and Manning, 2012) on
# the sentence-polarity data set with 10-fold cross-validation.
PUBLISHED_BASELINES = {
    "imdb": {"accuracy": 0.8889, "reference": "Maas et al. (2011), full model + unlabeled data"},
    "rotten_tomatoes": {"accuracy": 0.794, "reference": "Wang and Manning (2012), NBSVM-bi"},
}


def classification_metrics(y_true, y_pred, p_positive) -> dict:
    """Accuracy, per-class precision / recall / F1, ROC AUC and the confusion matrix."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1], zero_division=0
    )
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(LABELS)
    }
    auc = roc_auc_score(y_true, p_positive) if len(set(y_true)) == 2 else float("nan")
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "roc_auc": float(auc),
        "per_class": per_class,
        # rows: true negative, true positive; columns: predicted negative, predicted positive
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
    }


def evaluate(model, df: pd.DataFrame) -> dict:
    """Metrics of ``model`` (anything with ``predict_proba``) on ``df``: overall and per source."""
    p_positive = model.predict_proba(df["text"].tolist())[:, 1]
    y_pred = (p_positive >= 0.5).astype(int)
    y_true = df["label"].to_numpy()
    report = {"overall": classification_metrics(y_true, y_pred, p_positive), "by_source": {}}
    for source in sorted(df["source"].unique()):
        mask = (df["source"] == source).to_numpy()
        report["by_source"][source] = classification_metrics(
            y_true[mask], y_pred[mask], p_positive[mask]
        )
    return report


def comparison_table(reports: dict[str, dict]) -> pd.DataFrame:
    """Accuracy per source for several models, next to the published baselines."""
    rows = []
    for model_name, report in reports.items():
        row = {"model": model_name, "overall": report["overall"]["accuracy"]}
        for source, metrics in report["by_source"].items():
            row[source] = metrics["accuracy"]
        rows.append(row)
    rows.append(
        {"model": "published baseline"}
        | {source: b["accuracy"] for source, b in PUBLISHED_BASELINES.items()}
    )
    return pd.DataFrame(rows).set_index("model")


def misclassified(model, df: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` test rows the model got wrong with the highest confidence."""
    p_positive = model.predict_proba(df["text"].tolist())[:, 1]
    out = df.assign(p_positive=p_positive, predicted=(p_positive >= 0.5).astype(int))
    wrong = out[out["predicted"] != out["label"]]
    confidence = (wrong["p_positive"] - 0.5).abs()
    return wrong.assign(confidence=confidence).nlargest(n, "confidence")

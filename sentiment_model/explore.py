"""Look inside the data and the model: the tables and measurements the notebooks show.

Everything here is read-only: it describes data, a fitted pipeline or an artifact and never
changes them, so the notebooks stay short and the numbers they print are tested code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import skops.io as sio
from sklearn.feature_extraction.text import CountVectorizer

from sentiment_model.data import HTML_BREAK, clean_text


def cleaning_report(raw: pd.DataFrame) -> pd.DataFrame:
    """Per source (and in total): what :func:`sentiment_model.data.clean_reviews` removes.

    Columns: raw rows, rows containing ``<br />``, rows empty after cleaning, rows dropped
    because the same text carries both labels, extra copies of a text dropped, rows kept.
    """
    cleaned = raw.assign(text=raw["text"].map(clean_text))
    empty = cleaned["text"].str.len() == 0
    nonempty = cleaned[~empty]
    conflicting = nonempty.groupby("text")["label"].transform("nunique") > 1
    consistent = nonempty[~conflicting]
    # Same rule as clean_reviews: the first copy of a text is kept, whatever its source.
    duplicate = consistent["text"].duplicated()
    parts = {
        "raw_rows": raw["source"],
        "with_br_tags": raw["source"][raw["text"].str.contains(HTML_BREAK)],
        "empty": cleaned["source"][empty],
        "conflicting_labels": nonempty["source"][conflicting],
        "duplicates": consistent["source"][duplicate],
        "kept": consistent["source"][~duplicate],
    }
    table = pd.DataFrame({name: col.value_counts() for name, col in parts.items()})
    table = table.fillna(0).astype(int).sort_index()
    table.loc["total"] = table.sum()
    return table


def length_summary(
    df: pd.DataFrame,
    percentiles: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999),
    long_chars: int = 2_000,
) -> pd.DataFrame:
    """Text length in characters per source: percentiles, the maximum, and the share of texts
    longer than ``long_chars``."""
    lengths = df["text"].str.len()
    by_source = lengths.groupby(df["source"])
    table = by_source.quantile(list(percentiles)).unstack()
    table.columns = [f"p{q * 100:g}" for q in percentiles]
    table["max"] = by_source.max()
    table[f"share_over_{long_chars}"] = (lengths > long_chars).groupby(df["source"]).mean()
    return table


def metrics_table(report: dict) -> pd.DataFrame:
    """One row per part of an :func:`sentiment_model.evaluate.evaluate` report (overall, each
    source): n, accuracy, ROC AUC, and precision / recall / F1 of each class."""
    rows = {}
    for name, m in [("overall", report["overall"]), *report["by_source"].items()]:
        row = {"n": m["n"], "accuracy": m["accuracy"], "roc_auc": m["roc_auc"]}
        for label, scores in m["per_class"].items():
            for metric in ("precision", "recall", "f1"):
                row[f"{metric}_{label}"] = scores[metric]
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def top_ngrams(pipeline, n: int = 15) -> tuple[pd.Series, pd.Series]:
    """The ``n`` most negative and ``n`` most positive n-grams: the largest logistic-regression
    weights, most extreme first. Works before export (``vocabulary_`` dict) and after (the
    ``vocabulary`` array), since ``get_feature_names_out`` reads either."""
    terms = pipeline.named_steps["tfidf"].get_feature_names_out()
    weights = pd.Series(pipeline.named_steps["clf"].coef_[0], index=terms)
    return weights.nsmallest(n), weights.nlargest(n)


def pruned_terms(vectorizer, texts) -> set[str]:
    """The n-grams a fitted vectorizer dropped for appearing in fewer than ``min_df`` texts.

    scikit-learn < 1.6 kept exactly this set as ``stop_words_`` (with ``max_df`` /
    ``max_features`` unset, as here). Counts every n-gram of ``texts`` with the same analyzer
    and subtracts the kept vocabulary.
    """
    counter = CountVectorizer(analyzer=vectorizer.build_analyzer(), min_df=1).fit(texts)
    kept = vectorizer.get_feature_names_out()
    return set(counter.vocabulary_).difference(kept)


def skops_roundtrip(obj, path: Path | str, load: bool = True) -> dict:
    """Dump ``obj`` with skops (zip-compressed) to ``path``; return its size and the seconds to
    dump and (with ``load``) to load it back, trusting only skops' default safe types."""
    path = Path(path)
    start = time.perf_counter()
    sio.dump(obj, path, compression=zipfile.ZIP_DEFLATED)
    result = {"size_bytes": path.stat().st_size, "dump_s": time.perf_counter() - start}
    if load:
        start = time.perf_counter()
        sio.load(path, trusted=None)
        result["load_s"] = time.perf_counter() - start
    return result


# Run in a fresh interpreter so nothing the caller has loaded is counted. Linux only: it reads
# the kernel's view of the process from /proc/self/status (VmRSS now, VmHWM = peak).
_FOOTPRINT_SCRIPT = """
import json, sys, time
def status():
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}
from sentiment_model import load_model
before = status()
start = time.perf_counter()
model = load_model(sys.argv[1] if len(sys.argv) > 1 else None)
load_s = time.perf_counter() - start
after = status()
print(json.dumps({
    "load_s": load_s,
    "rss_before_load_bytes": before["VmRSS"],
    "rss_after_load_bytes": after["VmRSS"],
    "peak_rss_bytes": after["VmHWM"],
    "version": model.version,
}))
"""


def load_footprint(path: Path | str | None = None, timeout: float = 120) -> dict:
    """Load an artifact (default: ``models/LATEST``) in a fresh Python process and report the
    load time in seconds and the resident memory (bytes) before and after, and at its peak.

    ``rss_before_load_bytes`` is the interpreter with numpy, scikit-learn and skops imported;
    the difference to ``rss_after_load_bytes`` is what the model itself costs.
    """
    args = [sys.executable, "-c", _FOOTPRINT_SCRIPT] + ([str(path)] if path is not None else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loading in a subprocess failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])

"""Lesson 7, exercise 3: why float32 features could not help: where the pipeline's time goes.

    .venv/bin/python lessons/07_fast/solutions/vectorizer_share.py

Times, in-process, the two steps of the shipped pipeline on batches of 32 test texts: the
TF-IDF vectorizer (tokenising in Python) and the logistic regression (sparse arithmetic, the
only part a float32 dtype changes). Prints the vectorizer's share of the total per profile.
"""

from __future__ import annotations

import time

from sentiment_model import load_model
from sentiment_model.data import clean_text, load_splits

PROFILES = {"short": "rotten_tomatoes", "long": "imdb"}


def vectorizer_share(pipeline, texts: list[str], repeats: int = 5) -> float:
    """The vectorizer's share of the pipeline's time on ``texts``, best of ``repeats``."""
    vectorizer, clf = pipeline.steps[0][1], pipeline.steps[1][1]
    best_vec = best_clf = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        features = vectorizer.transform(texts)
        middle = time.perf_counter()
        clf.predict_proba(features)
        best_vec = min(best_vec, middle - started)
        best_clf = min(best_clf, time.perf_counter() - middle)
    return best_vec / (best_vec + best_clf)


def shares(pipeline, test, batch: int = 32) -> dict[str, float]:
    """Per profile, the vectorizer's share on the first ``batch`` test texts of that source."""
    out = {}
    for profile, source in PROFILES.items():
        texts = [clean_text(t) for t in test[test["source"] == source]["text"].head(batch)]
        out[profile] = vectorizer_share(pipeline, texts)
    return out


if __name__ == "__main__":
    model = load_model()  # models/LATEST
    for profile, share in shares(model.pipeline, load_splits().test).items():
        print(f"{profile:6} the vectorizer takes {share:.0%} of the pipeline's time")

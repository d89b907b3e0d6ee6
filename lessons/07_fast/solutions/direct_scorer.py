"""Lesson 7, exercise 2: which pipelines does the direct scorer accept?

    .venv/bin/python lessons/07_fast/solutions/direct_scorer.py

Fits three small pipelines on 2,000 training texts (as tests/conftest.py does; a few seconds
each): the default one, one with English stop words, one with ``norm="l1"``. The first two
pass the probe check against scikit-learn without a line of the scorer changed, because the
scorer tokenises with the vectorizer's own analyzer (``build_analyzer()``), and stop words are
dropped there. ``norm="l1"`` is refused by name: the scorer divides by the l2 norm only.
"""

from __future__ import annotations

import pandas as pd

from sentiment_model.data import load_splits
from sentiment_model.scorer import UnsupportedPipelineError, build_direct_scorer, verify
from sentiment_model.train import build_pipeline

VARIANTS = {
    "default": {},
    "stop_words='english'": {"tfidf__stop_words": "english"},
    "norm='l1'": {"tfidf__norm": "l1"},
}


def sample_of(train: pd.DataFrame) -> pd.DataFrame:
    """2,000 rows, 500 per source and label."""
    return train.groupby(["source", "label"]).sample(500, random_state=0)


def answers(sample: pd.DataFrame) -> dict[str, str]:
    """Per variant: "accepted", or why the direct scorer refuses it."""
    results = {}
    for name, params in VARIANTS.items():
        pipeline = build_pipeline().set_params(**params)
        pipeline.fit(sample["text"].tolist(), sample["label"].to_numpy())
        try:
            problem = verify(build_direct_scorer(pipeline), pipeline)
        except UnsupportedPipelineError as e:
            problem = f"refused: {e}"
        results[name] = problem or "accepted"
    return results


if __name__ == "__main__":
    for name, answer in answers(sample_of(load_splits().train)).items():
        print(f"{name:22} {answer}")

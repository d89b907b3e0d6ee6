"""Lesson 00, exercise 2: what word triples (``ngram_range=(1, 3)``) and ``min_df=3`` do to the
model's size, the first thing to check before a bigger search.

    .venv/bin/python lessons/00_model/solutions/bigger_search.py      # the full training split
    .venv/bin/python lessons/00_model/solutions/bigger_search.py --sample 2000   # seconds

The search itself is ``sentiment_model.train.search`` with a ``PARAM_GRID`` that includes the
new parameters, once ``build_pipeline`` accepts them (``python -m sentiment_model.train
--search``, a few minutes per candidate on two cores).
"""

from __future__ import annotations

import argparse

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer

from sentiment_model.train import TOKENS_WITH_PUNCT

VARIANTS = {
    "default: 1-2 grams, min_df=2": {"ngram_range": (1, 2), "min_df": 2},
    "1-3 grams, min_df=2": {"ngram_range": (1, 3), "min_df": 2},
    "1-2 grams, min_df=3": {"ngram_range": (1, 2), "min_df": 3},
}


def vocabulary_sizes(train: pd.DataFrame) -> dict[str, int]:
    """Features (one weight each in the model, one string each in the artifact) per variant."""
    sizes = {}
    for name, params in VARIANTS.items():
        vectorizer = TfidfVectorizer(
            sublinear_tf=True, strip_accents="unicode", token_pattern=TOKENS_WITH_PUNCT, **params
        )
        sizes[name] = len(vectorizer.fit(train["text"]).vocabulary_)
    return sizes


def main() -> None:
    from sentiment_model.data import load_splits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, help="only this many training rows")
    args = parser.parse_args()
    train = load_splits().train
    if args.sample:
        train = train.sample(args.sample, random_state=0)
    for name, n in vocabulary_sizes(train).items():
        print(f"{name:30s} {n:>10,} features")


if __name__ == "__main__":
    main()

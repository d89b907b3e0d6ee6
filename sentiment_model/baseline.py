"""The keyword model the course starts from, kept as the baseline every real model must beat."""

from __future__ import annotations

import re

import numpy as np

POSITIVE_WORDS = frozenset(
    "good great excellent amazing wonderful best love loved fantastic brilliant enjoyed "
    "perfect beautiful fun superb favorite masterpiece".split()
)
NEGATIVE_WORDS = frozenset(
    "bad worst terrible awful boring poor waste horrible hate hated stupid dull "
    "disappointing mess lame annoying".split()
)
_WORD = re.compile(r"[a-z']+")


class DummySentimentModel:
    """Counts positive and negative keywords; ties go to positive.

    It has the same ``predict`` / ``predict_proba`` surface as a scikit-learn classifier so the
    evaluation code treats it like any other model.
    """

    classes_ = np.array([0, 1])

    def _score(self, text: str) -> float:
        words = _WORD.findall(text.lower())
        pos = sum(w in POSITIVE_WORDS for w in words)
        neg = sum(w in NEGATIVE_WORDS for w in words)
        # Laplace-smoothed share of positive keywords: 0.5 when none are found.
        return (pos + 1) / (pos + neg + 2)

    def predict_proba(self, texts) -> np.ndarray:
        """Two columns, P(negative) and P(positive), one row per text."""
        p = np.array([self._score(t) for t in texts], dtype=float)
        return np.column_stack([1 - p, p])

    def predict(self, texts) -> np.ndarray:
        """0 (negative) or 1 (positive) per text."""
        return (self.predict_proba(texts)[:, 1] >= 0.5).astype(int)

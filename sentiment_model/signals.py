"""Model signals: three numbers per text that say what the model was given and how sure it was.

A server can be green while its model is wrong: the input changed (another domain, another
language, garbage from a broken upstream) or a deploy changed the preprocessing. These signals
watch for that, per text, at almost no cost:

* ``tokens``: how many word tokens the vectorizer's tokenizer yields (after its lower-casing and
  accent stripping, before n-grams): the length of the text *as the model reads it*. For a
  vectorizer with ``ngram_range=(1, k)`` it follows from the number of analyzer terms the scorer
  already has (``(terms + 1) // 2`` for 1-2 grams: n tokens give n unigrams and n - 1 bigrams),
  so it costs nothing. Words, not terms, because a length in words is what a person can read
  off a text and what the buckets below are written in.
* ``unknown_ratio``: the share of the text's analyzer terms (unigrams and bigrams, each
  occurrence counted) that the vocabulary does not know, 0..1. Those terms are ignored by the
  model: the share is how much of the text it could not read. Bigrams count too, because the
  model reads them too (the metadata's ``reference`` gives their distribution on held-out
  reviews). **A text with no term at all** (empty, or only
  characters the tokenizer drops) has ``unknown_ratio = 1.0``: the model read nothing it knows,
  exactly like a text of unknown words, and answers its prior (the intercept alone).
* ``confidence``: the score the server returns, the probability of the predicted label,
  0.5..1 (calibrated: see sentiment_model/calibration.py).

The bucket bounds below are fixed, module-level, so a server's Prometheus histograms and the
reference stored in the artifact's metadata (:func:`reference`) use the same buckets. Bounds
are upper bounds, inclusive, as Prometheus' ``le``: a value ``v`` falls in the first bucket with
``v <= bound``; anything above the last bound falls in ``+Inf``. For ``confidence`` and
``unknown_ratio`` (never above 1.0) the ``+Inf`` bucket is empty by construction.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

CONFIDENCE_BUCKETS = (0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
TOKEN_BUCKETS = (5, 10, 20, 50, 100, 200, 500, 1000)
# Chosen from the validation texts (their fractions: the artifact's metadata.json, under
# reference.signals.unknown_ratio): 86 % of them have 5-20 % unknown terms, so
# 0.1-0.2 is cut in two (0.15); below 0.02 held only 1.5 % (short sentences whose every word is
# known) and joins the first bucket. 0.5-1.0 keeps about 0.2 % on purpose: held-out reviews
# almost never land there, garbage and other languages do.
UNKNOWN_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
BUCKETS = {
    "confidence": CONFIDENCE_BUCKETS,
    "tokens": TOKEN_BUCKETS,
    "unknown_ratio": UNKNOWN_BUCKETS,
}
EMPTY_UNKNOWN_RATIO = 1.0  # a text without any term: the model read nothing it knows


class Signals(NamedTuple):
    """One text's signals."""

    tokens: int
    unknown_ratio: float
    confidence: float


def tokens_from_terms(n_terms: int, ngram_range: tuple[int, int] = (1, 2)) -> int:
    """The number of word tokens that give ``n_terms`` analyzer terms with ``ngram_range``.

    ``n`` tokens give ``sum(max(0, n - k + 1) for k in 1..hi)`` terms, strictly increasing in
    ``n`` when n-grams start at 1, so the count is exact. Other ranges are refused.
    """
    low, high = ngram_range
    if low != 1:
        raise ValueError(f"ngram_range={ngram_range}: tokens follow from terms only from 1-grams")
    if high == 1 or n_terms == 0:
        return n_terms
    if high == 2:
        return (n_terms + 1) // 2
    n = -(-n_terms // high)  # at least ceil(terms / high) tokens
    while sum(max(0, n - k + 1) for k in range(1, high + 1)) < n_terms:
        n += 1
    return n


def unknown_ratio(n_terms: int, n_known: int) -> float:
    """Share of ``n_terms`` terms the vocabulary does not know; 1.0 for a text with no term."""
    if n_terms == 0:
        return EMPTY_UNKNOWN_RATIO
    return (n_terms - n_known) / n_terms


def confidence(p_positive: float) -> float:
    """The probability of the predicted label (the score the server returns), 0.5..1."""
    return p_positive if p_positive >= 0.5 else 1.0 - p_positive


def compute(vectorizer, texts: Sequence[str], p_positive: Iterable[float]) -> list[Signals]:
    """The signals of ``texts`` from a fitted vectorizer and the model's P(positive).

    The reference definition, for any scorer (the direct scorer computes the same numbers on
    its own hot path: ``DirectScorer.predict_with_signals``).
    """
    analyzer = vectorizer.build_analyzer()
    vocabulary = vectorizer.vocabulary_
    ngram_range = tuple(vectorizer.ngram_range)
    out = []
    for text, p in zip(texts, p_positive, strict=True):
        terms = analyzer(text)
        known = sum(1 for t in terms if t in vocabulary)
        out.append(
            Signals(
                tokens_from_terms(len(terms), ngram_range),
                unknown_ratio(len(terms), known),
                confidence(float(p)),
            )
        )
    return out


def bucket_index(value: float, bounds: Sequence[float]) -> int:
    """Index of the bucket ``value`` falls in: the first with ``value <= bound``; ``len(bounds)``
    (the ``+Inf`` bucket) above the last bound."""
    return bisect.bisect_left(bounds, value)


def histogram(values: Iterable[float], bounds: Sequence[float]) -> list[int]:
    """Texts per bucket (not cumulative): ``len(bounds) + 1`` counts, the last for ``+Inf``."""
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[bucket_index(v, bounds)] += 1
    return counts


def reference(
    signals: Sequence[Signals], labels: Sequence[str], true_labels: Sequence[str] | None = None
) -> dict:
    """The reference distributions of held-out texts, for the artifact's metadata.

    For each signal: the bucket upper bounds (``le``, with ``"+Inf"`` last), the number of texts
    per bucket and their **fraction per bucket, not cumulative** (they sum to 1; a Prometheus
    histogram's cumulative ``le`` counts are their running sums). Plus the mix of predicted
    labels (``labels``: what a server counts), of the true labels when given, and the number
    of texts.
    """
    n = len(signals)
    if n == 0:
        raise ValueError("a reference needs at least one text")
    out: dict = {"n": n, "signals": {}}
    for name, bounds in BUCKETS.items():
        counts = histogram((getattr(s, name) for s in signals), bounds)
        out["signals"][name] = {
            "le": [*bounds, "+Inf"],
            "counts": counts,
            "fractions": [c / n for c in counts],
        }
    out["label_mix"] = _mix(labels)
    if true_labels is not None:
        out["true_label_mix"] = _mix(true_labels)
    return out


def _mix(labels: Sequence[str]) -> dict[str, float]:
    counts = {label: 0 for label in sorted(set(labels))}
    for label in labels:
        counts[label] += 1
    return {label: c / len(labels) for label, c in counts.items()}


def summary(signals: Sequence[Signals]) -> dict:
    """Quantiles of each signal (for choosing bucket bounds)."""
    return {
        name: {
            f"p{q}": float(np.percentile([getattr(s, name) for s in signals], q))
            for q in (1, 5, 25, 50, 75, 95, 99)
        }
        for name in BUCKETS
    }

"""A direct scorer: the fitted TF-IDF + logistic regression pipeline as a few array look-ups.

scikit-learn's ``predict_proba`` on one short sentence spends most of its time on fixed costs
(input checks, building two sparse matrices, dispatch), not on arithmetic. For a linear model on
TF-IDF features the whole computation of one text is small::

    terms  = the vectorizer's own analyzer(text)            # unigrams and bigrams
    tf[j]  = how often vocabulary term j occurs in terms    # unknown terms are skipped
    w[j]   = (1 + log tf[j] if sublinear_tf else tf[j]) * idf_[j]
    w     /= ||w||_2                                         # norm='l2'
    p      = logistic(w . coef_[0, j] + intercept_)         # P(classes_[1])

:func:`build_direct_scorer` reads those arrays from the loaded pipeline (same artifact, no new
format) and refuses any pipeline with a parameter it does not reproduce
(:class:`UnsupportedPipelineError`). :func:`verify` compares it with scikit-learn on probe texts;
``SentimentModel.use_scorer`` does both at every load and keeps scikit-learn when either fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import expit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from sentiment_model.signals import Signals, tokens_from_terms, unknown_ratio

TOLERANCE = 1e-9  # largest difference in probability accepted against scikit-learn

# Texts that exercise the analyzer's corners: accents, case, punctuation kept by the token
# pattern, repeated terms (sublinear tf), unknown words only, empty, one long review.
PROBE_TEXTS = (
    "A wonderful, moving film with brilliant acting. I loved every minute of it!",
    "Terrible, boring and badly acted. The worst movie I have seen, a waste of time?",
    "Café crème, naïve façade: the acting is ÉPIQUE and the plot is so-so.",
    "good good good good bad bad",
    "zzqxv plorbnik",
    "",
    "!!! ??? 1 2 3",
    " ".join(["An honest, careful and surprisingly funny story about growing up."] * 40),
)


class UnsupportedPipelineError(ValueError):
    """The pipeline uses a step or parameter the direct scorer does not reproduce."""


class DirectScorer:
    """``predict_proba`` of a binary TF-IDF + LogisticRegression pipeline, text by text."""

    def __init__(
        self,
        analyzer: Callable[[str], list[str]],
        vocabulary: dict[str, int],
        idf: np.ndarray | None,
        coef: np.ndarray,
        intercept: float,
        *,
        sublinear_tf: bool,
        binary: bool,
        norm: str | None,
        ngram_range: tuple[int, int] = (1, 2),
    ) -> None:
        self.analyzer = analyzer
        self.vocabulary = vocabulary
        self.idf = idf
        self.coef = coef
        self.intercept = intercept
        self.sublinear_tf = sublinear_tf
        self.binary = binary
        self.norm = norm
        self.ngram_range = tuple(ngram_range)

    def decision(self, text: str) -> float:
        """The logistic regression's decision value for one text."""
        lookup = self.vocabulary.get
        counts: dict[int, int] = {}
        for term in self.analyzer(text):
            j = lookup(term)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        if not counts:
            return self.intercept  # no known term: an all-zero row
        n = len(counts)
        columns = np.fromiter(counts, dtype=np.intp, count=n)
        if self.binary:
            weights = np.ones(n)
        else:
            weights = np.fromiter(counts.values(), dtype=np.float64, count=n)
            if self.sublinear_tf:
                weights = np.log(weights) + 1.0
        if self.idf is not None:
            weights *= self.idf[columns]
        dot = float(weights @ self.coef[columns])
        if self.norm == "l2":
            dot /= math.sqrt(float(weights @ weights))
        return dot + self.intercept

    def _decision_and_counts(self, text: str) -> tuple[float, int, int]:
        """:meth:`decision` plus the number of analyzer terms and of known ones (same loop)."""
        lookup = self.vocabulary.get
        counts: dict[int, int] = {}
        terms = self.analyzer(text)
        for term in terms:
            j = lookup(term)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        if not counts:
            return self.intercept, len(terms), 0
        n = len(counts)
        columns = np.fromiter(counts, dtype=np.intp, count=n)
        known = np.fromiter(counts.values(), dtype=np.float64, count=n)
        if self.binary:
            weights = np.ones(n)
        elif self.sublinear_tf:
            weights = np.log(known) + 1.0
        else:
            weights = known.copy()
        if self.idf is not None:
            weights *= self.idf[columns]
        dot = float(weights @ self.coef[columns])
        if self.norm == "l2":
            dot /= math.sqrt(float(weights @ weights))
        return dot + self.intercept, len(terms), sum(counts.values())

    def predict_with_signals(self, texts: Sequence[str]) -> tuple[np.ndarray, list[Signals]]:
        """:meth:`predict_proba` and each text's :class:`~sentiment_model.signals.Signals`.

        The same probabilities as :meth:`predict_proba` (the same arithmetic, in the same
        order); the signals come from the terms and look-ups the scorer makes anyway. A separate
        method, so that ``predict_proba`` does not pay for them.
        """
        n = len(texts)
        decisions = np.empty(n, dtype=np.float64)
        sizes = []
        for i, text in enumerate(texts):
            decisions[i], n_terms, n_known = self._decision_and_counts(text)
            sizes.append((n_terms, n_known))
        positive = expit(decisions)
        ngram_range = self.ngram_range
        signals = [
            Signals(
                tokens_from_terms(n_terms, ngram_range),
                unknown_ratio(n_terms, n_known),
                p if p >= 0.5 else 1.0 - p,
            )
            for (n_terms, n_known), p in zip(sizes, positive.tolist(), strict=True)
        ]
        return np.column_stack([1.0 - positive, positive]), signals

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, one row per text, columns in ``classes_`` order."""
        decisions = np.fromiter((self.decision(t) for t in texts), np.float64, count=len(texts))
        positive = expit(decisions)
        return np.column_stack([1.0 - positive, positive])


def _check(condition: bool, problem: str) -> None:
    if not condition:
        raise UnsupportedPipelineError(problem)


def build_direct_scorer(pipeline) -> DirectScorer:
    """A :class:`DirectScorer` from a fitted ``Pipeline([TfidfVectorizer, LogisticRegression])``.

    Raises :class:`UnsupportedPipelineError` naming the first thing it cannot reproduce.
    """
    steps = getattr(pipeline, "steps", None)
    _check(steps is not None and len(steps) == 2, "not a two-step Pipeline")
    vectorizer, clf = steps[0][1], steps[1][1]
    _check(type(vectorizer) is TfidfVectorizer, f"first step is {type(vectorizer).__name__}")
    _check(type(clf) is LogisticRegression, f"second step is {type(clf).__name__}")
    _check(vectorizer.analyzer == "word", f"analyzer={vectorizer.analyzer!r}")
    _check(vectorizer.input == "content", f"input={vectorizer.input!r}")
    _check(vectorizer.dtype in (np.float64, float), f"dtype={vectorizer.dtype!r}")
    _check(vectorizer.norm in ("l2", None), f"norm={vectorizer.norm!r}")
    _check(len(clf.classes_) == 2, f"{len(clf.classes_)} classes (only binary is supported)")
    multi_class = getattr(clf, "multi_class", "deprecated")
    _check(
        multi_class in ("auto", "deprecated", "ovr", "warn"), f"multi_class={multi_class!r}"
    )  # binary 'multinomial' is a softmax of (-d, d): another formula
    _check(
        hasattr(vectorizer, "vocabulary_") and hasattr(clf, "coef_"), "the pipeline is not fitted"
    )
    vocabulary = vectorizer.vocabulary_
    coef = np.ascontiguousarray(clf.coef_[0], dtype=np.float64)
    _check(coef.shape == (len(vocabulary),), "coef_ and vocabulary_ differ in size")
    idf = np.ascontiguousarray(vectorizer.idf_, dtype=np.float64) if vectorizer.use_idf else None
    # The vectorizer's own analyzer: the same lower-casing, accent stripping, token pattern,
    # stop words and n-grams as in training, by construction.
    return DirectScorer(
        vectorizer.build_analyzer(),
        vocabulary,
        idf,
        coef,
        float(clf.intercept_[0]),
        sublinear_tf=bool(vectorizer.sublinear_tf),
        binary=bool(vectorizer.binary),
        norm=vectorizer.norm,
        ngram_range=tuple(vectorizer.ngram_range),
    )


def max_difference(scorer: DirectScorer, pipeline, texts: Sequence[str]) -> tuple[float, int]:
    """Largest probability difference from scikit-learn on ``texts``, and how many labels
    (argmax) differ."""
    ours = scorer.predict_proba(list(texts))
    theirs = pipeline.predict_proba(list(texts))
    labels_differ = int((ours.argmax(axis=1) != theirs.argmax(axis=1)).sum())
    return float(np.abs(ours - theirs).max()), labels_differ


def verify(scorer: DirectScorer, pipeline, texts: Sequence[str] = PROBE_TEXTS) -> str | None:
    """None when the scorer matches scikit-learn on ``texts``; otherwise what differs."""
    diff, labels_differ = max_difference(scorer, pipeline, texts)
    if labels_differ or not diff <= TOLERANCE:
        return (
            f"differs from scikit-learn on the probe texts: {labels_differ} label(s), "
            f"probability by up to {diff:.3g} (tolerance {TOLERANCE:g})"
        )
    return None

"""How close can the direct scorer get to the cost of the tokeniser alone? In-process timing.

    python -m loadtest.scorer_floor [--texts 200] [--rounds 5] [--out FILE.json]

For the test split's long reviews (and short sentences), per text, interleaved round by round
(one core, best of each round's repeats, then the median and range over rounds):

* ``analyzer``: the vectorizer's own analyzer alone (lower-casing, accents, the token pattern,
  bigrams): the floor, since every term must be produced;
* ``direct``: ``DirectScorer.decision`` as shipped (sentiment_model/scorer.py);
* ``counted in C``: the same arithmetic with the terms counted by ``collections.Counter`` over
  ``map(vocabulary.get, terms)`` (a C loop) instead of a Python loop (a candidate, here only);
* ``sklearn``: the pipeline's ``predict_proba`` on one text.

It also checks the candidate against scikit-learn on every text of the split (largest
difference in probability; the shipped scorer is held to 1e-9). Writes nothing unless --out.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections import Counter

import numpy as np
from scipy.special import expit

from sentiment_model import load_model
from sentiment_model.data import clean_text


def counted_in_c(scorer, text: str) -> float:
    """``DirectScorer.decision`` with the counting done by Counter over map (C loops)."""
    counts = Counter(map(scorer.vocabulary.get, scorer.analyzer(text)))
    counts.pop(None, None)
    if not counts:
        return scorer.intercept
    n = len(counts)
    columns = np.fromiter(counts, dtype=np.intp, count=n)
    if scorer.binary:
        weights = np.ones(n)
    else:
        weights = np.fromiter(counts.values(), dtype=np.float64, count=n)
        if scorer.sublinear_tf:
            weights = np.log(weights) + 1.0
    if scorer.idf is not None:
        weights *= scorer.idf[columns]
    dot = float(weights @ scorer.coef[columns])
    if scorer.norm == "l2":
        dot /= math.sqrt(float(weights @ weights))
    return dot + scorer.intercept


def per_text_us(fn, texts: list[str], repeats: int = 3) -> float:
    """Best of ``repeats`` passes over ``texts``: µs per text."""
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        for t in texts:
            fn(t)
        best = min(best, time.perf_counter() - started)
    return 1e6 * best / len(texts)


def measure(n_texts: int = 200, rounds: int = 5) -> dict:
    from loadtest.payloads import profile_texts

    model = load_model()
    model.use_scorer("direct")
    scorer = model._proba.__self__  # the DirectScorer whose predict_proba the model uses
    pipeline = model.pipeline
    out: dict = {}
    for profile in ("long", "short"):
        texts = [clean_text(t) for t in profile_texts(profile)]
        sample = texts[:n_texts]
        fns = {
            "analyzer": scorer.analyzer,
            "direct": scorer.decision,
            "counted in C": lambda t: counted_in_c(scorer, t),
            "sklearn": lambda t: pipeline.predict_proba([t]),
        }
        runs: dict[str, list[float]] = {name: [] for name in fns}
        for r in range(rounds):
            names = list(fns)[r % len(fns) :] + list(fns)[: r % len(fns)]
            for name in names:
                timed = sample if name != "sklearn" else sample[:50]
                runs[name].append(per_text_us(fns[name], timed))
        reference = pipeline.predict_proba(texts)[:, 1]  # P(classes_[1]), as the scorer's
        candidate = expit(np.array([counted_in_c(scorer, t) for t in texts]))
        shipped = expit(np.array([scorer.decision(t) for t in texts]))
        out[profile] = {
            "texts_timed": len(sample),
            "texts_checked": len(texts),
            "us_per_text": {
                name: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
                for name, v in runs.items()
            },
            "max_abs_diff_vs_sklearn": {
                "direct": float(np.max(np.abs(shipped - reference))),
                "counted in C": float(np.max(np.abs(candidate - reference))),
            },
        }
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--texts", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out")
    a = p.parse_args(argv)
    result = measure(a.texts, a.rounds)
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

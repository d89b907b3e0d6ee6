"""The model alone, in-process: scikit-learn's predict_proba against the direct scorer.

    python -m loadtest.scorers                 # 2 s per cell, 3 rounds, pinned to CPU 0

Texts per second (of CPU time) for short Rotten Tomatoes sentences and long IMDB reviews (the
test split's), one text per call and in batches of 32, for both scorers of the same loaded
model, in one run.
Rounds are interleaved so a busy neighbour slows both scorers alike; the table shows the median
and the range over the rounds, and the direct scorer's speed-up computed within each round.
"""

from __future__ import annotations

import argparse
import statistics
import time

from loadtest.payloads import PROFILES, profile_texts
from sentiment_model import load_model
from sentiment_model.data import clean_text
from sentiment_model.throughput import pinned_to_cpu


def measure(model, texts: list[str], batch_size: int, seconds: float) -> dict:
    """Predict consecutive batches of ``texts`` for about ``seconds`` of wall time.

    Texts per second of this thread's CPU time (``time.thread_time``): on a shared machine a
    neighbour that takes the core away stretches wall-clock time, not CPU time. One untimed
    batch warms the caches first.
    """
    model.predict(texts[:batch_size])
    done, i, cpu = 0, 0, 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        batch = [texts[(i + k) % len(texts)] for k in range(batch_size)]
        i = (i + batch_size) % len(texts)
        c0 = time.thread_time()
        model.predict(batch)
        cpu += time.thread_time() - c0
        done += batch_size
    return {"texts": done, "cpu_s": cpu, "texts_per_s": done / cpu}


def measure_scorers(
    rounds: int = 3, seconds: float = 2.0, batch_sizes=(1, 32), cpu: int | None = 0, log=print
) -> list[dict]:
    """One row per (round, profile, batch size, scorer): texts per second."""
    model = load_model()
    texts = {p: [clean_text(t) for t in profile_texts(p)] for p in PROFILES}
    rows = []
    with pinned_to_cpu(cpu):
        for r in range(rounds):
            for profile, items in texts.items():
                for batch in batch_sizes:
                    for scorer in ("sklearn", "direct"):
                        assert model.use_scorer(scorer) == scorer
                        m = measure(model, items, batch, seconds)
                        rows.append({"round": r, "profile": profile, "batch_size": batch} | m)
                        rows[-1]["scorer"] = scorer
                        log(f"round {r + 1} {profile:5s} batch {batch:2d} {scorer:7s} "
                            f"{m['texts_per_s']:9,.0f} texts/s")  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: texts/s per scorer (median, range) and the speed-up."""
    keys = list(dict.fromkeys((r["profile"], r["batch_size"]) for r in rows))
    out = [
        "| texts | batch | sklearn texts/s, median (range) | direct texts/s, median (range) "
        "| direct / sklearn, median (range) |",
        "|---|---|---|---|---|",
    ]
    for profile, batch in keys:
        cell = {}
        for scorer in ("sklearn", "direct"):
            cell[scorer] = {
                r["round"]: r["texts_per_s"]
                for r in rows
                if (r["profile"], r["batch_size"], r["scorer"]) == (profile, batch, scorer)
            }
        speedups = [cell["direct"][k] / cell["sklearn"][k] for k in cell["sklearn"]]

        def fmt(values):
            values = list(values)
            return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"

        out.append(
            f"| {profile} | {batch} | {fmt(cell['sklearn'].values())} "
            f"| {fmt(cell['direct'].values())} | {statistics.median(speedups):.1f}x "
            f"({min(speedups):.1f}-{max(speedups):.1f}) |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m loadtest.scorers``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0)
    a = p.parse_args(argv)
    if not 1 <= a.rounds <= 10 or not 0.2 <= a.seconds <= 20:
        p.error("keep it bounded: 1-10 rounds of 0.2-20 s")
    rows = measure_scorers(a.rounds, a.seconds)
    print("\nin-process, one core, texts per second of CPU time")
    print(table(rows))


if __name__ == "__main__":
    main()

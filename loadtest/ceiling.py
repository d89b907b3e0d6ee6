"""The ceiling: how fast the model alone predicts, in-process, with no HTTP in the way.

No server can beat the model it wraps, so every stage's throughput is reported as a fraction of
this figure, measured on the same texts, on one core, one text at a time and in batches of the
server's configured batch size.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd

from sentiment_model import SentimentModel


@contextmanager
def pinned_to_cpu(cpu: int | None) -> Iterator[None]:
    """Run the block on one CPU (like the server under test), where the OS allows it."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    if cpu not in before:
        yield
        return
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def measure(
    model: SentimentModel,
    texts: Sequence[str],
    batch_size: int,
    seconds: float = 2.0,
    max_texts: int = 200_000,
) -> dict[str, float]:
    """Predict consecutive batches of ``texts`` (cycling) for about ``seconds``.

    Returns texts per second (overall, and from the median batch time) and per-batch latency
    percentiles (ms). Bounded by both time and ``max_texts``; one untimed batch warms the
    caches first.
    """
    if batch_size < 1 or not texts:
        raise ValueError("batch_size must be >= 1 and texts non-empty")
    model.predict(list(texts[:batch_size]))
    durations: list[float] = []
    done, i = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds and done < max_texts:
        batch = [texts[(i + k) % len(texts)] for k in range(batch_size)]
        i = (i + batch_size) % len(texts)
        t0 = time.perf_counter()
        model.predict(batch)
        durations.append(time.perf_counter() - t0)
        done += batch_size
    elapsed = time.perf_counter() - start
    ms = np.asarray(durations) * 1000
    return {
        "batch_size": batch_size,
        "texts": done,
        "seconds": elapsed,
        "texts_per_s": done / sum(durations),
        # From the median batch time: barely moved by another process taking the CPU now and
        # then, so the figure the reports compare against.
        "texts_per_s_p50": batch_size / float(np.median(durations)),
        "batch_p50_ms": float(np.percentile(ms, 50)),
        "batch_p99_ms": float(np.percentile(ms, 99)),
    }


def measure_ceiling(
    model: SentimentModel,
    texts_by_profile: dict[str, Sequence[str]],
    batch_sizes: Iterable[int] = (1, 32),
    seconds: float = 2.0,
    cpu: int | None = 0,
) -> list[dict]:
    """One row per (profile, batch size): the model's in-process throughput on one core."""
    rows = []
    with pinned_to_cpu(cpu):
        for profile, texts in texts_by_profile.items():
            for b in batch_sizes:
                rows.append({"profile": profile} | measure(model, texts, b, seconds))
    return rows


def best_ceiling(ceiling: pd.DataFrame) -> pd.DataFrame:
    """One row per (profile, batch size): the fastest of the repeated measurements.

    The runner measures the ceiling at the start and at the end of a run; on a shared machine
    another process may take the CPU during one of them, and a limit is best estimated by the
    least disturbed measurement.
    """
    if ceiling is None or ceiling.empty:
        return pd.DataFrame() if ceiling is None else ceiling
    col = "texts_per_s_p50" if "texts_per_s_p50" in ceiling else "texts_per_s"
    best = ceiling.sort_values(col, ascending=False).drop_duplicates(["profile", "batch_size"])
    order = best["profile"].map({"short": 0, "long": 1}).fillna(2)
    return best.assign(_order=order).sort_values(["_order", "batch_size"]).drop(columns="_order")

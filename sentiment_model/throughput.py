"""How fast a predictor scores texts in-process, on one core: the measurement behind the
benchmark's model ceiling and the model experiments."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    model: Any,
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

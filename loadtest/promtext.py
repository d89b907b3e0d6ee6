"""Reading the Prometheus text a server's ``/metrics`` returns: histogram buckets, the part of a
histogram observed between two scrapes, and its mean."""

from __future__ import annotations

import math
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

BATCH_SIZE = "inference_batch_size"  # the final stage's batch-size histogram


def _samples(text: str | None, name: str):
    for family in text_string_to_metric_families(text or ""):
        if family.name == name:
            yield from family.samples


def histogram_buckets(text: str | None, name: str = BATCH_SIZE) -> dict[float, float]:
    """Cumulative bucket counts ``{le: count}`` of a Prometheus histogram (summed over labels)."""
    buckets: dict[float, float] = {}
    for sample in _samples(text, name):
        if sample.name == f"{name}_bucket":
            le = float(sample.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def histogram_delta(
    before: str | None, after: str | None, name: str = BATCH_SIZE
) -> list[tuple[float, float]]:
    """Per-bucket (not cumulative) counts observed between two scrapes: ``[(le, count)]``."""
    b0, b1 = histogram_buckets(before, name), histogram_buckets(after, name)
    rows, previous = [], 0.0
    for le in sorted(b1):
        cumulative = b1[le] - b0.get(le, 0.0)
        rows.append((le, cumulative - previous))
        previous = cumulative
    return rows


def _sum_and_count(text: str | None, name: str) -> tuple[float, float]:
    total = count = 0.0
    for sample in _samples(text, name):
        if sample.name == f"{name}_sum":
            total += sample.value
        elif sample.name == f"{name}_count":
            count += sample.value
    return total, count


def histogram_mean(before: str | None, after: str | None, name: str = BATCH_SIZE) -> float:
    """Exact mean of the observations between two scrapes (from ``_sum`` and ``_count``)."""
    (s0, c0), (s1, c1) = _sum_and_count(before, name), _sum_and_count(after, name)
    return (s1 - s0) / (c1 - c0) if c1 > c0 else float("nan")


def mean_from_buckets(rows: Sequence[tuple[float, float]]) -> float:
    """Approximate mean of a histogram from per-bucket counts (each at its upper bound)."""
    finite = [(le, n) for le, n in rows if math.isfinite(le)]
    total = sum(n for _, n in finite)
    return sum(le * n for le, n in finite) / total if total else float("nan")

"""Exact latency percentiles from a list of response times (locust rounds its own)."""

from __future__ import annotations

import numpy as np

PERCENTILES = (50, 90, 95, 99, 99.9)


def latency_summary(
    latencies: dict[str, list[float]], failures: dict[str, int] | None = None, elapsed_s: float = 0
) -> dict[str, dict[str, float]]:
    """Counts, rate and exact latency percentiles (ms) of successful requests, per route and
    over all routes (key ``"Aggregated"``)."""
    failures = failures or {}
    routes = {name: list(times) for name, times in latencies.items()}
    routes.update({name: routes.get(name, []) for name in failures})
    routes["Aggregated"] = [t for times in latencies.values() for t in times]
    failures = dict(failures, Aggregated=sum(failures.values()))
    out = {}
    for name, times in routes.items():
        n_fail = failures.get(name, 0)
        row = {"requests": len(times) + n_fail, "failures": n_fail, "elapsed_s": elapsed_s}
        row["rps"] = row["requests"] / elapsed_s if elapsed_s > 0 else float("nan")
        if times:
            arr = np.asarray(times, dtype=float)
            row |= {"mean": float(arr.mean()), "max": float(arr.max())}
            row |= {
                f"p{p:g}": float(v)
                for p, v in zip(PERCENTILES, np.percentile(arr, PERCENTILES), strict=True)
            }
        out[name] = row
    return out

"""Exercise 3 of lesson 5: what a full garbage collection costs with the model loaded, before
and after ``gc.freeze()``.

Run from the repository root (the default model, or a model directory as the argument):
    .venv/bin/python lessons/05_lifecycle/solutions/gc_freeze.py [MODEL_DIR]
"""

from __future__ import annotations

import gc
import sys
import time

from sentiment_model import load_model


def full_collection_ms(rounds: int = 5) -> float:
    """Median wall time of ``gc.collect()`` (a full collection), in milliseconds."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def measure(model_dir: str | None = None, rounds: int = 5) -> dict:
    """Load the model, then time a full collection before and after freezing."""
    gc.collect()
    baseline_objects = len(gc.get_objects())
    without_model_ms = full_collection_ms(rounds)  # the libraries alone (scikit-learn, numpy, ...)
    model = load_model(model_dir)
    try:
        tracked = len(gc.get_objects())
        before_ms = full_collection_ms(rounds)
        gc.freeze()  # everything alive now moves to a generation the collector never scans
        after_ms = full_collection_ms(rounds)
        return {
            "model_version": model.version,
            "objects_before_load": baseline_objects,
            "objects_with_model": tracked,
            "frozen": gc.get_freeze_count(),
            "objects_left_to_scan": len(gc.get_objects()),
            "full_collection_ms_without_model": round(without_model_ms, 2),
            "full_collection_ms_before": round(before_ms, 2),
            "full_collection_ms_after": round(after_ms, 2),
        }
    finally:
        gc.unfreeze()  # leave the process as it was (a test runs this in-process)


if __name__ == "__main__":
    for key, value in measure(sys.argv[1] if len(sys.argv) > 1 else None).items():
        print(f"{key}: {value}")

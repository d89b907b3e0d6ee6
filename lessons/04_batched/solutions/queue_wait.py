"""Exercise 2 of lesson 4: how long can a full queue make a text wait?

The worst case is a text at the back of a full queue: every batch ahead of it runs first.
With the cost of one full batch from a committed ceiling measurement:

    worst wait = (MAX_QUEUE / MAX_BATCH_SIZE) batches x (ms per full batch)

Run from the repository root:
    .venv/bin/python lessons/04_batched/solutions/queue_wait.py
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CEILING = ROOT / "benchmarks/results/20261127-030529/ceiling.csv"


def batch_ms(profile: str, batch_size: int = 32, scorer: str = "sklearn") -> float:
    """Median milliseconds of one model call on ``batch_size`` texts, at the start of the run."""
    with CEILING.open() as f:
        for row in csv.DictReader(f):
            if (row["when"], row["scorer"], row["profile"], row["batch_size"]) == (
                "start",
                scorer,
                profile,
                str(batch_size),
            ):
                return float(row["batch_p50_ms"])
    raise LookupError(f"no ceiling row for {profile=} {batch_size=} {scorer=}")


def worst_wait_ms(max_queue: int, max_batch_size: int, ms_per_batch: float) -> float:
    """The wait of the last text of a full queue: every full batch ahead of it runs first."""
    return math.ceil(max_queue / max_batch_size) * ms_per_batch


def largest_queue(target_ms: float, max_batch_size: int, ms_per_batch: float) -> int:
    """The largest queue (whole batches) whose worst wait stays within ``target_ms``."""
    return math.floor(target_ms / ms_per_batch) * max_batch_size


def main() -> dict[str, float]:
    answers: dict[str, float] = {}
    for profile in ("short", "long"):
        ms = batch_ms(profile)
        answers[f"{profile}_batch_ms"] = ms
        answers[f"{profile}_worst_wait_ms"] = worst_wait_ms(256, 32, ms)
        print(
            f"{profile:5}: {ms:5.2f} ms per batch of 32; a full default queue (256 texts) "
            f"waits at worst {answers[f'{profile}_worst_wait_ms']:5.1f} ms"
        )
    answers["largest_queue_long_500ms"] = largest_queue(500, 32, answers["long_batch_ms"])
    print(
        "largest MAX_QUEUE with a worst wait under 500 ms on long texts: "
        f"{answers['largest_queue_long_500ms']:.0f} texts"
    )
    return answers


if __name__ == "__main__":
    main()

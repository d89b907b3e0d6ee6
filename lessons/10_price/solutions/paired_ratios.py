"""Lesson 10, exercise 2: a ratio of two servers over rounds, two ways.

    .venv/bin/python lessons/10_price/solutions/paired_ratios.py [RUN_DIR] [STAGE] [OTHER]

Reads ``headline-rounds.csv`` of a run of ``python -m loadtest.headline`` and compares, per
profile at the largest number of connections, ``STAGE``'s share of ``OTHER``'s one-core
throughput (``OTHER``'s server CPU per request / ``STAGE``'s) two ways: the ratio of the two
medians, and the median of the round-by-round ratios (what ``headline.md`` and
``headline-summary.csv`` report), with the lowest and highest round.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[3]
RUN = ROOT / "benchmarks" / "results" / "price" / "20261204-050626"


def ratios(run: Path = RUN, stage: str = "fast", other: str = "bare") -> pd.DataFrame:
    """Per profile: ratio of medians, median of per-round ratios, lowest and highest round."""
    rows = pd.read_csv(Path(run) / "headline-rounds.csv")
    out = []
    for profile, part in rows.groupby("profile", sort=False):
        part = part[part["users"] == part["users"].max()]
        mine = part[part["stage"] == stage].set_index("round")["cpu_us"]
        theirs = part[part["stage"] == other].set_index("round")["cpu_us"]
        both = mine.index.intersection(theirs.index)
        per_round = [theirs[r] / mine[r] for r in both]
        out.append(
            {
                "profile": profile,
                "users": int(part["users"].max()),
                "ratio_of_medians": theirs.median() / mine.median(),
                "median_of_ratios": statistics.median(per_round),
                "lowest": min(per_round),
                "highest": max(per_round),
                "rounds": len(per_round),
            }
        )
    return pd.DataFrame(out)


if __name__ == "__main__":
    args = sys.argv[1:]
    run = Path(args[0]) if args else RUN
    print(ratios(run, *args[1:3]).round(3).to_string(index=False))

"""Lesson 7, exercise 1: the final stage against the naive one at every step of the ladder.

    .venv/bin/python lessons/07_fast/solutions/ladder_ratios.py [RUN_DIR]

Reads the reference run's summary.csv (one row per locust step) and prints, per profile and
number of users, the two stages' requests per second and their ratio. In run 20261127-030529
the final stage is named ``batched`` (the stage names of the course map came later).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[3]
RUN = ROOT / "benchmarks" / "results" / "20261127-030529"
FINAL = "batched"  # the final stage's name in that run


def ratios(run_dir: Path = RUN) -> pd.DataFrame:
    """Columns profile, users, naive, final (req/s) and ratio = final / naive."""
    summary = pd.read_csv(run_dir / "summary.csv")
    ladder = summary[summary["kind"] == "ladder"]
    table = ladder.pivot_table(index=["profile", "users"], columns="stage", values="rps")
    out = table[["naive", FINAL]].rename(columns={FINAL: "final"})
    out["ratio"] = out["final"] / out["naive"]
    return out.reset_index()


if __name__ == "__main__":
    print(ratios(Path(sys.argv[1]) if len(sys.argv) > 1 else RUN).round(2).to_string(index=False))

"""Lesson 09, section 5 and exercise 5: size a deployment from the CPU cost of a request.

    python lessons/09_scale_out/solutions/sizing.py            # short and long texts
    python lessons/09_scale_out/solutions/sizing.py --target 20000 --utilization 0.6

The CPU cost comes from the committed runs of ``python -m loadtest.workers`` (two workers per
pod, as the Deployment runs); the rest is the lesson's arithmetic, nothing measured here.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[3]
RUNS = {  # the runs lesson 09 quotes (benchmarks/results/workers/README.md)
    "short": ROOT / "benchmarks" / "results" / "workers" / "20261127T033218Z.csv",
    "long": ROOT / "benchmarks" / "results" / "workers" / "20261127T033256Z.csv",
}


def cpu_ms_per_request(profile: str, workers: int = 2) -> float:
    """Server CPU milliseconds per request, measured with ``workers`` workers."""
    runs = pd.read_csv(RUNS[profile])
    [value] = runs.loc[runs.workers == workers, "cpu_ms_per_req"]
    return float(value)


def size(
    cpu_ms: float,
    target_rps: float,
    utilization: float = 0.65,
    cores_per_replica: int = 2,
    spare_replicas: int = 1,
) -> dict:
    """Requests/s per core (busy and planned), per replica, and the replicas to run."""
    per_core = 1000 / cpu_ms
    planned = per_core * utilization
    per_replica = planned * cores_per_replica
    replicas = math.ceil(target_rps / per_replica) + spare_replicas
    return {
        "per_core": per_core,
        "planned_per_core": planned,
        "per_replica": per_replica,
        "replicas": replicas,
        "cores": replicas * cores_per_replica,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=10_000, help="requests/s to serve")
    parser.add_argument("--utilization", type=float, default=0.65, help="planned CPU share")
    args = parser.parse_args()
    for profile in RUNS:
        cpu = cpu_ms_per_request(profile)
        s = size(cpu, args.target, args.utilization)
        print(
            f"{profile:5s}: {cpu:.3f} ms/request -> {s['per_core']:,.0f} req/s per busy core, "
            f"{s['planned_per_core']:,.0f} planned, {s['per_replica']:,.0f} per replica -> "
            f"{s['replicas']} replicas ({s['cores']} cores) for {args.target:,.0f} req/s"
        )


if __name__ == "__main__":
    main()

"""Lesson 11, exercises 2 and 3: how noisy PSI is on few texts, and how little garbage it takes.

    python lessons/11_monitoring/solutions/psi_noise.py

Exercise 2: draw ``n`` texts from the reference itself (no drift at all), many times, and look
at the PSI the rules would compute. Exercise 3: mix a share ``f`` of garbage (every text in the
last ``unknown_ratio`` bucket, 0.5-1.0) into reference traffic and compute the PSI exactly.
Both use the committed reference (monitoring/tests/reference_metadata.json) and the rules' floor.
"""

from __future__ import annotations

import numpy as np

from monitoring.drift_rules import EPSILON, REFERENCE_FILE, load_reference


def psi(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """PSI as drift.yml computes it, both shares floored at EPSILON; ``p`` may be 2-D (rows)."""
    p, q = np.maximum(p, EPSILON), np.maximum(q, EPSILON)
    return ((p - q) * np.log(p / q)).sum(axis=-1)


def noise(signal: str, n: int, draws: int = 20_000, seed: int = 0) -> dict[str, float]:
    """PSI of ``n`` texts drawn from the reference: mean, 99th percentile, P(PSI > 0.25)."""
    _, reference = load_reference(REFERENCE_FILE)
    q = np.asarray(reference["signals"][signal]["fractions"])
    q = q / q.sum()
    counts = np.random.default_rng(seed).multinomial(n, q, size=draws)
    values = psi(counts / n, q)
    return {
        "mean": float(values.mean()),
        "p99": float(np.percentile(values, 99)),
        "share over 0.25": float((values > 0.25).mean()),
    }


def garbage_psi(share: float) -> float:
    """PSI of unknown_ratio when ``share`` of the texts are garbage (all in the 0.5-1.0 bucket)."""
    _, reference = load_reference(REFERENCE_FILE)
    q = np.asarray(reference["signals"]["unknown_ratio"]["fractions"])
    p = (1 - share) * q
    p[list(reference["signals"]["unknown_ratio"]["le"]).index(1.0)] += share
    return float(psi(p, q))


if __name__ == "__main__":
    print("Exercise 2: PSI of n texts drawn from the reference itself")
    for signal in ("tokens", "unknown_ratio", "confidence"):
        for n in (100, 200, 800):
            r = noise(signal, n)
            print(
                f"  {signal:14s} n={n:4d}  mean {r['mean']:.3f}  p99 {r['p99']:.3f}  "
                f"over 0.25: {r['share over 0.25']:.2%}"
            )
    print("Exercise 3: PSI of unknown_ratio with a share of garbage")
    for share in (0.03, 0.05, 0.06, 0.07, 0.08, 0.10):
        print(f"  {share:.0%} garbage: PSI {garbage_psi(share):.3f}")

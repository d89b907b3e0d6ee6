"""What the model signals cost the direct scorer, per text, in-process.

``python -m sentiment_model.experiments.signals_cost`` loads the default model (models/LATEST),
builds its direct scorer and times, one text per call as a server without batching scores them,
``predict_proba([text])`` against ``predict_with_signals([text])`` on short texts (the Rotten
Tomatoes sentences of the test split) and on long ones (IMDB reviews). For every text, short
bursts of the two calls alternate and the best burst of each is kept: that is the time of the
work itself, since a neighbour taking the CPU away only ever makes a burst slower. The price of
the signals is the median, over texts, of (best with signals - best without). The machine's load
average is recorded with the result.

Results go to ``benchmarks/results/signals/signals_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from sentiment_model.artifact import load_model
from sentiment_model.data import load_splits
from sentiment_model.scorer import build_direct_scorer

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "signals"


def _paired(plain, with_signals, texts: list[str], rounds: int) -> tuple[list, list, list]:
    """Per text: the best of ``rounds`` short bursts of each call (one text per call), the two
    interleaved, and the difference of the two bests. The best of a few bursts is the time of
    the work itself; a neighbour taking the CPU away only makes some bursts slower."""
    clock = time.perf_counter_ns
    burst = 10
    plain_us, signals_us, diffs = [], [], []
    for text in texts:
        batch = [text]
        best = {plain: float("inf"), with_signals: float("inf")}
        for r in range(rounds):
            for call in (plain, with_signals) if r % 2 == 0 else (with_signals, plain):
                t0 = clock()
                for _ in range(burst):
                    call(batch)
                best[call] = min(best[call], (clock() - t0) / burst / 1e3)
        plain_us.append(best[plain])
        signals_us.append(best[with_signals])
        diffs.append(best[with_signals] - best[plain])
    return plain_us, signals_us, diffs


def measure(n_texts: int = 400, rounds: int = 6) -> dict:
    """Median over texts of each call's best time, and of the difference of the two bests."""
    model = load_model()
    direct = build_direct_scorer(model.pipeline)
    test = load_splits().test
    profiles = {
        "short": test.loc[test["source"] == "rotten_tomatoes", "text"].head(n_texts).tolist(),
        "long": test.loc[test["source"] == "imdb", "text"].head(n_texts // 4).tolist(),
    }
    out = {}
    for name, texts in profiles.items():
        _paired(direct.predict_proba, direct.predict_with_signals, texts, 1)  # warm-up
        plain, with_signals, diffs = _paired(
            direct.predict_proba, direct.predict_with_signals, texts, rounds
        )
        out[name] = {
            "texts": len(texts),
            "rounds": rounds,
            "predict_proba_us": round(statistics.median(plain), 2),
            "predict_with_signals_us": round(statistics.median(with_signals), 2),
            "signals_us": round(statistics.median(diffs), 2),
            "signals_us_quartiles": [round(q, 2) for q in statistics.quantiles(diffs, n=4)],
        }
    return {
        "command": "python -m sentiment_model.experiments.signals_cost",
        "model_version": model.version,
        "one_text_per_call": True,
        "statistic": "per text the best of `rounds` bursts of 10 calls of each, interleaved; "
        "the median over texts of those bests and of their difference",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
        "profiles": out,
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "signals_cost.json")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    record = measure(rounds=args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for name, r in record["profiles"].items():
        print(
            f"{name:5s} predict_proba {r['predict_proba_us']:8.1f} us  with signals "
            f"{r['predict_with_signals_us']:8.1f} us  -> signals {r['signals_us']:+.1f} us per text"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

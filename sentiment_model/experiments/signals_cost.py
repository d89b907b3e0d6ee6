"""What the model signals cost the direct scorer, per text, in-process.

``python -m sentiment_model.experiments.signals_cost`` loads the default model (models/LATEST),
builds its direct scorer and times, one text per call as a server without batching scores them,
``predict_proba([text])`` against ``predict_with_signals([text])`` on short texts (the Rotten
Tomatoes sentences of the test split) and on long ones (the IMDB reviews). The two run
interleaved, several rounds, and the median round is kept, so a busy neighbour on a shared
machine hurts both alike. The difference per text is the price of the signals.

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


def _per_text_us(call, texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        call([text])
    return (time.perf_counter() - start) / len(texts) * 1e6


def measure(n_texts: int = 400, rounds: int = 7) -> dict:
    """Median microseconds per text of both calls, on short and long texts."""
    model = load_model()
    direct = build_direct_scorer(model.pipeline)
    test = load_splits().test
    profiles = {
        "short": test.loc[test["source"] == "rotten_tomatoes", "text"].head(n_texts).tolist(),
        "long": test.loc[test["source"] == "imdb", "text"].head(n_texts // 4).tolist(),
    }
    out = {}
    for name, texts in profiles.items():
        _per_text_us(direct.predict_with_signals, texts)  # warm-up
        plain, with_signals = [], []
        for _ in range(rounds):
            plain.append(_per_text_us(direct.predict_proba, texts))
            with_signals.append(_per_text_us(direct.predict_with_signals, texts))
        p, s = statistics.median(plain), statistics.median(with_signals)
        diffs = sorted(b - a for a, b in zip(plain, with_signals, strict=True))
        out[name] = {
            "texts": len(texts),
            "rounds": rounds,
            "predict_proba_us": round(p, 2),
            "predict_with_signals_us": round(s, 2),
            "signals_us": round(s - p, 2),
            "signals_us_per_round": [round(d, 2) for d in diffs],
        }
    return {
        "command": "python -m sentiment_model.experiments.signals_cost",
        "model_version": model.version,
        "one_text_per_call": True,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "profiles": out,
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "signals_cost.json")
    parser.add_argument("--rounds", type=int, default=7)
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

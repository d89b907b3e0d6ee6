"""What model monitoring costs stage 11 per request, in-process: the signals and the feedback store.

Times, one short text per call as a server sees it at low load, what the fast stage does per
/predict request in its model thread and route (clean, ``model.predict``, count the label)
against what the monitored stage does (clean, ``model.predict_with_signals``, observe the three
histograms, count the label, remember the prediction for POST /feedback). The two run
interleaved, several rounds; the price of monitoring per request is the median of the rounds'
differences (monitored minus fast), so a busy neighbour on a shared machine hurts both alike.
The parts alone (the three histogram updates of one text, and per text of a batch of 32;
remembering one prediction) are timed with ``timeit`` (best of 7), like loadtest/text_cost.py.
Every time is the thread's CPU time (``time.thread_time``): the work itself, not the moments a
busy neighbour held the core.

Both in one process and as one of several workers (``PROMETHEUS_MULTIPROC_DIR`` set: every
metric update writes a memory-mapped file), each in its own interpreter, since
prometheus-client chooses its value class at import. Short texts are the Rotten Tomatoes
sentences of the test split; the default model (models/LATEST) with the direct scorer.

    python -m loadtest.monitoring_cost     # writes benchmarks/results/signals/monitoring_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "signals" / "monitoring_cost.json"
COMMAND = "python -m loadtest.monitoring_cost"


# CPU time of this thread, not wall time: on a shared machine a neighbour's process takes the
# core away now and then, which wall time counts and CPU time does not.
CLOCK = time.thread_time


def _per_request_us(call, texts: list[str]) -> float:
    start = CLOCK()
    for text in texts:
        call(text)
    return (CLOCK() - start) / len(texts) * 1e6


def measure(n_texts: int = 400, rounds: int = 15) -> dict:
    """Microseconds per request of both paths (median of interleaved rounds) and of the parts."""
    from sentiment_model import load_model
    from sentiment_model.data import clean_text, load_splits
    from sentiment_model.signals import Signals
    from serving.asgi import new_request_id
    from serving.metrics import Metrics
    from serving.monitoring import FeedbackStore, ModelMonitor

    model = load_model(None)
    model.use_scorer("direct")
    test = load_splits().test
    texts = test.loc[test["source"] == "rotten_tomatoes", "text"].head(n_texts).tolist()
    metrics = Metrics()
    monitor = ModelMonitor(metrics.registry, FeedbackStore(100_000, 3600))
    ids = iter([new_request_id() for _ in range(n_texts * (rounds + 1))])  # the middleware's

    def fast(text: str) -> None:
        [prediction] = model.predict([clean_text(text)])
        metrics.count_labels([prediction.label])

    def monitored(text: str) -> None:
        predictions, signals = model.predict_with_signals([clean_text(text)])
        monitor.observe(signals)
        labels = [p.label for p in predictions]
        metrics.count_labels(labels)
        monitor.remember(next(ids), labels)

    _per_request_us(fast, texts)  # warm-up
    _per_request_us(monitored, texts)
    plain, with_monitoring = [], []
    for _ in range(rounds):
        plain.append(_per_request_us(fast, texts))
        with_monitoring.append(_per_request_us(monitored, texts))
    diffs = sorted(b - a for a, b in zip(plain, with_monitoring, strict=True))
    one = [Signals(12, 0.1, 0.93)]
    observe_us = (
        min(timeit.repeat(lambda: monitor.observe(one), CLOCK, number=2000, repeat=7)) / 2000
    )
    # Under load the batcher hands the model several texts at once: the histograms are updated
    # once per batch (serving.monitoring.observe_all). Per text, for a batch of 32 real ones:
    _, batch = model.predict_with_signals([clean_text(t) for t in texts[:32]])
    batch_us = min(timeit.repeat(lambda: monitor.observe(batch), CLOCK, number=200, repeat=7)) / 200
    store = FeedbackStore(100_000, 3600)
    more_ids = [new_request_id() for _ in range(7 * 2000)]
    it = iter(more_ids)
    remember_us = (
        min(
            timeit.repeat(
                lambda: store.remember(next(it), ["positive"]), CLOCK, number=2000, repeat=7
            )
        )
        / 2000
    )
    return {
        "texts": len(texts),
        "rounds": rounds,
        "fast_us": round(statistics.median(plain), 2),
        "monitored_us": round(statistics.median(with_monitoring), 2),
        # Paired: a round's noise hits both paths of that round alike.
        "monitoring_us": round(statistics.median(diffs), 2),
        "monitoring_us_per_round": [round(d, 2) for d in diffs],
        "observe_signals_us": round(observe_us * 1e6, 2),
        "observe_signals_us_per_text_batch32": round(batch_us / len(batch) * 1e6, 2),
        "remember_prediction_us": round(remember_us * 1e6, 2),
        "model_version": model.version,
    }


def _in_child(multiprocess: bool, rounds: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with tempfile.TemporaryDirectory(prefix="monitoring-cost-") as directory:
        if multiprocess:
            env["PROMETHEUS_MULTIPROC_DIR"] = directory
        out = subprocess.run(
            [sys.executable, "-m", "loadtest.monitoring_cost", "--child", "--rounds", str(rounds)],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one mode, in this interpreter: print the result as one JSON line
        print(json.dumps(measure(rounds=args.rounds)))
        return
    modes = {"one_process": False, "several_workers": True}
    record = {
        "command": COMMAND,
        "profile": "short (Rotten Tomatoes test sentences), one text per request",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "clock": "time.thread_time (CPU time of the measuring thread, microseconds)",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "modes": {name: _in_child(mp, args.rounds) for name, mp in modes.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for name, r in record["modes"].items():
        print(
            f"{name:16s} fast {r['fast_us']:7.1f} us  monitored {r['monitored_us']:7.1f} us  "
            f"-> {r['monitoring_us']:+.1f} us per request (observe {r['observe_signals_us']} us, "
            f"batch of 32: {r['observe_signals_us_per_text_batch32']} us per text; "
            f"remember {r['remember_prediction_us']} us)"
        )
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""What one access-log line costs the process, not only the event loop. In-process timing.

    python -m loadtest.log_cost [--lines 20000] [--rounds 5] [--out FILE.json]

The final stage's logger (``configure_logging(background=True)``: the caller queues the record,
a writer thread formats and writes every 50 ms) receives ``--lines`` access-log records through
``serving.asgi.log_request``, then everything is written out. Per line, median and range over
the rounds:

* ``caller_us``: the calling thread's CPU (``time.thread_time``): what "timed in-process" saw;
* ``process_us``: the whole process's CPU (``time.process_time``: the writer thread formatting
  and writing included, and the collector);
* ``writer_us``: the difference, the part the writer thread adds on the same core;
* ``caller_us_old_path``: the caller's CPU with ``logger.log`` (the stack walk for the calling
  line included), the path before stage 10's cut;
* ``gc_collections``: collections (gen 0/1/2) per 1,000 lines while records wait in the queue.

Stdout is replaced by an in-memory buffer; the file goes to a temporary directory.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from serving.asgi import log_request
from serving.logs import configure_logging, flush_logs


def fields() -> dict:
    return {
        "request_id": "2b0c1a8e-7a4f-4c1e-9d1e-0a7b6c5d4e3f",
        "method": "POST",
        "path": "/predict",
        "route": "/predict",
        "latency_ms": 1.234,
        "model_version": "20261101-000000",
        "batch_size": 12,
        "texts": 1,
        "text_chars": 80,
    }


def old_path(logger: logging.Logger) -> None:
    f = fields()
    f["status"] = 200
    logger.log(logging.INFO, "request", extra=f)


def one_round(logger: logging.Logger, lines: int, old: bool) -> dict:
    flush_logs(logger.name)
    counts0 = [s["collections"] for s in gc.get_stats()]
    p0, t0 = time.process_time(), time.thread_time()
    for _ in range(lines):
        if old:
            old_path(logger)
        else:
            log_request(logger, 200, fields())
    t1 = time.thread_time()
    time.sleep(0.12)  # the writer's own turns (every 50 ms)
    flush_logs(logger.name)
    p1 = time.process_time()
    counts1 = [s["collections"] for s in gc.get_stats()]
    return {
        "caller_us": 1e6 * (t1 - t0) / lines,
        "process_us": 1e6 * (p1 - p0) / lines,
        "gc_per_1000": [1000 * (b - a) / lines for a, b in zip(counts0, counts1, strict=True)],
    }


def measure(lines: int = 20000, rounds: int = 5) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        logger = configure_logging(Path(tmp) / "r.log", background=True, name="log-cost")
        for handler in logger.handlers:
            for target in getattr(handler, "targets", []):
                if not hasattr(target, "baseFilename"):
                    target.stream = io.StringIO()  # stdout: kept in memory
        runs: dict[str, list] = {"new": [], "old": []}
        for r in range(rounds):
            for kind in ("new", "old") if r % 2 == 0 else ("old", "new"):
                runs[kind].append(one_round(logger, lines, kind == "old"))
                for handler in logger.handlers:
                    for target in getattr(handler, "targets", []):
                        if isinstance(getattr(target, "stream", None), io.StringIO):
                            target.stream = io.StringIO()
        for handler in list(logger.handlers):
            handler.close()

    def mr(values):
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    new, old = runs["new"], runs["old"]
    return {
        "lines": lines,
        "rounds": rounds,
        "caller_us": mr([x["caller_us"] for x in new]),
        "process_us": mr([x["process_us"] for x in new]),
        "writer_us": mr([x["process_us"] - x["caller_us"] for x in new]),
        "caller_us_old_path": mr([x["caller_us"] for x in old]),
        "process_us_old_path": mr([x["process_us"] for x in old]),
        "gc_per_1000_lines": [
            statistics.median(x["gc_per_1000"][g] for x in new) for g in range(3)
        ],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out")
    a = p.parse_args(argv)
    text = json.dumps(measure(a.lines, a.rounds), indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

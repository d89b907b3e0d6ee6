"""Benchmark runner: every stage under the same locust load, results in one tidy table.

``python -m loadtest.bench`` (``make bench``) runs, for each chosen server, a real uvicorn
process (one worker, pinned to CPU 0 with ``taskset`` where available) and headless locust
(pinned to CPU 1), then writes the report and the plots. A full run takes about 15 minutes;
``--quick`` about 3. Examples::

    python -m loadtest.bench                                  # everything, the README's run
    python -m loadtest.bench --quick --stages naive fast --no-layers
    python -m loadtest.bench --users 1 16 64 --duration 5 --no-sweep
    python -m loadtest.bench --stages naive fast bare --rounds 3   # medians and ranges
    python -m loadtest.bench --report benchmarks/results/<run-id>   # redo a run's report

What runs, in order, is described in :mod:`loadtest.runner`; the files a run writes in
``benchmarks/README.md``. The pieces live in their own modules: :mod:`loadtest.launcher`
(server processes), :mod:`loadtest.steps` (locust steps), :mod:`loadtest.promtext`
(``/metrics`` parsing), :mod:`loadtest.report` (targets, tables), :mod:`loadtest.plots`.
The names a notebook uses are importable from here too::

    from loadtest import bench, plots
    with bench.StageServer("naive") as server:          # starts uvicorn, waits until ready
        df = bench.run_ladder(server, "short", users=[1, 8, 32], duration=3)
    plots.throughput_vs_users(df)
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path

from loadtest.config import PROFILES, RESULTS_ROOT, BenchConfig, final_stage_settings
from loadtest.launcher import ROOT, StageServer
from loadtest.promtext import histogram_delta
from loadtest.report import evaluate_targets, headline_table
from loadtest.runner import SERVERS, report, run, run_wait_sweep
from loadtest.steps import run_ladder
from serving.stages import STAGES

# What the notebooks and tests use as ``bench.<name>``, besides this module's own functions.
__all__ = [
    "RESULTS_ROOT", "ROOT", "STAGES", "BenchConfig", "StageServer", "evaluate_targets",
    "final_stage_settings", "headline_table", "histogram_delta", "main", "parse_args", "run",
    "run_ladder", "run_wait_sweep",
]  # fmt: skip

BENCH_STAGES = [s for s in SERVERS if s != "reference"]  # the reference has its own switch


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    """Command-line flags -> :class:`BenchConfig` (``--quick`` changes the defaults)."""
    p = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a few seconds per step, fewer steps")
    p.add_argument("--stages", nargs="+", choices=BENCH_STAGES)
    p.add_argument("--profiles", nargs="+", choices=list(PROFILES))
    p.add_argument("--users", nargs="+", type=int, help="the ladder of user counts")
    p.add_argument("--duration", type=float, help="seconds per step")
    p.add_argument("--mixed-users", type=int, help="users of the /predict/batch mixed step")
    p.add_argument("--half-load-users", type=int, help="paced users of the half-load step")
    p.add_argument("--sweep-ms", nargs="+", type=float, help="INFERENCE_MAX_BATCH_WAIT_MS values")
    p.add_argument("--sweep-users", nargs="+", type=int, help="users of each sweep step")
    p.add_argument("--sweep-profiles", nargs="+", choices=list(PROFILES))
    p.add_argument("--layers", nargs="+", help="INFERENCE_BENCH_OFF values ('' = all on)")
    p.add_argument("--layers-users", type=int, help="users of each layers step")
    p.add_argument("--ceiling-seconds", type=float, help="time per ceiling measurement")
    p.add_argument("--direct-scorer", help="module:factory of the direct scorer (ceiling)")
    p.add_argument("--model-dir", help="model artifact for every stage (INFERENCE_MODEL_DIR)")
    p.add_argument("--plots-dir", help="where PNGs go (default benchmarks/plots, quick: run dir)")
    p.add_argument("--out", help="results root directory (default benchmarks/results)")
    p.add_argument("--rounds", type=int, help="interleaved rounds of the stages' ladders "
                   "(medians and ranges in rounds.md)")  # fmt: skip
    p.add_argument("--labels-stages", nargs="+", choices=BENCH_STAGES,
                   help="stages checked like the final stage on the whole test split")  # fmt: skip
    skips = {  # --no-NAME: what it skips, and the config value that skips it
        "mixed": ("the mixed step", "mixed_users", None),
        "half-load": ("the half-load step", "half_load_users", None),
        "sweep": ("the wait sweep", "sweep_ms", []),
        "layers": ("the layers section", "layers", []),
        "reference": ("the FastAPI reference server", "reference", False),
        "ceiling": ("the in-process ceiling", "ceiling_seconds", 0.0),
        "labels": ("the labels check", "check_labels", False),
    }
    for name, (what, _, _) in skips.items():
        p.add_argument(f"--no-{name}", action="store_true", help=f"skip {what}")
    p.epilog = "python -m loadtest.bench --report RUN_DIR [PLOTS_DIR]: redo a run's report"
    a = p.parse_args(argv)
    names = ["stages", "profiles", "users", "duration", "mixed_users", "half_load_users",
             "sweep_ms", "sweep_users", "sweep_profiles", "layers", "layers_users",
             "ceiling_seconds", "direct_scorer", "model_dir", "plots_dir", "rounds",
             "labels_stages"]  # fmt: skip
    overrides = {k: getattr(a, k) for k in names if getattr(a, k) is not None}
    if a.out is not None:
        overrides["out_root"] = a.out
    for name, (_, key, value) in skips.items():
        if getattr(a, f"no_{name.replace('-', '_')}"):
            overrides[key] = value
    if "profiles" in overrides and "sweep_profiles" not in overrides:
        overrides["sweep_profiles"] = overrides["profiles"]
    config = BenchConfig.quick_config(**overrides) if a.quick else BenchConfig(**overrides)
    if any(u < 1 for u in config.users) or config.duration <= 0:
        p.error("--users must be >= 1 and --duration > 0")
    if not 1 <= config.rounds <= 10:
        p.error("--rounds must be 1 to 10")
    return config


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m loadtest.bench``."""
    # Ctrl-C (even when started in the background, where SIGINT may be ignored) and SIGTERM
    # unwind through the finally blocks, which stop every server and locust process by PID.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--report"]:
        if len(argv) < 2:
            sys.exit("usage: python -m loadtest.bench --report RUN_DIR [PLOTS_DIR]")
        report(Path(argv[1]), Path(argv[2]) if len(argv) > 2 else None)
        return
    try:
        run(parse_args(argv))
    finally:
        stop_children()


def stop_children(timeout: float = 5.0) -> None:
    """Stop, by PID, any process this run started that is still alive: a signal that lands
    while ``subprocess.Popen`` is still starting a child leaves that child with no owner."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


if __name__ == "__main__":
    main()

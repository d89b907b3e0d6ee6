"""What a benchmark run depends on: its configuration, the final stage's settings, the machine.

The final stage's defaults are read from :class:`serving.settings.Settings` itself, so the
report always describes the settings the servers actually ran with.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import psutil

from loadtest.ceiling import DIRECT_SCORER
from loadtest.launcher import CLIENT_CPU, ROOT, SERVER_CPU, pin_prefix
from loadtest.results import naming
from sentiment_model.throughput import cpu_model
from serving.stages import FINAL_STAGE, STAGES

RESULTS_ROOT = ROOT / "benchmarks" / "results"
FINAL_SKLEARN = f"{FINAL_STAGE}-sklearn"  # the final stage scoring with sklearn's predict_proba
# The bare batched reference (loadtest/bare_batched.py): the final stage's request model, batcher
# and direct scorer, without production's layers. Served like a stage, under this name.
BARE = "bare"
BARE_APP = "loadtest.bare_batched:app"
PLOTS_DIR = ROOT / "benchmarks" / "plots"
PROFILES = ("short", "long")
# INFERENCE_BENCH_OFF values of the layers section: each layer off alone, then every
# observability layer at once ("" = everything on, the reference).
LAYERS = ("", "metrics", "access_log", "request_id", "batcher", "metrics,access_log,request_id")


@dataclass
class BenchConfig:
    """Everything a run depends on (written to machine.json). Lists left empty skip a section."""

    stages: list[str] = field(
        default_factory=lambda: ["naive", "validated", "metrics", FINAL_STAGE, FINAL_SKLEARN]
    )
    profiles: list[str] = field(default_factory=lambda: list(PROFILES))
    users: list[int] = field(default_factory=lambda: [1, 4, 16, 64, 256])
    duration: float = 5.0
    mixed_users: int | None = 64  # None: no mixed step
    batch_share: float = 0.1  # share of /predict/batch in the mixed step
    half_load_users: int | None = 32  # None: no half-load step
    reference: bool = True  # the FastAPI ceiling: validate, answer a constant, no model
    sweep_ms: list[float] = field(default_factory=lambda: [0, 1, 2, 5, 10])
    sweep_users: list[int] = field(default_factory=lambda: [4, 64])  # few callers, many
    sweep_profiles: list[str] = field(default_factory=lambda: ["short"])
    layers: list[str] = field(default_factory=lambda: list(LAYERS))
    layers_users: int = 64
    layers_profile: str = "short"
    check_labels: bool = True  # the final stage's labels vs sklearn's on the whole test split
    ceiling_seconds: float = 2.0  # 0: skip the ceiling
    scorers: list[str] = field(default_factory=lambda: ["sklearn", "direct"])
    direct_scorer: str = DIRECT_SCORER  # module:factory, factory(model).predict(texts)
    model_dir: str | None = None
    quick: bool = False
    plots_dir: str | None = None
    out_root: str | None = None  # results root (default benchmarks/results)
    # Rounds of the stages' sessions (ladders), interleaved: round r starts each server again,
    # in an order rotated by r, so a noisy neighbour or a slower CPU period spreads over every
    # server instead of landing on one. The sweep and the layers run once, after the rounds.
    rounds: int = 1
    # Besides the final stage, which servers get the labels check (their first round only).
    labels_stages: list[str] = field(default_factory=list)

    @classmethod
    def quick_config(cls, **overrides) -> BenchConfig:
        """A few seconds per step, few steps: a smoke run of every section (about 3 minutes)."""
        base = dict(
            profiles=["short"],
            users=[1, 8, 32],
            duration=3.0,
            mixed_users=32,
            half_load_users=16,
            sweep_ms=[0, 5],
            sweep_users=[32],
            sweep_profiles=["short"],
            layers=["", "metrics,access_log,request_id"],
            layers_users=32,
            ceiling_seconds=0.5,
            quick=True,
        )
        return cls(**(base | overrides))


def final_stage_settings() -> dict[str, object]:
    """The final stage's default settings (``serving.settings.Settings``), by field name."""
    from serving.settings import Settings

    return {name: f.default for name, f in Settings.model_fields.items()}


def configured_batch_size() -> int:
    """``INFERENCE_MAX_BATCH_SIZE`` if set, else the final stage's default."""
    env = os.environ.get("INFERENCE_MAX_BATCH_SIZE")
    return int(env) if env else int(final_stage_settings()["max_batch_size"])


def configured_wait_ms() -> float | None:
    """``INFERENCE_MAX_BATCH_WAIT_MS`` if set, else the final stage's default."""
    env = os.environ.get("INFERENCE_MAX_BATCH_WAIT_MS")
    value = env if env else final_stage_settings().get("max_batch_wait_ms")
    return None if value is None else float(value)


def _first_teaching(module: str) -> int:
    """Position (in the course's order) of the first stage whose lesson teaches ``module``."""
    order = list(STAGES)
    return next((i for i, s in enumerate(order) if module in STAGES[s].teaches), len(order))


def server_settings(stage: str, env: dict[str, str]) -> dict[str, object]:
    """The batching wait, scorer and switched-off layers a server runs with (summary columns).

    Stages from the batched one on have a batching wait, stages from the one that introduces
    the direct scorer on have a scorer setting (the final stage and any stage after it), the
    earlier stages score with sklearn; ``INFERENCE_BENCH_OFF`` is read only by the final stage's
    benchmark app. The bare reference is greedy with the direct scorer; any other app (the
    reference) has no model.
    """
    if stage == BARE:
        return {"wait_ms": 0.0, "scorer": "direct", "bench_off": ""}
    if stage not in STAGES:
        return {"wait_ms": float("nan"), "scorer": "none", "bench_off": ""}
    position = list(STAGES).index(stage)
    defaults = final_stage_settings()
    wait = env.get("INFERENCE_MAX_BATCH_WAIT_MS")
    wait = wait if wait is not None else configured_wait_ms()
    batches = position >= _first_teaching("serving.batcher")
    scorer = "sklearn"
    if position >= _first_teaching("sentiment_model.scorer"):
        scorer = env.get("INFERENCE_SCORER") or os.environ.get("INFERENCE_SCORER")
        # Before the setting exists, the final stage scores with sklearn.
        scorer = scorer or str(defaults.get("scorer") or "sklearn")
    off = ""
    if stage == FINAL_STAGE:
        off = env.get("INFERENCE_BENCH_OFF", os.environ.get("INFERENCE_BENCH_OFF", ""))
    return {
        "wait_ms": float("nan") if wait is None or not batches else float(wait),
        "scorer": scorer,
        "bench_off": off,
    }


def new_run_dir(quick: bool = False, root: Path = RESULTS_ROOT) -> Path:
    """``benchmarks/results/<run-id>`` (quick runs are prefixed ``quick-``, git-ignored)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(root) / (f"quick-{stamp}" if quick else stamp)
    path.mkdir(parents=True, exist_ok=False)
    return path


def machine_info(config: BenchConfig) -> dict:
    """CPU, cores, Python and package versions, and the settings of this run."""
    packages = {}
    for name in ["fastapi", "uvicorn", "pydantic", "scikit-learn", "numpy", "scipy", "locust",
                 "prometheus-client", "python-json-logger", "httpx", "pandas"]:  # fmt: skip
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        **naming(),  # which name the final stage has in this run's files (loadtest/results.py)
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        # The machine's load average (1, 5, 15 min) as the run starts; runner.run adds the end.
        "load_average_start": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "pinning": {
            "server": " ".join(pin_prefix(SERVER_CPU)) or "none (taskset or 2nd CPU missing)",
            "locust": " ".join(pin_prefix(CLIENT_CPU)) or "none",
        },
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": packages,
        "git_commit": commit or None,
        "final_stage_settings": {k: str(v) for k, v in final_stage_settings().items()},
        "batch_size": configured_batch_size(),
        "inference_env": {k: v for k, v in os.environ.items() if k.startswith("INFERENCE_")},
        "config": asdict(config),
    }

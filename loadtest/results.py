"""A run's files read with today's stage names, whatever names the run was recorded with.

Runs recorded before the course split the final lesson call the final stage ``batched`` (and its
variants ``batched-sklearn``, ``batched-wait5ms``, ``batched-off-metrics`` ...); today
``batched`` is stage 4 and the final stage is :data:`serving.stages.FINAL_STAGE`. A run now
records its naming in ``machine.json`` (:func:`naming`: ``"stage_names": 2`` and the final
stage's name), and a reader renames the final stage of a run recorded under another name, so
an older run still reads as the final stage's. The files themselves are never rewritten.

    from loadtest.results import read_table
    summary = read_table("benchmarks/results/20261127-030529")   # "batched" -> FINAL_STAGE
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from serving.stages import FINAL_STAGE

STAGE_NAMES = 2  # machine.json "stage_names": the final stage's name is recorded as well
FINAL_STAGE_BEFORE_SPLIT = "batched"  # what runs without the marker call the final stage


def naming() -> dict[str, object]:
    """What a new run writes into its ``machine.json`` about its stage names."""
    return {"stage_names": STAGE_NAMES, "final_stage": FINAL_STAGE}


def read_machine(run_dir: str | Path) -> dict:
    """The run's ``machine.json`` ({} when it has none)."""
    path = Path(run_dir) / "machine.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def recorded_final_stage(machine: dict) -> str:
    """The name the run gave its final stage."""
    if machine.get("stage_names", 1) >= STAGE_NAMES and machine.get("final_stage"):
        return str(machine["final_stage"])
    return FINAL_STAGE_BEFORE_SPLIT


def current_name(name: str, recorded_final: str) -> str:
    """``name`` (a stage, or a server label such as ``batched-sklearn``) as named today: the
    recorded final stage and its variants become :data:`FINAL_STAGE` and its variants."""
    if recorded_final == FINAL_STAGE:
        return name
    if name == recorded_final:
        return FINAL_STAGE
    if name.startswith(recorded_final + "-"):
        return FINAL_STAGE + name[len(recorded_final) :]
    return name


def with_current_names(table: pd.DataFrame, machine: dict) -> pd.DataFrame:
    """``table`` with its ``stage`` column renamed as today (the same object when nothing
    changes)."""
    recorded = recorded_final_stage(machine)
    if recorded == FINAL_STAGE or "stage" not in table or not len(table):
        return table
    return table.assign(stage=table["stage"].map(lambda s: current_name(str(s), recorded)))


def read_table(run_dir: str | Path, name: str = "summary.csv", **read_csv: object) -> pd.DataFrame:
    """A CSV of the run (``summary.csv``, ``batch_sizes.csv`` ...) with today's stage names."""
    run_dir = Path(run_dir)
    return with_current_names(pd.read_csv(run_dir / name, **read_csv), read_machine(run_dir))

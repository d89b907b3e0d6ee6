"""Runs recorded before the course split call the final stage "batched"; they still read as the
final stage's, and new runs record their naming (loadtest/results.py). Checked under both
names the final stage has had, whatever serving/stages.py says today."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from loadtest import config, plots, results, runner
from loadtest.config import BenchConfig, machine_info
from serving.stages import FINAL_STAGE

FIXTURE_RUN = Path(__file__).resolve().parent.parent / "fixtures" / "bench_run"
COMMITTED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "20261127-030529"


@pytest.fixture(params=["batched", "fast"])
def final(request, monkeypatch) -> str:
    """The final stage's name: before the split ("batched") and after it ("fast")."""
    monkeypatch.setattr(results, "FINAL_STAGE", request.param)
    return request.param


def test_a_run_without_the_marker_names_its_final_stage_batched(final):
    legacy = {"cpu_model": "x"}
    assert results.recorded_final_stage(legacy) == "batched"
    names = ["naive", "metrics", "batched", "batched-sklearn", "batched-wait5ms",
             "batched-off-metrics+access_log", "reference"]  # fmt: skip
    renamed = [results.current_name(n, "batched") for n in names]
    assert renamed == ["naive", "metrics", final, f"{final}-sklearn", f"{final}-wait5ms",
                       f"{final}-off-metrics+access_log", "reference"]  # fmt: skip


def test_a_run_with_the_marker_keeps_its_names(final):
    machine = results.naming()  # what a run records today
    assert machine == {"stage_names": 2, "final_stage": final}
    # After the split "batched" is stage 4: a run that recorded its naming keeps it as it is.
    table = pd.DataFrame({"stage": ["batched", final, f"{final}-sklearn"]})
    assert results.with_current_names(table, machine) is table


def test_new_runs_write_the_marker_and_use_the_constant():
    machine = machine_info(BenchConfig.quick_config())
    assert machine["stage_names"] == results.STAGE_NAMES == 2
    assert machine["final_stage"] == FINAL_STAGE
    assert BenchConfig().stages[-2:] == [FINAL_STAGE, f"{FINAL_STAGE}-sklearn"]
    assert config.FINAL_SKLEARN in runner.SERVERS and FINAL_STAGE in plots.STAGE_ORDER
    names = [s.name for s in runner.plan(BenchConfig(layers=["", "metrics"]), {})]
    assert f"{FINAL_STAGE}-wait5ms" in names and f"{FINAL_STAGE}-off-metrics" in names
    layers = [s for s in runner.plan(BenchConfig(), {}) if "-off-" in s.name]
    assert {s.spec.app for s in layers} == {"loadtest.bench_app:app"}


def test_the_committed_runs_read_as_the_final_stage(final):
    summary = results.read_table(COMMITTED)
    stages = set(summary["stage"])
    assert {final, f"{final}-sklearn", "naive"} <= stages
    if final != "batched":
        assert "batched" not in stages and not any(s.startswith("batched-") for s in stages)
    batches = results.read_table(COMMITTED, "batch_sizes.csv")
    assert final in set(batches["stage"])


def test_report_and_plots_of_an_old_run_use_todays_names(final, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "FINAL_STAGE", final)
    run = tmp_path / "run"
    shutil.copytree(FIXTURE_RUN, run)
    assert "stage_names" not in json.loads((run / "machine.json").read_text())
    summary = results.read_table(run)
    assert final in set(summary["stage"])
    made = plots.plot_run(run, tmp_path / "plots")
    assert "batch_size_distribution.png" in {p.name for p in made}

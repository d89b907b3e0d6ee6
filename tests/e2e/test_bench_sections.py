"""The benchmark's issue-7 sections against real processes, in a few seconds each: the FastAPI
reference server, the layers section (INFERENCE_BENCH_OFF) and the labels check on the whole
test split. No speed is asserted: the run must measure, record and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from serving.stages import FINAL_STAGE

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_reference_layers_and_labels_sections(
    small_model_dir: Path, tmp_path: Path, splits
) -> None:
    env = os.environ | {"INFERENCE_LOG_PATH": str(tmp_path / "requests.log")}
    cmd = [sys.executable, "-m", "loadtest.bench", "--quick", "--stages", FINAL_STAGE]
    cmd += ["--profiles", "short", "--users", "2", "--duration", "2", "--no-mixed"]
    cmd += ["--no-half-load", "--no-sweep", "--no-ceiling", "--layers", "", "metrics"]
    cmd += ["--layers-users", "2", "--model-dir", str(small_model_dir)]
    cmd += ["--out", str(tmp_path / "results"), "--plots-dir", str(tmp_path / "plots")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = (tmp_path / "results").iterdir()

    summary = pd.read_csv(run_dir / "summary.csv", keep_default_na=False, na_values=[""])
    assert list(zip(summary["stage"], summary["kind"], strict=True)) == [
        (FINAL_STAGE, "ladder"), ("reference", "ladder"), (FINAL_STAGE, "layers"),
        (FINAL_STAGE, "layers"),
    ]  # fmt: skip
    assert (summary["failures"] == 0).all() and (summary["requests"] > 0).all()
    assert summary.loc[1, "scorer"] == "none"  # the reference has no model
    assert summary["bench_off"].fillna("").tolist()[2:] == ["", "metrics"]
    assert (run_dir / f"server-{FINAL_STAGE}-off-metrics.log").is_file()

    labels = json.loads((run_dir / "labels.json").read_text())
    assert labels["texts"] == len(splits.test) and labels["mismatches"] == 0, labels
    assert labels["max_score_diff"] < 1e-9
    targets = pd.read_csv(run_dir / "targets.csv").set_index("target")
    assert targets.loc["same labels as sklearn on the whole test split", "met"]
    assert targets.loc["short: final max throughput >= 70% of the FastAPI ceiling", "value"] > 0
    assert "## What each layer of the final stage costs" in (run_dir / "report.md").read_text()
    assert (tmp_path / "plots" / "layers.png").is_file()

"""The load-test runner against real stages: quick benchmark runs, the report redone from a run
directory, SIGTERM, the profiler. Its pure parts (payloads, checks, helpers, targets, plots) are
tests/unit/test_loadtest_parts.py.

No speed is asserted anywhere: the benchmark reports speed, the tests check that the tooling
measures, records and plots correctly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from loadtest.config import configured_batch_size
from loadtest.steps import SUMMARY_COLUMNS
from serving.stages import FINAL_STAGE

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_RUN = ROOT / "tests" / "fixtures" / "bench_run"  # also read by tests/unit


# --- the runner against real stages ----------------------------------------------------------


def _run_bench(args: list[str], small_model_dir: Path, tmp_path: Path) -> Path:
    # Stands for the student's own log (logs/requests.log): the servers must not write there.
    env = os.environ | {"INFERENCE_LOG_PATH": str(tmp_path / "requests.log")}
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "loadtest.bench", "--quick", "--profiles", "short"]
    cmd += ["--duration", "2", "--model-dir", str(small_model_dir), "--out", str(out)]
    cmd += ["--plots-dir", str(tmp_path / "plots"), *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = out.iterdir()
    assert run_dir.name.startswith("quick-")
    assert "ladder: 1 user" in done.stdout  # progress is shown
    assert not (tmp_path / "requests.log").exists()  # 49,000 lines there after a quick run
    return run_dir


def _check_summary(run_dir: Path, expected_kinds: list[str], stage: str) -> pd.DataFrame:
    summary = pd.read_csv(run_dir / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert summary["kind"].tolist() == expected_kinds
    assert (summary["stage"] == stage).all() and (summary["profile"] == "short").all()
    assert (summary["requests"] > 0).all() and (summary["failures"] == 0).all()
    assert (summary["rps"] > 0).all() and (summary["server_rss_mb"] > 0).all()
    assert (summary["p50_ms"] <= summary["p99_ms"]).all()
    assert (summary["p99_ms"] <= summary["max_ms"]).all()
    machine = json.loads((run_dir / "machine.json").read_text())
    assert machine["logical_cpus"] >= 1 and machine["packages"]["locust"]
    assert machine["config"]["stages"] == [stage]
    for _, row in summary[summary["kind"] == "ladder"].iterrows():
        prefix = run_dir / "raw" / f"{stage}_short_ladder_u{row['users']}"
        assert Path(f"{prefix}_stats.csv").is_file()
        assert json.loads(Path(f"{prefix}_latency.json").read_text())["Aggregated"]["requests"]
    assert not (run_dir / "payloads.json").exists()  # a cache, removed at the end
    return summary


def test_quick_run_against_the_final_stage(small_model_dir: Path, tmp_path: Path) -> None:
    run_dir = _run_bench(
        ["--stages", FINAL_STAGE, "--users", "1", "4", "--mixed-users", "4", "--no-sweep",
         "--ceiling-seconds", "0.2", "--no-reference", "--no-layers", "--no-labels"],
        small_model_dir,
        tmp_path,
    )  # fmt: skip
    summary = _check_summary(run_dir, ["ladder", "ladder", "mixed"], FINAL_STAGE)
    assert summary.loc[2, "batch_share"] > 0  # the final stage has /predict/batch
    assert summary.loc[2, "texts_per_s"] > summary.loc[2, "rps"]  # batches carry several texts
    assert summary["mean_batch_size"].notna().all()  # scraped from /metrics
    batches = pd.read_csv(run_dir / "batch_sizes.csv")
    assert batches["count"].sum() > 0
    ceiling = pd.read_csv(run_dir / "ceiling.csv")
    ceiling = ceiling[ceiling["scorer"] == "sklearn"]  # the direct scorer, where it exists, too
    # Measured at the start and at the end of the run, at batch size 1 and the configured one.
    assert sorted(ceiling["when"]) == ["end", "end", "start", "start"]
    assert sorted(set(ceiling["batch_size"])) == [1, configured_batch_size()]
    assert (ceiling["texts_per_s_p50"] > 0).all()
    assert (run_dir / "report.md").read_text().startswith("# Benchmark run")
    assert (tmp_path / "plots" / "throughput_vs_users.png").is_file()
    log = (run_dir / f"server-{FINAL_STAGE}.requests.log").read_text().splitlines()  # trimmed
    assert '"model_loaded"' in log[0] or '"model_loaded"' in "".join(log[:5])
    assert '"shutdown"' in log[-1] and any(" lines skipped ..." in line for line in log)


@pytest.mark.skipif(
    not (ROOT / "lessons" / "01_naive" / "inference_server.py").is_file(),
    reason="the naive stage is not written yet",
)
def test_quick_run_against_the_naive_stage(small_model_dir: Path, tmp_path: Path) -> None:
    run_dir = _run_bench(
        [
            "--stages",
            "naive",
            "--users",
            "1",
            "--half-load-users",
            "2",
            "--no-ceiling",
            "--no-reference",
        ],
        small_model_dir,
        tmp_path,
    )
    summary = _check_summary(run_dir, ["ladder", "half_load"], "naive")
    # The naive stage has no /predict/batch and no /metrics: no batch traffic, no histogram.
    assert (summary["batch_share"] == 0).all()
    assert summary["mean_batch_size"].isna().all()
    half = summary.iloc[1]
    assert half["offered_rps"] == pytest.approx(summary.iloc[0]["rps"] / 2, rel=1e-3)


def test_report_is_redone_from_a_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for f in FIXTURE_RUN.iterdir():
        (run_dir / f.name).write_bytes(f.read_bytes())
    cmd = [sys.executable, "-m", "loadtest.bench", "--report", str(run_dir), str(tmp_path / "p")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run_dir / "report.md").is_file() and (run_dir / "targets.csv").is_file()
    assert (tmp_path / "p" / "throughput_vs_users.png").is_file()
    assert "short: final max throughput" in done.stdout


def test_sigterm_stops_the_run_and_its_server(small_model_dir: Path, tmp_path: Path) -> None:
    import psutil

    env = os.environ | {"INFERENCE_LOG_PATH": str(tmp_path / "requests.log")}
    cmd = [sys.executable, "-m", "loadtest.bench", "--quick", "--stages", "naive"]
    cmd += ["--profiles", "short", "--users", "1", "--duration", "30", "--no-ceiling"]
    cmd += ["--no-reference"]
    cmd += ["--model-dir", str(small_model_dir), "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:  # bounded: the first step starts within seconds
            if "ladder: 1 user" in line:
                break
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("serving.serve" in " ".join(c.cmdline()) for c in children)  # the server
        proc.terminate()
        assert proc.wait(timeout=30) != 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [c.cmdline() for c in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_profile_writes_a_call_tree(small_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from loadtest.profile import profile_stage

    monkeypatch.setenv("INFERENCE_LOG_PATH", str(tmp_path / "requests.log"))
    out = profile_stage(
        FINAL_STAGE, "short", users=2, duration=2, out_dir=tmp_path / "prof",
        env={"INFERENCE_MODEL_DIR": str(small_model_dir)}, html=True,
    )  # fmt: skip
    text = (out / "profile.txt").read_text()
    assert "uvicorn" in text and "inference_server" in text  # the server's own frames
    assert (out / "profile.html").stat().st_size > 1000
    row = pd.read_csv(out / "summary.csv").iloc[0]
    assert row["requests"] > 0 and row["failures"] == 0

"""The load-test tooling: locustfile payloads and checks, the benchmark runner, the plots.

No speed is asserted anywhere: the benchmark reports speed, the tests check that the tooling
measures, records and plots correctly.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from loadtest import bench, plots
from loadtest.config import BenchConfig, configured_batch_size
from loadtest.latency import latency_summary
from loadtest.payloads import (
    batch_body,
    check_prediction,
    load_payload_file,
    predict_body,
    write_payload_file,
)
from loadtest.promtext import histogram_delta, histogram_mean, mean_from_buckets
from loadtest.report import evaluate_targets, report_markdown
from loadtest.steps import SUMMARY_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_RUN = Path(__file__).parent / "fixtures" / "bench_run"


@pytest.fixture(scope="module")
def payload_file(tmp_path_factory) -> Path:
    """The payload file the runner gives to locust, built once from the real test split."""
    return write_payload_file(tmp_path_factory.mktemp("payloads") / "payloads.json")


# --- payloads --------------------------------------------------------------------------------


def test_payload_profiles_come_from_the_test_split(payload_file: Path, splits) -> None:
    test = splits.test
    short = load_payload_file(payload_file, "short")
    long = load_payload_file(payload_file, "long")
    assert short == test.loc[test["source"] == "rotten_tomatoes", "text"].tolist()
    assert long == test.loc[test["source"] == "imdb", "text"].tolist()
    # The profiles really differ in length (real distributions, not one constant string).
    assert len(set(short)) == len(short) > 100
    assert sum(map(len, long)) / len(long) > 5 * sum(map(len, short)) / len(short)


def test_unknown_profile_is_refused(payload_file: Path) -> None:
    with pytest.raises(ValueError, match="medium"):
        load_payload_file(payload_file, "medium")


def test_payloads_validate_against_the_final_stage_request_schema(payload_file: Path) -> None:
    from serving.schemas import request_models
    from serving.settings import Settings

    settings = Settings()
    predict_request, batch_request = request_models(
        settings.max_text_chars, settings.max_batch_items
    )
    rng = random.Random(0)
    for profile in ("short", "long"):
        texts = load_payload_file(payload_file, profile)
        for text in texts:  # every text the load test can send, as JSON on the wire
            predict_request.model_validate_json(json.dumps(predict_body(text)))
        for _ in range(200):
            batch_request.model_validate_json(json.dumps(batch_body(texts, rng)))


# --- locustfile checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ({"label": "positive", "score": 0.9}, None),
        ({"label": "negative", "score": 1, "model_version": "x"}, None),
        ({"label": "neutral", "score": 0.9}, "bad label"),
        ({"score": 0.9}, "bad label"),
        ({"label": "positive", "score": 1.5}, "bad score"),
        ({"label": "positive", "score": True}, "bad score"),
        ({"label": "positive", "score": "0.9"}, "bad score"),
        ({"label": "positive"}, "bad score"),
        (["positive", 0.9], "not an object"),
        (None, "not an object"),
    ],
)
def test_check_prediction_flags_wrong_shapes(item, problem) -> None:
    result = check_prediction(item)
    assert result is None if problem is None else problem in result


def test_latency_summary_counts_and_percentiles() -> None:
    latencies = {"/predict": [float(i) for i in range(1, 101)], "/predict/batch": [50.0]}
    out = latency_summary(latencies, {"/predict": 3}, elapsed_s=2.0)
    assert out["/predict"]["requests"] == 103
    assert out["/predict"]["failures"] == 3
    assert out["/predict"]["rps"] == pytest.approx(51.5)
    assert out["/predict"]["p50"] == pytest.approx(50.5)
    assert out["/predict"]["max"] == 100.0
    agg = out["Aggregated"]
    assert agg["requests"] == 104 and agg["failures"] == 3
    assert agg["p50"] <= agg["p95"] <= agg["p99"] <= agg["max"]


# --- runner helpers --------------------------------------------------------------------------


def _batch_metrics(sizes: list[int]) -> str:
    registry = CollectorRegistry()
    h = Histogram(
        "inference_batch_size", "texts per batch", buckets=(1, 2, 4, 8, 16, 32, 64),
        registry=registry,
    )  # fmt: skip
    for s in sizes:
        h.observe(s)
    return generate_latest(registry).decode()


def test_histogram_delta_counts_only_the_step() -> None:
    before = _batch_metrics([1, 1, 32])
    after = _batch_metrics([1, 1, 32, 3, 3, 30, 32, 64])
    rows = dict(histogram_delta(before, after))
    assert rows[1.0] == 0 and rows[4.0] == 2 and rows[32.0] == 2 and rows[64.0] == 1
    assert sum(rows.values()) == 5
    assert histogram_delta(None, None) == []
    assert mean_from_buckets(list(rows.items())) == pytest.approx((4 * 2 + 32 * 2 + 64) / 5)
    assert histogram_mean(before, after) == pytest.approx((3 + 3 + 30 + 32 + 64) / 5)
    assert math.isnan(histogram_mean(after, after))


def test_parse_args_quick_and_switches() -> None:
    config = bench.parse_args(["--quick", "--stages", "naive", "--no-sweep", "--no-ceiling"])
    assert config.quick and config.stages == ["naive"]
    assert config.sweep_ms == [] and config.ceiling_seconds == 0
    assert config.duration < BenchConfig().duration
    full = bench.parse_args(["--profiles", "long", "--users", "2", "8"])
    assert full.profiles == ["long"] and full.sweep_profiles == ["long"] and full.users == [2, 8]
    for bad in (["--users", "0"], ["--stages", "nope"], ["--duration", "-1"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_targets_are_computed_from_the_summary() -> None:
    summary = pd.read_csv(FIXTURE_RUN / "summary.csv")
    ceiling = pd.read_csv(FIXTURE_RUN / "ceiling.csv")
    targets = evaluate_targets(summary, ceiling, batch_size=32).set_index("target")
    lad = summary[summary["kind"] == "ladder"]

    def top(stage, profile):
        return lad[(lad["stage"] == stage) & (lad["profile"] == profile)]["rps"].max()

    short = targets.loc["short: final max throughput >= 3.5x naive"]
    assert short["value"] == pytest.approx(top("batched", "short") / top("naive", "short"))
    assert short["met"] == (short["value"] >= 3.5)
    fraction = targets.loc["long: final max throughput vs in-process ceiling at batch 32"]
    long_ceiling = ceiling[(ceiling["profile"] == "long") & (ceiling["batch_size"] == 32)]
    expected = lad[(lad["stage"] == "batched") & (lad["profile"] == "long")]["texts_per_s"].max()
    col = "texts_per_s_p50" if "texts_per_s_p50" in ceiling else "texts_per_s"
    assert fraction["value"] == pytest.approx(expected / long_ceiling[col].iloc[0])
    assert {"naive: RSS flat across the ladder (max <= 1.1x first step)"} <= set(targets.index)
    # Without the naive stage, the comparisons are reported as not measured, not invented.
    alone = evaluate_targets(summary[summary["stage"] == "batched"], ceiling)
    assert alone.set_index("target").loc[short.name, "met"] is None


# --- plots -----------------------------------------------------------------------------------


def test_plot_functions_write_png_files(tmp_path: Path) -> None:
    summary = FIXTURE_RUN / "summary.csv"
    made = [
        plots.throughput_vs_users(summary, tmp_path / "a.png", FIXTURE_RUN / "ceiling.csv"),
        plots.latency_vs_users(summary, tmp_path / "b.png"),
        plots.latency_vs_throughput(summary, tmp_path / "c.png"),
        plots.batch_size_distribution(FIXTURE_RUN / "batch_sizes.csv", tmp_path / "d.png"),
        plots.wait_sweep(summary, tmp_path / "e.png"),
        plots.memory_per_step(summary, tmp_path / "f.png"),
    ]
    assert all(fig.axes for fig in made)
    for name in "abcdef":
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_run_and_report_from_a_run_directory(tmp_path: Path) -> None:
    made = plots.plot_run(FIXTURE_RUN, tmp_path)
    assert {p.name for p in made} == {
        "throughput_vs_users.png", "latency_vs_users.png", "latency_vs_throughput.png",
        "memory_per_step.png", "batch_size_distribution.png", "wait_sweep.png",
    }  # fmt: skip
    assert all(p.stat().st_size > 1000 for p in made)
    summary = pd.read_csv(FIXTURE_RUN / "summary.csv")
    ceiling = pd.read_csv(FIXTURE_RUN / "ceiling.csv")
    report = report_markdown(FIXTURE_RUN, summary, ceiling, evaluate_targets(summary, ceiling))
    assert "| stage | profile | max req/s" in report and "## Targets" in report


def test_plots_refuse_a_summary_without_the_data() -> None:
    summary = pd.read_csv(FIXTURE_RUN / "summary.csv")
    with pytest.raises(ValueError, match="wait_sweep"):
        plots.wait_sweep(summary[summary["kind"] == "ladder"])
    with pytest.raises(ValueError, match="ladder"):
        plots.throughput_vs_users(summary[summary["kind"] == "wait_sweep"])


# --- the runner against real stages ----------------------------------------------------------


def _run_bench(args: list[str], small_model_dir: Path, tmp_path: Path) -> Path:
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
        ["--stages", "batched", "--users", "1", "4", "--mixed-users", "4", "--no-sweep",
         "--ceiling-seconds", "0.2", "--no-reference", "--no-layers", "--no-labels"],
        small_model_dir,
        tmp_path,
    )  # fmt: skip
    summary = _check_summary(run_dir, ["ladder", "ladder", "mixed"], "batched")
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


def test_best_ceiling_keeps_the_least_disturbed_measurement() -> None:
    from loadtest.ceiling import best_ceiling

    ceiling = pd.DataFrame(
        {
            "when": ["start"] * 4 + ["end"] * 4,
            "profile": ["short", "short", "long", "long"] * 2,
            "batch_size": [1, 32] * 4,
            "texts_per_s_p50": [900.0, 300.0, 400.0, 1000.0, 1000.0, 9000.0, 350.0, 200.0],
        }
    )
    best = best_ceiling(ceiling).set_index(["profile", "batch_size"])["texts_per_s_p50"]
    assert best.to_dict() == {
        ("short", 1): 1000.0, ("short", 32): 9000.0, ("long", 1): 400.0, ("long", 32): 1000.0
    }  # fmt: skip


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
        "batched", "short", users=2, duration=2, out_dir=tmp_path / "prof",
        env={"INFERENCE_MODEL_DIR": str(small_model_dir)}, html=True,
    )  # fmt: skip
    text = (out / "profile.txt").read_text()
    assert "uvicorn" in text and "inference_server" in text  # the server's own frames
    assert (out / "profile.html").stat().st_size > 1000
    row = pd.read_csv(out / "summary.csv").iloc[0]
    assert row["requests"] > 0 and row["failures"] == 0

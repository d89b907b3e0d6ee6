"""The load-test tooling's pure parts: locustfile payloads and checks, the runner's helpers,
targets and plots (from a recorded run, tests/fixtures/bench_run). No process is started; the
runner against real stages is tests/e2e/test_loadtest.py.

No speed is asserted anywhere: the benchmark reports speed, the tests check that the tooling
measures, records and plots correctly.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from loadtest import bench, plots
from loadtest.config import BenchConfig
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
from loadtest.results import read_table
from serving.stages import FINAL_STAGE

FIXTURE_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "bench_run"


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
    summary = read_table(FIXTURE_RUN)  # a run from before the split: its "batched" is final
    ceiling = pd.read_csv(FIXTURE_RUN / "ceiling.csv")
    targets = evaluate_targets(summary, ceiling, batch_size=32).set_index("target")
    lad = summary[summary["kind"] == "ladder"]

    def top(stage, profile):
        return lad[(lad["stage"] == stage) & (lad["profile"] == profile)]["rps"].max()

    short = targets.loc["short: final max throughput >= 3.5x naive"]
    assert short["value"] == pytest.approx(top(FINAL_STAGE, "short") / top("naive", "short"))
    assert short["met"] == (short["value"] >= 3.5)
    fraction = targets.loc["long: final max throughput vs in-process ceiling at batch 32"]
    long_ceiling = ceiling[(ceiling["profile"] == "long") & (ceiling["batch_size"] == 32)]
    expected = lad[(lad["stage"] == FINAL_STAGE) & (lad["profile"] == "long")]["texts_per_s"].max()
    col = "texts_per_s_p50" if "texts_per_s_p50" in ceiling else "texts_per_s"
    assert fraction["value"] == pytest.approx(expected / long_ceiling[col].iloc[0])
    assert {"naive: RSS flat across the ladder (max <= 1.1x first step)"} <= set(targets.index)
    # Without the naive stage, the comparisons are reported as not measured, not invented.
    alone = evaluate_targets(summary[summary["stage"] == FINAL_STAGE], ceiling)
    assert alone.set_index("target").loc[short.name, "met"] is None


# --- plots -----------------------------------------------------------------------------------


def test_plot_functions_write_png_files(tmp_path: Path) -> None:
    summary, batches = read_table(FIXTURE_RUN), read_table(FIXTURE_RUN, "batch_sizes.csv")
    made = [
        plots.throughput_vs_users(summary, tmp_path / "a.png", FIXTURE_RUN / "ceiling.csv"),
        plots.latency_vs_users(summary, tmp_path / "b.png"),
        plots.latency_vs_throughput(summary, tmp_path / "c.png"),
        plots.batch_size_distribution(batches, tmp_path / "d.png"),
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
    summary = read_table(FIXTURE_RUN)
    ceiling = pd.read_csv(FIXTURE_RUN / "ceiling.csv")
    report = report_markdown(FIXTURE_RUN, summary, ceiling, evaluate_targets(summary, ceiling))
    assert "| stage | profile | max req/s" in report and "## Targets" in report


def test_plots_refuse_a_summary_without_the_data() -> None:
    summary = pd.read_csv(FIXTURE_RUN / "summary.csv")
    with pytest.raises(ValueError, match="wait_sweep"):
        plots.wait_sweep(summary[summary["kind"] == "ladder"])
    with pytest.raises(ValueError, match="ladder"):
        plots.throughput_vs_users(summary[summary["kind"] == "wait_sweep"])


# --- ceiling ---------------------------------------------------------------------------------


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


def test_a_stage_server_logs_beside_its_output_not_into_the_students_logs(tmp_path, monkeypatch):
    """The benchmark's servers used to write their JSON log to logs/requests.log."""
    monkeypatch.setenv("INFERENCE_LOG_PATH", "logs/requests.log")  # the student's: not inherited
    server = bench.StageServer(FINAL_STAGE, log_path=tmp_path / "server-batched.log")
    assert server.server_env()["INFERENCE_LOG_PATH"] == str(
        tmp_path / "server-batched.requests.log"
    )
    assert server.request_log == tmp_path / "server-batched.requests.log"
    chosen = tmp_path / "mine.log"
    server = bench.StageServer(
        FINAL_STAGE, env={"INFERENCE_LOG_PATH": str(chosen)}, log_path=tmp_path / "out.log"
    )
    assert server.server_env()["INFERENCE_LOG_PATH"] == str(chosen)  # a caller's choice stays


def test_a_benchmark_keeps_the_ends_of_each_request_log(tmp_path):
    from loadtest.runner import trim_request_log

    log = tmp_path / "server-batched.requests.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    (tmp_path / "server-batched.requests.log.1").write_text("rotated\n")
    trim_request_log(log)
    lines = log.read_text().splitlines()
    assert lines[0] == "line 0" and lines[-1] == "line 999" and len(lines) == 81
    assert [p.name for p in tmp_path.iterdir()] == [log.name]
    trim_request_log(None)  # a server that never started


def test_a_log_the_caller_chose_is_not_trimmed(tmp_path):
    """Notebook 06 reads the log of its wait sweep (INFERENCE_LOG_PATH in env) afterwards."""
    from loadtest.runner import own_request_log

    ours = bench.StageServer(FINAL_STAGE, log_path=tmp_path / "server-batched.log")
    ours.server_env()
    assert own_request_log(ours) == tmp_path / "server-batched.requests.log"
    env = {"INFERENCE_LOG_PATH": str(tmp_path / "requests.log")}
    theirs = bench.StageServer(FINAL_STAGE, env=env, log_path=tmp_path / "server-batched.log")
    theirs.server_env()
    assert own_request_log(theirs) is None
    assert own_request_log(bench.StageServer(FINAL_STAGE)) is None  # never started

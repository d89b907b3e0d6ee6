"""Interleaved rounds (``python -m loadtest.bench --rounds N``) and the bare batched reference:
medians and ranges, ratios round by round, the price-of-production targets, the run's plan,
and the bare app answering like the final stage. No load."""

from __future__ import annotations

import gc
import math
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from loadtest import plots, rounds
from loadtest.config import BARE, BenchConfig, server_settings
from loadtest.runner import SERVERS, plan
from loadtest.steps import SUMMARY_COLUMNS
from serving.stages import FINAL_STAGE

USERS = (1, 4, 16, 64)
# max req/s per round: (naive, final, bare); short and long alike, long at half
PER_ROUND = {1: (1000.0, 3200.0, 3600.0), 2: (900.0, 3000.0, 3500.0), 3: (1100.0, 3000.0, 3300.0)}


def _row(stage: str, profile: str, users: int, rps: float, r: int, **kw) -> dict:
    base = {"stage": stage, "profile": profile, "kind": "ladder", "users": users, "rps": rps,
            "p50_ms": 0.5 if stage != "naive" else 0.7, "p99_ms": 5.0, "failures": 0,
            "requests": int(rps * 3), "server_rss_mb": 340.0, "cpu_ms_per_req": 1000 / rps,
            "scorer": "direct", "bench_off": "", "host_load_1m": 2.0, "cpu0_others_pct": 0.0,
            "round": r}  # fmt: skip
    return base | kw


def _summary() -> pd.DataFrame:
    rows = []
    for r, (naive, final, bare) in PER_ROUND.items():
        for profile, scale in (("short", 1.0), ("long", 0.5)):
            for u in USERS:
                top = u == 64  # every server peaks at 64 users; below, a little less
                f = 1.0 if top else 0.9
                rows.append(_row("naive", profile, u, naive * scale * f, r))
                rows.append(_row(FINAL_STAGE, profile, u, final * scale * f, r))
                rows.append(_row(BARE, profile, u, bare * scale * f, r))
    return pd.DataFrame(rows).reindex(columns=SUMMARY_COLUMNS)


def test_collapse_takes_medians_sums_failures_and_keeps_ranges() -> None:
    summary = _summary()
    assert rounds.has_rounds(summary)
    med = rounds.collapse_rounds(summary)
    row = med[(med["stage"] == FINAL_STAGE) & (med["profile"] == "short") & (med["users"] == 64)]
    row = row.iloc[0]
    assert row["rps"] == 3000.0 and row["rps_min"] == 3000.0 and row["rps_max"] == 3200.0
    assert row["requests"] == sum(int(v[1] * 3) for v in PER_ROUND.values())
    assert row["rounds"] == 3 and "round" not in med
    one = summary[summary["round"] == 1]
    assert rounds.collapse_rounds(one) is one  # one round: nothing to collapse


def test_headline_ratios_are_taken_round_by_round() -> None:
    head = rounds.headline(_summary()).set_index(["stage", "profile"])
    final = head.loc[(FINAL_STAGE, "short")]
    assert final["max_rps"] == 3000.0
    assert (final["max_rps_min"], final["max_rps_max"]) == (3000.0, 3200.0)
    # per round 3.2, 3.33, 2.73: the median is round 1's, not 3000 / 1000
    assert final["vs_naive"] == pytest.approx(3.2)
    assert final["vs_naive_min"] == pytest.approx(3000 / 1100)
    assert final["vs_bare"] == pytest.approx(3200 / 3600)  # rounds: .889, .857, .909
    assert final["users_at_max"] == "64/64/64"
    assert head.loc[(FINAL_STAGE, "short"), "p50_vs_naive"] == pytest.approx(0.5 / 0.7)


def test_price_targets_are_met_or_not_with_their_figures() -> None:
    labels = {"texts": 3344, "mismatches": 0, "max_score_diff": 7.8e-16, "scorer": "direct"}
    t = rounds.price_targets(_summary(), FINAL_STAGE, labels).set_index("target")
    of_bare = t.loc[f"short: {FINAL_STAGE} max throughput >= 85% of the bare reference"]
    assert of_bare["met"] and of_bare["value"] == pytest.approx(3200 / 3600)
    assert "to" in of_bare["measured"]  # median (lowest to highest)
    assert not t.loc[f"long: {FINAL_STAGE} max throughput >= 90% of the bare reference", "met"]
    assert t.loc[f"short: {FINAL_STAGE} max throughput >= 3.0x naive", "met"]
    steps = t.loc[f"short: {FINAL_STAGE} >= naive at every ladder step (lowest step of each round)"]
    assert steps["met"] and "1: " in steps["detail"]
    assert t.loc[f"short: one user, {FINAL_STAGE} p50 <= naive p50", "met"]
    assert t.loc[f"{FINAL_STAGE}: zero failures", "met"]
    assert t.loc[f"{FINAL_STAGE}: same labels as sklearn, scores within 1e-9, whole test split",
                 "met"]  # fmt: skip
    worse = dict(labels, max_score_diff=1e-6)
    t = rounds.price_targets(_summary(), FINAL_STAGE, worse).set_index("target")
    assert not t.loc[f"{FINAL_STAGE}: same labels as sklearn, scores within 1e-9, whole test split",
                     "met"]  # fmt: skip


def test_layers_target_from_interleaved_rounds() -> None:
    rows = []
    for r, (on, off) in enumerate([(250.0, 220.0), (260.0, 240.0), (240.0, 200.0)]):
        for name, key, us in (
            ("all on (as shipped)", "", on),
            ("metrics + log + id off", "metrics,access_log,request_id", off),
        ):
            rows.append({"config": name, "off": key, "round": r, "ok": 1000, "failed": 0,
                         "seconds": 3.0, "rps": 1e6 / us, "server_cpu_pct": 95.0,
                         "cpu_us": us})  # fmt: skip
    t = rounds.price_targets(_summary(), FINAL_STAGE, None, pd.DataFrame(rows))
    layers = t[t["target"].str.startswith("metrics + access log")].iloc[0]
    assert layers["value"] == pytest.approx(1 - 220 / 250)  # rounds: 12 %, 7.7 %, 16.7 %
    assert layers["met"] is False or not layers["met"]
    assert layers["min"] == pytest.approx(1 - 240 / 260)


def test_round_files_and_plots(tmp_path: Path) -> None:
    summary = _summary()
    made = rounds.write_round_files(tmp_path, summary, FINAL_STAGE)
    assert all(p.is_file() for p in made)
    text = (tmp_path / "rounds.md").read_text()
    assert "3,000 (3,000-3,200)" in text
    assert f"## Targets of the price of production: {FINAL_STAGE}" in text
    fig = plots.headline_rounds(summary, tmp_path / "headline_rounds.png")
    assert (tmp_path / "headline_rounds.png").is_file() and len(fig.axes) == 4
    plots.throughput_vs_users(rounds.collapse_rounds(summary), tmp_path / "t.png")  # bands


def test_rounds_are_interleaved_and_labels_checked_once() -> None:
    config = BenchConfig(
        stages=["naive", FINAL_STAGE, BARE], rounds=3, reference=False, sweep_ms=[], layers=[],
        half_load_users=None, mixed_users=None,
    )  # fmt: skip
    sessions = plan(config, {FINAL_STAGE: lambda server: None})
    names = [s.name for s in sessions]
    assert names == [
        "naive-r1", f"{FINAL_STAGE}-r1", "bare-r1",
        f"{FINAL_STAGE}-r2", "bare-r2", "naive-r2",
        "bare-r3", "naive-r3", f"{FINAL_STAGE}-r3",
    ]  # fmt: skip
    assert [s.round for s in sessions] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [s.name for s in sessions if s.after] == [f"{FINAL_STAGE}-r1"]
    one = plan(BenchConfig(stages=["naive"], reference=False, sweep_ms=[], layers=[]), {})
    assert [s.name for s in one] == ["naive"]  # one round: the names of every earlier run


def test_bare_is_served_like_a_stage_and_greedy_with_the_direct_scorer(monkeypatch) -> None:
    monkeypatch.delenv("INFERENCE_SCORER", raising=False)
    spec = SERVERS[BARE]
    assert spec.app == "loadtest.bare_batched:app" and spec.app_dir == "."
    assert server_settings(BARE, {}) == {"wait_ms": 0.0, "scorer": "direct", "bench_off": ""}
    assert server_settings("batched", {})["scorer"] == "sklearn"
    assert server_settings("batched", {})["wait_ms"] == 0.0
    assert math.isnan(server_settings("metrics", {})["wait_ms"])
    assert BARE in plots.STAGE_ORDER


def test_bare_app_answers_like_the_final_stage(monkeypatch, small_model_dir: Path) -> None:
    monkeypatch.setenv("INFERENCE_MODEL_DIR", str(small_model_dir))
    import importlib

    import loadtest.bare_batched as bare

    bare = importlib.reload(bare)  # settings are read at import
    threshold = gc.get_threshold()
    monkeypatch.setattr(gc, "freeze", lambda: None)  # the test process keeps its collector
    monkeypatch.setattr(gc, "set_threshold", lambda *args: None)
    with TestClient(bare.app) as client:
        ok = client.post("/predict", json={"text": "A warm, funny, beautifully acted film."})
        assert ok.status_code == 200
        body = ok.json()
        assert set(body) == {"label", "score", "model_version", "latency_ms"}
        assert client.app.state.model.scorer == "direct"
        assert client.post("/predict", json={"text": "   "}).status_code == 422
        assert client.post("/predict", json={"text": "x", "extra": 1}).status_code == 422
        # nothing else: no metrics, no probes, no batch route
        for path in ("/metrics", "/ready", "/health"):
            assert client.get(path).status_code == 404
    assert gc.get_threshold() == threshold


def test_headline_tool_prices_servers_by_cpu_per_request(tmp_path: Path) -> None:
    from loadtest import headline

    rows = []
    # server CPU µs per request at 64 connections, per round: naive, final, bare
    cpu = {1: (500.0, 200.0, 180.0), 2: (520.0, 230.0, 190.0), 3: (480.0, 190.0, 170.0)}
    for r, values in cpu.items():
        for stage, us in zip(("naive", FINAL_STAGE, BARE), values, strict=True):
            for profile, users, p50 in (("short", 64, 10.0), ("short", 1, 0.5), ("long", 64, 20.0)):
                p50 = p50 * (1.4 if stage == "naive" else 1.0)
                rows.append({"stage": stage, "profile": profile, "users": users, "round": r,
                             "ok": 1000, "failed": 0, "seconds": 3.0, "rps": 0.9e6 / us,
                             "server_cpu_pct": 90.0, "cpu_us": us, "p50_ms": p50,
                             "p99_ms": 2 * p50, "rss_mb": 340.0, "host_load_1m": 2.0})  # fmt: skip
    rows = pd.DataFrame(rows)
    summary = headline.summarise(rows).set_index(["stage", "profile", "users"])
    final = summary.loc[(FINAL_STAGE, "short", 64)]
    assert final["cpu_us"] == 200.0 and final["one_core_rps"] == 5000.0
    assert final["vs_naive"] == pytest.approx(2.5)  # rounds: 2.5, 2.26, 2.53
    assert final["vs_bare"] == pytest.approx(170 / 190)  # rounds: .9, .83, .89
    t = headline.targets(rows, FINAL_STAGE, tmp_path).set_index("target")
    assert t.loc[f"short: {FINAL_STAGE} >= 85% of bare (one-core throughput)", "met"]
    assert not t.loc[f"short: {FINAL_STAGE} >= 3.0x naive (one-core throughput)", "met"]
    assert t.loc[f"short: one user, {FINAL_STAGE} p50 <= naive p50", "met"]
    fig = plots.headline_cpu(rows, tmp_path / "headline_cpu.png")
    assert (tmp_path / "headline_cpu.png").is_file() and len(fig.axes) == 4
    text = headline.write(tmp_path, rows, ["naive", FINAL_STAGE, BARE])
    assert "| fast | short | 64 |" in text.replace(FINAL_STAGE, "fast")

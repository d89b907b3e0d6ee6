"""The drills' pure helpers and the Prometheus launcher's fallbacks (no processes started)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from monitoring import drills, prom
from sentiment_model import load_model
from sentiment_model.artifact import ChecksumMismatchError
from serving.schemas import request_models
from serving.settings import Settings


def test_prometheus_config_scrapes_the_server_every_second_with_the_rules():
    text = drills.prometheus_config("127.0.0.1:8123")
    assert 'targets: ["127.0.0.1:8123"]' in text
    assert "scrape_interval: 1s" in text and "evaluation_interval: 1s" in text
    assert str(prom.RULES_DIR / "alerts.yml") in text
    assert str(prom.RULES_DIR / "recording.yml") in text


def test_the_generated_config_is_the_committed_one_for_the_default_target(tmp_path):
    """`tasks.py monitor` writes its config for the target it is given; for the default one it
    says what monitoring/prometheus.yml says (promtool checks that file)."""
    committed = yaml.safe_load(prom.CONFIG.read_text())
    committed["rule_files"] = sorted(
        str(p) for pattern in committed["rule_files"] for p in prom.MONITORING.glob(pattern)
    )
    written = prom.write_config(data_dir=tmp_path / "data")
    assert written == tmp_path / "data" / "prometheus.yml"
    assert yaml.safe_load(written.read_text()) == committed
    other = yaml.safe_load(prom.write_config("10.0.0.7:8001", tmp_path / "data").read_text())
    assert other["scrape_configs"][0]["static_configs"] == [{"targets": ["10.0.0.7:8001"]}]


@pytest.mark.parametrize("text", ["127.0.0.1:8001", "[::1]:8000", "inference:8000"])
def test_a_target_is_host_and_port(text):
    assert prom.parse_target(text) == text


@pytest.mark.parametrize("text", ["8001", ":8001", "host:", "host:http", "host:70000", "host:0"])
def test_a_target_that_is_not_host_and_port_is_refused(text):
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        prom.parse_target(text)


def test_flag_value_reads_both_spellings():
    assert prom.flag_value(["--web.listen-address=127.0.0.1:9191"], "--web.listen-address") == (
        "127.0.0.1:9191"
    )
    assert prom.flag_value(["--web.listen-address", ":9191"], "--web.listen-address") == ":9191"
    assert prom.flag_value(["--log.level=debug"], "--web.listen-address") is None


def test_heavy_batch_is_the_largest_request_the_default_limits_accept():
    settings = Settings()
    _, batch_request = request_models(settings.max_text_chars, settings.max_batch_items)
    body = drills.heavy_batch_body(["A fine film.", "Too long by half."])
    batch_request.model_validate(body)  # accepted
    assert len(body["texts"]) == settings.max_batch_items
    assert all(len(t) == settings.max_text_chars for t in body["texts"])
    assert len(json.dumps(body).encode()) < settings.max_body_bytes


def test_malformed_body_is_refused_by_the_contract():
    predict_request, _ = request_models(10_000, 64)
    predict_request.model_validate(drills.default_body(3))
    with pytest.raises(ValueError):
        predict_request.model_validate(drills.malformed_body(3))


def test_tampered_copy_fails_the_checksum_and_leaves_the_original_intact(small_model_dir, tmp_path):
    bad = drills.tampered_copy(small_model_dir, tmp_path / "bad")
    with pytest.raises(ChecksumMismatchError):
        load_model(bad)
    load_model(small_model_dir)  # the original still loads


def test_traffic_rejects_a_rate_that_is_not_positive():
    with pytest.raises(ValueError):
        drills.Traffic("http://127.0.0.1:1", rate=0)


def test_monitor_command_line_uses_our_config_and_data_folder_on_localhost():
    cmd = prom.command("/usr/bin/prometheus")
    assert f"--config.file={prom.CONFIG}" in cmd
    assert f"--storage.tsdb.path={prom.DATA_DIR}" in cmd
    assert "--web.listen-address=127.0.0.1:9090" in cmd


def test_a_flag_given_to_monitor_replaces_ours_of_the_same_name():
    """Prometheus refuses a flag given twice: the user's wins, in either spelling."""
    cmd = prom.command("/usr/bin/prometheus", overrides=["--web.listen-address=127.0.0.1:9191"])
    assert cmd[0] == "/usr/bin/prometheus" and cmd[-1] == "--web.listen-address=127.0.0.1:9191"
    assert [c for c in cmd if c.startswith("--web.listen-address")] == [cmd[-1]]
    assert f"--config.file={prom.CONFIG}" in cmd
    cmd = prom.command("/usr/bin/prometheus", overrides=["--storage.tsdb.path", "/tmp/p"])
    assert cmd[-2:] == ["--storage.tsdb.path", "/tmp/p"]
    assert not any(c.startswith("--storage.tsdb.path=") for c in cmd)
    assert "--web.listen-address=127.0.0.1:9090" in cmd


def test_read_log_includes_rotated_files_oldest_first(tmp_path):
    def line(request_id: str, status: int) -> str:
        fields = {"timestamp": "2026-01-01T00:00:00Z", "event": "request", "status": status}
        return json.dumps(fields | {"request_id": request_id})

    log = tmp_path / "requests.log"
    (tmp_path / "requests.log.2").write_text(line("a", 200) + "\n")
    (tmp_path / "requests.log.1").write_text(line("b", 422) + "\n")
    log.write_text(line("c", 503) + "\n")
    (tmp_path / "requests.log.bak").write_text("not json\n")  # not a rotated file: ignored
    frame = drills.read_log(log)
    assert frame["request_id"].tolist() == ["a", "b", "c"]
    assert str(frame["status"].dtype) == "Int64"


def test_every_runbook_link_lands_on_a_heading_of_its_lesson():
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    root = Path(__file__).resolve().parents[2]
    rules = yaml.safe_load((root / "monitoring" / "rules" / "alerts.yml").read_text())
    links = [
        rule["annotations"]["runbook"]
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert links
    for link in links:
        path, anchor = link.split("#")
        headings = re.findall(r"^#+ (.+)$", (root / path).read_text(), flags=re.M)
        anchors = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
        assert anchor in anchors, f"{link}: no such heading"

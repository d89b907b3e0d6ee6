"""The model's Prometheus rules: drift.yml is what the generator writes for the committed
reference, the PSI it computes is the textbook formula, and promtool's unit tests fire each
model alert on the series that should fire it (skipped without promtool, failed in CI)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from missing_tool import promtool

from monitoring import drift_rules

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "monitoring" / "tests"
ALERTS = ROOT / "monitoring" / "rules" / "model_alerts.yml"


def test_the_committed_rules_are_generated_from_the_committed_reference():
    version, reference = drift_rules.load_reference(drift_rules.REFERENCE_FILE)
    source = drift_rules.REFERENCE_FILE.relative_to(ROOT).as_posix()
    assert drift_rules.generate(version, reference, source) == drift_rules.RULES_FILE.read_text()


def test_the_command_prints_the_same_file():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitoring.drift_rules",
            "monitoring/tests/reference_metadata.json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == drift_rules.RULES_FILE.read_text()


def test_a_model_without_a_reference_is_refused(tmp_path):
    (tmp_path / "metadata.json").write_text(json.dumps({"version": "x"}))
    assert drift_rules.main([str(tmp_path)]) == 1


def test_bucket_bounds_are_written_as_the_python_client_writes_le():
    assert [drift_rules.go_float(v) for v in (5, 0.6, 1.0, 1000, "+Inf")] == [
        "5.0",
        "0.6",
        "1.0",
        "1000.0",
        "+Inf",
    ]
    prometheus_client = pytest.importorskip("prometheus_client.utils")
    for v in (5, 0.15, 1.0, 1000):
        assert drift_rules.go_float(v) == prometheus_client.floatToGoString(v)


def test_every_bucket_of_the_reference_has_a_share_rule():
    _, reference = drift_rules.load_reference(drift_rules.REFERENCE_FILE)
    text = drift_rules.RULES_FILE.read_text()
    for signal, metric in drift_rules.METRICS.items():
        bounds = reference["signals"][signal]["le"]
        for le in bounds:
            assert f'{{signal: "{signal}", bucket: "{drift_rules.bucket_name(le)}"' in text
            assert f'{metric}_bucket{{le="{drift_rules.go_float(le)}"}}' in text
        assert math.isclose(sum(reference["signals"][signal]["fractions"]), 1.0)


def test_promtool_accepts_the_model_rules():
    rules = [ROOT / "monitoring" / "rules" / n for n in ("drift.yml", "model_alerts.yml")]
    result = promtool("check", "rules", *map(str, rules))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_model_rules_unit_tests_pass():
    result = promtool("test", "rules", str(TESTS / "model_rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_model_alert_has_a_case_that_fires_it_and_the_control_fires_none():
    alerts = {
        line.split(":", 1)[1].strip()
        for line in ALERTS.read_text().splitlines()
        if line.strip().startswith("- alert:")
    }
    tests = (TESTS / "model_rules_test.yml").read_text()
    fired = {a for a in alerts if f"alertname: {a}\n        exp_alerts:\n          -" in tests}
    assert len(alerts) == 4 and fired == alerts
    control = tests.split('- name: "control')[1].split("- name:")[0]
    assert all(f"alertname: {a}, exp_alerts: []" in control for a in alerts)


def test_a_production_window_renames_the_rules_with_it():
    version, reference = drift_rules.load_reference(drift_rules.REFERENCE_FILE)
    text = drift_rules.generate(version, reference, window="1h")
    assert "[20s]" not in text and "ratio20s" not in text
    assert "job_signal:inference_drift:psi1h" in text and "[1h]" in text

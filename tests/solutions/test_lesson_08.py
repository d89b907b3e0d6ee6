"""Lesson 08's answers, checked and unit-tested by promtool: the InferenceQueueFilling alert
(exercise 1) and the delay production windows add (exercise 3).

Skipped where Prometheus is not installed, failed in CI (which installs it), as
tests/e2e/test_monitoring.py does."""

from __future__ import annotations

from pathlib import Path

from missing_tool import promtool

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "lessons" / "08_debugging" / "solutions"


def test_the_alert_is_a_valid_rule():
    result = promtool("check", "rules", str(SOLUTIONS / "queue_filling.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_fires_when_the_queue_stays_over_half_and_not_on_a_spike():
    result = promtool("test", "rules", str(SOLUTIONS / "queue_filling_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_windows_page_five_and_a_half_minutes_late():
    result = promtool("check", "rules", str(SOLUTIONS / "production_windows.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    result = promtool("test", "rules", str(SOLUTIONS / "production_windows_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr

"""Lesson 11's answers: the InferenceReferenceStale alert of exercise 1, checked and
unit-tested by promtool (skipped where Prometheus is not installed, failed in CI)."""

from __future__ import annotations

from pathlib import Path

from answers import solution
from missing_tool import promtool

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "lessons" / "11_monitoring" / "solutions"


def test_the_alert_is_a_valid_rule():
    result = promtool("check", "rules", str(SOLUTIONS / "stale_reference.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_fires_when_the_served_model_is_not_the_reference_s():
    result = promtool("test", "rules", str(SOLUTIONS / "stale_reference_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_its_model_version_is_the_committed_reference_s():
    """The test's silent case serves the version drift.yml was generated for."""
    from monitoring.drift_rules import REFERENCE_FILE, load_reference

    version, _ = load_reference(REFERENCE_FILE)
    assert f'version="{version}"' in (SOLUTIONS / "stale_reference_test.yml").read_text()


def test_psi_of_few_texts_from_the_reference_is_noise_and_seven_percent_garbage_fires():
    """Exercises 2 and 3, as the answers state them."""
    psi_noise = solution("11_monitoring", "psi_noise")
    few, enough = psi_noise.noise("tokens", 100), psi_noise.noise("tokens", 200)
    assert 0.09 < few["mean"] < 0.12 and 0.02 < few["share over 0.25"] < 0.05
    assert 0.04 < enough["mean"] < 0.055 and enough["share over 0.25"] < 0.002
    assert psi_noise.garbage_psi(0.06) < 0.25 < psi_noise.garbage_psi(0.07)

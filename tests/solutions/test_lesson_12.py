"""Lesson 12's answers: exercise 1's alert (the shadow skips texts) is a valid rule and its
promtool test passes; exercise 3's walk through the registry is what the code does.

The promtool checks are skipped where Prometheus is not installed and fail in CI (which
installs it), as tests/e2e/test_monitoring.py does."""

from __future__ import annotations

import json
from pathlib import Path

from missing_tool import promtool

from sentiment_model import registry

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "lessons" / "12_rollout" / "solutions"


def test_exercise_1_the_alert_is_valid_and_fires_only_when_the_shadow_keeps_skipping():
    result = promtool("check", "rules", str(SOLUTIONS / "shadow_skipping.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    result = promtool("test", "rules", str(SOLUTIONS / "shadow_skipping_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_exercise_3_two_rollbacks_after_two_promotions(tmp_path):
    """A, then B and C promoted, then two rollbacks: LATEST names A; a third is refused."""
    for name in ("sentiment-aaaaaaaaaaaa", "sentiment-bbbbbbbbbbbb", "sentiment-cccccccccccc"):
        (tmp_path / name).mkdir()
    (tmp_path / "LATEST").write_text("sentiment-cccccccccccc\n")
    lines = [
        {"action": "promote", "outcome": "promoted", "artifact": "sentiment-bbbbbbbbbbbb",
         "previous": "sentiment-aaaaaaaaaaaa"},
        {"action": "promote", "outcome": "refused", "artifact": "sentiment-dddddddddddd",
         "previous": "sentiment-bbbbbbbbbbbb"},
        {"action": "promote", "outcome": "promoted", "artifact": "sentiment-cccccccccccc",
         "previous": "sentiment-bbbbbbbbbbbb"},
    ]  # fmt: skip
    (tmp_path / registry.REGISTRY_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert registry.rollback(tmp_path).ok
    assert registry.current_default(tmp_path) == "sentiment-bbbbbbbbbbbb"
    assert registry.rollback(tmp_path).ok
    assert registry.current_default(tmp_path) == "sentiment-aaaaaaaaaaaa"
    assert registry.rollback(tmp_path).code == registry.EXIT_NOTHING_TO_ROLL_BACK

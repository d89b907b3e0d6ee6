"""The rollout rules (monitoring/rules/rollout.yml) without promtool: every alert has a
severity, a `for:` or a reason not to, a runbook that lands on a heading of lesson 12, and a
unit test in monitoring/tests/rollout_test.yml that fires it (tests/e2e/test_monitoring.py runs
those tests with promtool, with the other rule tests)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "rules" / "rollout.yml"
TESTS = ROOT / "monitoring" / "tests" / "rollout_test.yml"


def alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_each_alert_has_a_severity_and_a_runbook_on_a_heading_of_lesson_12():
    found = alerts()
    assert [a["alert"] for a in found] == [
        "InferenceShadowDisagreementHigh",
        "InferenceCanaryErrorRatioHigh",
        "InferenceModelReloadFailed",
    ]
    for alert in found:
        assert alert["labels"]["severity"] in ("critical", "warning", "info")
        path, anchor = alert["annotations"]["runbook"].split("#")
        assert path == "lessons/12_rollout/README.md"
        headings = re.findall(r"^#+ (.+)$", (ROOT / path).read_text(), flags=re.M)
        anchors = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
        assert anchor in anchors, f"{alert['alert']}: no heading for #{anchor}"


def test_each_alert_fires_in_a_test_and_each_is_silent_on_a_healthy_rollout():
    tests = yaml.safe_load(TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    [healthy] = [t for t in tests if t["name"] == "healthy rollout"]
    silent = {c["alertname"] for c in healthy["alert_rule_test"] if not c["exp_alerts"]}
    names = {a["alert"] for a in alerts()}
    assert fired == names and silent == names

"""Prometheus and its rules: promtool checks and unit tests, `tasks.py monitor`, and no alert
on a healthy server under ordinary load (a real server, a real Prometheus)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from missing_tool import missing_tool

from loadtest.launcher import StageServer, free_port
from monitoring import drills
from monitoring.prom import CONFIG, RULES_DIR, find_binary

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def need(binary: str) -> str:
    """The binary's path; skip where Prometheus is not installed, but fail in CI (CI=true),
    which installs it (.ci/run)."""
    path = find_binary(binary)
    if path is None:
        missing_tool(f"{binary} not installed (Debian: apt-get install prometheus)")
    return path


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [need("promtool"), *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_promtool_accepts_the_config():
    result = promtool("check", "config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", *map(str, sorted(RULES_DIR.glob("*.yml"))))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass():
    tests = sorted((ROOT / "monitoring" / "tests").glob("*.yml"))
    assert tests
    result = promtool("test", "rules", *map(str, tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fires_it():
    alerts = {
        line.split(":", 1)[1].strip()
        for line in (RULES_DIR / "alerts.yml").read_text().splitlines()
        if line.strip().startswith("- alert:")
    }
    tests = "".join(p.read_text() for p in (ROOT / "monitoring" / "tests").glob("*.yml"))
    fired = {a for a in alerts if f"alertname: {a}\n        exp_alerts:\n          -" in tests}
    assert alerts and fired == alerts


def test_monitor_command_runs_prometheus_and_stops_cleanly_on_sigterm(tmp_path):
    """`monitor --port P` scrapes the server on P (it used to scrape 8000 whatever it was told)
    and prints the pages of this Prometheus build (Debian's 2.42: /classic/alerts)."""
    need("prometheus")
    port, server_port = free_port(), free_port()
    listen, data = f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={tmp_path}"
    proc = subprocess.Popen(
        [sys.executable, "tasks.py", "monitor", "--port", str(server_port), listen, data],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        deadline = time.monotonic() + 60
        for line in proc.stdout:  # bounded: the pages are printed once it is ready, or it exits
            lines.append(line.rstrip())
            if line.startswith("  targets: ") or time.monotonic() > deadline:
                break
        out = "\n".join(lines)
        assert f"Prometheus scrapes 127.0.0.1:{server_port} every second" in out, out
        pages = dict(x.strip().split(": ", 1) for x in lines if x.startswith("  "))
        assert set(pages) == {"graph", "alerts", "targets"}, out
        for url in pages.values():  # each printed page is there, not a redirect or a 404
            assert url.startswith(f"http://127.0.0.1:{port}/")
            assert httpx.get(url, timeout=5).status_code == 200, url
        rules = httpx.get(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5).json()
        names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert "InferenceTargetDown" in names and "job:http_requests:rate10s" in names
        scraped, deadline = [], time.monotonic() + 20
        while not scraped and time.monotonic() < deadline:  # discovered a moment after start
            targets = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()
            scraped = [t["scrapeUrl"] for t in targets["data"]["activeTargets"]]
            time.sleep(0.2)
        assert scraped == [f"http://127.0.0.1:{server_port}/metrics"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_no_alert_fires_on_a_healthy_server_under_ordinary_load(tmp_path):
    need("prometheus")
    env = {"INFERENCE_LOG_PATH": str(tmp_path / "requests.log")}
    server = StageServer("fast", env=env, log_path=tmp_path / "stdout.log")
    with server, drills.Prometheus(server.url) as prom:
        prom.wait_scraped()
        with drills.Traffic(server.url, rate=100) as traffic:
            time.sleep(15)  # longer than every rate window and `for:` of the rules
            alerts = prom.alerts()
            rate = prom.value("job:http_requests:rate10s")
            errors = prom.value("job:http_requests_5xx:ratio_rate10s")
        answers = traffic.frame()
    assert (answers["status"] == 200).all(), answers["status"].value_counts()
    assert rate > 10 and errors == 0  # the rules see the traffic ...
    assert alerts.empty, alerts  # ... and find nothing wrong: nothing pending, nothing firing

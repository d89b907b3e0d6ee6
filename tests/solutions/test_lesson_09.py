"""Lesson 09's answers: the sizing arithmetic from the committed worker runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from answers import solution

ROOT = Path(__file__).resolve().parents[2]
SOLUTION = ROOT / "lessons" / "09_scale_out" / "solutions" / "sizing.py"


def load_solution():
    return solution("09_scale_out", "sizing")


def test_short_texts_give_the_lessons_four_replicas():
    sizing = load_solution()
    cpu = sizing.cpu_ms_per_request("short")
    assert cpu == pytest.approx(0.285)
    s = sizing.size(cpu, 10_000)
    assert s["per_core"] == pytest.approx(3_500, rel=0.01)  # "≈ 3,500 requests/s per core"
    assert s["planned_per_core"] == pytest.approx(2_275, rel=0.01)
    assert s["per_replica"] == pytest.approx(4_550, rel=0.01)
    assert (s["replicas"], s["cores"]) == (4, 8)


def test_long_reviews_need_six_replicas():
    sizing = load_solution()
    cpu = sizing.cpu_ms_per_request("long")
    assert cpu == pytest.approx(0.597)
    s = sizing.size(cpu, 10_000)
    assert s["per_core"] == pytest.approx(1_675, rel=0.01)
    assert (s["replicas"], s["cores"]) == (6, 12)
    assert sizing.size(cpu, 10_000, utilization=0.75)["replicas"] == 5


def test_the_script_runs():
    result = subprocess.run(
        [sys.executable, str(SOLUTION)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "4 replicas (8 cores)" in result.stdout
    assert "6 replicas (12 cores)" in result.stdout

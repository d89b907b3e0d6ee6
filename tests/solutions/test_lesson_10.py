"""The runnable answer of lesson 10 (lessons/10_price/solutions/): exercise 2's ratios agree
with what the committed run's headline-summary.csv and headline.md report."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

SOLUTIONS = Path(__file__).resolve().parents[2] / "lessons" / "10_price" / "solutions"


def solution(name: str) -> ModuleType:
    """lessons/10_price/solutions/<name>.py, imported by path (lessons/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"lesson10_{name}", SOLUTIONS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exercise_2_the_median_of_paired_ratios_is_what_the_run_reports():
    paired = solution("paired_ratios")
    table = paired.ratios().set_index("profile")
    head = pd.read_csv(paired.RUN / "headline-summary.csv").set_index(["stage", "profile", "users"])
    for profile, row in table.iterrows():
        reported = head.loc[("fast", profile, row["users"])]
        assert row["median_of_ratios"] == pytest.approx(reported["vs_bare"], rel=1e-3)
        assert row["lowest"] == pytest.approx(reported["vs_bare_min"], rel=1e-3)
        assert row["highest"] == pytest.approx(reported["vs_bare_max"], rel=1e-3)
        assert row["rounds"] >= 3
        assert row["lowest"] <= row["ratio_of_medians"] <= row["highest"]

"""The runnable answer of lesson 10 (lessons/10_price/solutions/): exercise 2's ratios agree
with what the committed run's headline-summary.csv and headline.md report."""

from __future__ import annotations

from functools import partial

import pandas as pd
import pytest
from answers import solution as lesson_solution

solution = partial(lesson_solution, "10_price")


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

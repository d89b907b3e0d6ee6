"""The notebooks run as tests (nbmake); each takes from seconds to minutes, so all are ``slow``."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# The drills spend most of their minutes waiting for Prometheus' windows and alerts: the whole
# suite (tasks.py test) runs them in a lane of their own, beside everything else.
DRILLS = {"08_debugging.ipynb", "11_model_monitoring.ipynb", "12_rollout.ipynb"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every notebook ``slow`` (deselect with ``-m "not slow"``), and put it in its lane
    (pytest-xdist's ``--dist loadgroup``; without -n the groups change nothing)."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)
            lane = "drills" if item.path.name in DRILLS else "main"
            item.add_marker(pytest.mark.xdist_group(lane))

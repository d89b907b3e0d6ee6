"""End-to-end tests: real server processes, locust, subprocesses. All of them are ``slow``."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

# test_shutdown.py still imports serving.lifecycle, which is now serving/state.py,
# dependencies.py, rejections.py and shutdown.py; its rewrite on the shared launcher replaces
# it. Until then test_serve.py covers the shutdown of a real process.
collect_ignore = (
    [] if (HERE.parents[1] / "serving" / "lifecycle.py").is_file() else ["test_shutdown.py"]
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this directory ``slow`` (deselect with ``-m "not slow"``)."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)

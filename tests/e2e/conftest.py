"""End-to-end tests: real server processes, locust, subprocesses. All of them are ``slow``."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this directory ``slow`` (deselect with ``-m "not slow"``)."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)

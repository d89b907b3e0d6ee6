"""What a test does when a tool it needs is not installed: skip on a student's machine, but
fail in CI (``CI=true``), whose ``.ci/run`` installs every tool the suite uses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]


def missing_tool(message: str) -> NoReturn:
    """Skip the calling test with ``message``, or fail it when running in CI."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI must have it")
    pytest.skip(message)


def promtool(*args: str) -> subprocess.CompletedProcess:
    """``promtool ARGS`` run from the repository root; a missing promtool is
    :func:`missing_tool` (Debian and Ubuntu ship it in the ``prometheus`` package)."""
    from monitoring.prom import find_binary  # the repository's own lookup (PATH, then Debian's)

    binary = find_binary("promtool")
    if binary is None:
        missing_tool("promtool not installed (Debian: apt-get install prometheus)")
    return subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)

"""A lesson's runnable answer, imported by path: lessons/ is not a package.

``from answers import solution`` works because pytest's default "prepend" import mode puts this
folder (no ``__init__.py``) on ``sys.path``, as tests/stages/gating.py relies on too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

LESSONS = Path(__file__).resolve().parents[2] / "lessons"


def solution(lesson: str, name: str) -> ModuleType:
    """``lessons/<lesson>/solutions/<name>.py`` as a module of its own."""
    path = LESSONS / lesson / "solutions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"lesson_{lesson}_{name}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

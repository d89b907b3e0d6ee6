"""Import a stage's server file for a test: every stage's module is named `inference_server`."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def import_stage(path: Path) -> ModuleType:
    """Import ``path`` as a fresh module under a unique name, so stages and settings never mix."""
    spec = importlib.util.spec_from_file_location(f"stage_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

"""The stage registry (serving/stages.py): every entry points at files that exist, and tasks.py
and the benchmark read it instead of keeping copies."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from serving.stages import BASELINE_STAGE, FINAL_STAGE, STAGES

ROOT = Path(__file__).resolve().parents[2]


def test_every_stage_points_at_its_code_lesson_and_notebooks() -> None:
    assert list(STAGES) == [
        "naive", "validated", "metrics", "batched", "lifecycle", "hardened", "fast", "lean"
    ]  # fmt: skip
    assert {BASELINE_STAGE, FINAL_STAGE} <= set(STAGES)
    for name, stage in STAGES.items():
        assert stage.name == name
        module = stage.app.split(":")[0].replace(".", "/") + ".py"
        assert (ROOT / stage.app_dir / module).is_file(), name
        assert (ROOT / stage.lesson_dir / "README.md").is_file(), name
        # Every stage has a notebook but lifecycle and hardened (the course map gives them none).
        assert stage.notebooks or name in ("lifecycle", "hardened"), name
        assert all((ROOT / nb).is_file() for nb in stage.notebooks), name


def test_the_registry_needs_only_the_standard_library() -> None:
    # tasks.py imports it before .venv exists.
    tree = ast.parse((ROOT / "serving" / "stages.py").read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def test_tasks_and_the_benchmark_use_the_registry() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        import tasks
    finally:
        sys.path.remove(str(ROOT))
    from loadtest import bench, runner

    assert tasks.STAGES is STAGES and bench.STAGES is STAGES
    assert set(STAGES) <= set(runner.SERVERS)


def test_each_stage_differs_from_the_one_before_by_one_lessons_worth() -> None:
    """Issue 17: consecutive stage files differ by at most about 120 changed lines (removed plus
    added, as `diff A B | grep -c '^[<>]'` counts them), so each lesson's diff is one idea."""
    import difflib
    import itertools

    files = [ROOT / stage.app_dir / "inference_server.py" for stage in STAGES.values()]
    for before, after in itertools.pairwise(files):
        diff = difflib.unified_diff(
            before.read_text().splitlines(), after.read_text().splitlines(), n=0, lineterm=""
        )
        changed = sum(1 for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---"))
        assert changed <= 125, f"{before.relative_to(ROOT)} -> {after.relative_to(ROOT)}: {changed}"

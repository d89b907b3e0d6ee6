"""The promotion gate, rollback and the file registry (sentiment_model/registry.py), on a
temporary models root: the student's models/LATEST is never read or changed here.

The artifacts are copies of the small test model with the metrics and test split written into
their metadata; the server smoke test is replaced by a stub (tests/e2e/test_promotion.py starts
real servers).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from sentiment_model import registry
from sentiment_model.artifact import read_metadata
from sentiment_model.registry import (
    EXIT_DIFFERENT_SPLIT,
    EXIT_METRICS_REGRESSED,
    EXIT_NOTHING_TO_ROLL_BACK,
    EXIT_OK,
    EXIT_SMOKE_FAILED,
    EXIT_UNKNOWN_VERSION,
    GateError,
)

ROOT = Path(__file__).resolve().parents[2]
SPLIT = "a" * 64


def report(accuracy: float, auc: float, imdb: float, rt: float) -> dict:
    """metadata["metrics"] as train.py writes it (only the fields the gate reads)."""
    return {
        "test": {
            "overall": {"accuracy": accuracy, "roc_auc": auc},
            "by_source": {"imdb": {"accuracy": imdb}, "rotten_tomatoes": {"accuracy": rt}},
        }
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    return models


@pytest.fixture
def make(root: Path, small_model_dir: Path):
    """``make(version, accuracy=..., split=...)``: an artifact in the temporary root, the small
    model's files with this version and these test metrics in its metadata."""

    def make(version: str, accuracy: float = 0.85, auc: float = 0.92, split: str | None = SPLIT,
             latest: bool = False, **data) -> str:  # fmt: skip
        folder = root / f"sentiment-{version}"
        shutil.copytree(small_model_dir, folder)
        meta = json.loads((folder / "metadata.json").read_text())
        meta["version"] = version
        meta["metrics"] = report(accuracy, auc, accuracy + 0.02, accuracy - 0.06)
        meta["data"] = meta["data"] | {"test_sha256": split} | data
        if split is None:
            del meta["data"]["test_sha256"]
        (folder / "metadata.json").write_text(json.dumps(meta))
        if latest:
            (root / "LATEST").write_text(folder.name + "\n")
        return folder.name

    return make


def passes(artifact: Path) -> dict:
    return {"passed": "4/4", "artifact": artifact.name}


def fails(artifact: Path) -> dict:
    raise GateError("smoke", EXIT_SMOKE_FAILED, "smoke test failed: 4 of 4 answers wrong")


def latest(root: Path) -> str:
    return (root / "LATEST").read_text().strip()


def test_a_candidate_that_passes_every_check_becomes_the_default(root, make):
    stable = make("aaaaaaaaaaaa", accuracy=0.85, latest=True)
    better = make("bbbbbbbbbbbb", accuracy=0.86)
    decision = registry.promote("bbbbbbbbbbbb", root, smoke=passes)
    assert decision.code == EXIT_OK and latest(root) == better
    [entry] = registry.history(root)
    assert entry == decision.entry
    assert entry["action"] == "promote" and entry["outcome"] == "promoted"
    assert entry["version"] == "bbbbbbbbbbbb" and entry["previous"] == stable
    assert entry["failed_check"] is None and set(entry["checks"]) == {"split", "metrics", "smoke"}
    figures = entry["checks"]["metrics"]["figures"]
    assert figures["accuracy"] == {"candidate": 0.86, "current": 0.85, "change": 0.01}
    assert set(figures) == {"accuracy", "roc_auc", "source_balanced_accuracy"}
    assert entry["time"] and entry["by"]


def test_a_folder_name_is_as_good_as_a_version(root, make):
    make("aaaaaaaaaaaa", latest=True)
    name = make("bbbbbbbbbbbb")
    assert registry.promote(name, root, smoke=passes).ok and latest(root) == name


def test_an_unknown_version_is_refused_and_named(root, make, caplog):
    stable = make("aaaaaaaaaaaa", latest=True)
    decision = registry.promote("ffffffffffff", root, smoke=passes)
    assert decision.code == EXIT_UNKNOWN_VERSION and latest(root) == stable
    assert "unknown version 'ffffffffffff'" in decision.entry["reason"]
    assert stable in decision.entry["reason"]  # what there is, to choose from
    assert registry.history(root)[-1]["failed_check"] == "version"


def test_regressed_metrics_are_refused_with_the_figures(root, make):
    stable = make("aaaaaaaaaaaa", accuracy=0.85, latest=True)
    make("bbbbbbbbbbbb", accuracy=0.84)
    smoked = []
    decision = registry.promote("bbbbbbbbbbbb", root, smoke=lambda a: smoked.append(a) or {})
    assert decision.code == EXIT_METRICS_REGRESSED and latest(root) == stable
    assert smoked == []  # the gate stops at the first failed check
    reason = decision.entry["reason"]
    assert "accuracy 0.8400 vs 0.8500 (-0.0100)" in reason and "tolerance of 0.005" in reason
    assert decision.entry["checks"]["metrics"]["figures"]["accuracy"]["change"] == -0.01


def test_a_change_within_the_tolerance_passes_and_the_tolerance_can_be_set(root, make):
    make("aaaaaaaaaaaa", accuracy=0.85, latest=True)
    make("bbbbbbbbbbbb", accuracy=0.846)
    make("cccccccccccc", accuracy=0.80)
    assert registry.promote("bbbbbbbbbbbb", root, smoke=passes).ok  # -0.004: within 0.005
    assert registry.promote("cccccccccccc", root, tolerance=0.01, smoke=passes).code == 4
    assert registry.promote("cccccccccccc", root, tolerance=0.1, smoke=passes).ok


def test_a_candidate_without_test_metrics_is_refused(root, make):
    make("aaaaaaaaaaaa", latest=True)
    name = make("bbbbbbbbbbbb")
    meta = json.loads((root / name / "metadata.json").read_text())
    (root / name / "metadata.json").write_text(json.dumps(meta | {"metrics": {}}))
    decision = registry.promote("bbbbbbbbbbbb", root, smoke=passes)
    assert decision.code == EXIT_METRICS_REGRESSED and "nothing to compare" in str(decision.entry)


def test_metrics_from_another_test_split_are_refused(root, make):
    stable = make("aaaaaaaaaaaa", latest=True)
    make("bbbbbbbbbbbb", accuracy=0.99, split="b" * 64)
    decision = registry.promote("bbbbbbbbbbbb", root, smoke=passes)
    assert decision.code == EXIT_DIFFERENT_SPLIT and latest(root) == stable
    assert "different test splits" in decision.entry["reason"]


def test_older_metadata_without_the_fingerprint_compares_seed_and_sizes(root, make):
    rows = {"imdb": 2490, "rotten_tomatoes": 854}
    make("aaaaaaaaaaaa", split=None, latest=True, split_seed=42, rows_by_source={"test": rows})
    make("bbbbbbbbbbbb", split=SPLIT, split_seed=42, rows_by_source={"test": rows})
    make("cccccccccccc", split=SPLIT, split_seed=7, rows_by_source={"test": rows})
    assert registry.promote("cccccccccccc", root, smoke=passes).code == EXIT_DIFFERENT_SPLIT
    assert registry.promote("bbbbbbbbbbbb", root, smoke=passes).ok


def test_a_failed_smoke_test_leaves_the_default(root, make):
    stable = make("aaaaaaaaaaaa", latest=True)
    make("bbbbbbbbbbbb", accuracy=0.9)
    decision = registry.promote("bbbbbbbbbbbb", root, smoke=fails)
    assert decision.code == EXIT_SMOKE_FAILED and latest(root) == stable
    assert decision.entry["failed_check"] == "smoke" and decision.entry["outcome"] == "refused"


def test_the_first_promotion_has_nothing_to_compare_with(root, make):
    name = make("aaaaaaaaaaaa")
    decision = registry.promote("aaaaaaaaaaaa", root, smoke=passes)
    assert decision.ok and latest(root) == name and decision.entry["previous"] is None


def test_rollback_walks_back_through_the_promotions(root, make):
    a = make("aaaaaaaaaaaa", accuracy=0.85, latest=True)
    b = make("bbbbbbbbbbbb", accuracy=0.86)
    c = make("cccccccccccc", accuracy=0.87)
    assert registry.promote("bbbbbbbbbbbb", root, smoke=passes).ok
    assert registry.promote("cccccccccccc", root, smoke=passes).ok
    first = registry.rollback(root)
    assert first.ok and latest(root) == b and first.entry["previous"] == c
    assert registry.rollback(root).ok and latest(root) == a  # the default before the first
    nothing = registry.rollback(root)
    assert nothing.code == EXIT_NOTHING_TO_ROLL_BACK and latest(root) == a
    assert "nothing to roll back" in nothing.entry["reason"]
    outcomes = [(e["action"], e["outcome"], e["artifact"]) for e in registry.history(root)]
    assert outcomes == [
        ("promote", "promoted", b),
        ("promote", "promoted", c),
        ("rollback", "rolled_back", b),
        ("rollback", "rolled_back", a),
    ]


def test_rollback_after_a_retrain_returns_to_the_last_promoted_version(root, make):
    make("aaaaaaaaaaaa", latest=True)
    b = make("bbbbbbbbbbbb", accuracy=0.86)
    assert registry.promote("bbbbbbbbbbbb", root, smoke=passes).ok
    make("dddddddddddd", latest=True)  # `make model` wrote LATEST itself
    assert registry.rollback(root).ok and latest(root) == b


def test_nothing_to_roll_back_without_a_registry(root, make):
    make("aaaaaaaaaaaa", latest=True)
    assert registry.rollback(root).code == EXIT_NOTHING_TO_ROLL_BACK
    assert registry.history(root) == []


def test_the_command_line_returns_the_exit_statuses(root, make, monkeypatch, capsys):
    make("aaaaaaaaaaaa", accuracy=0.85, latest=True)
    make("bbbbbbbbbbbb", accuracy=0.70)
    make("cccccccccccc", accuracy=0.86)
    monkeypatch.setattr(registry, "smoke_test", passes)
    args = ["--models-root", str(root)]
    assert registry.main([*args, "promote", "ffffffffffff"]) == EXIT_UNKNOWN_VERSION
    assert registry.main([*args, "promote", "bbbbbbbbbbbb"]) == EXIT_METRICS_REGRESSED
    assert registry.main(["promote", "cccccccccccc", *args]) == EXIT_OK
    assert registry.main(["rollback", *args]) == EXIT_OK
    assert registry.main(["rollback", *args]) == EXIT_NOTHING_TO_ROLL_BACK
    capsys.readouterr()
    assert registry.main(["history", *args]) == EXIT_OK
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["outcome"] for x in lines] == ["refused", "refused", "promoted", "rolled_back"]


def test_no_smoke_is_allowed_but_recorded(root, make):
    make("aaaaaaaaaaaa", latest=True)
    decision = registry.main(["--models-root", str(root), "promote", "--no-smoke", "aaaaaaaaaaaa"])
    assert decision == EXIT_OK  # already the default: nothing to do, nothing recorded
    make("bbbbbbbbbbbb", accuracy=0.86)
    assert registry.main(["--models-root", str(root), "promote", "bbbbbbbbbbbb", "--no-smoke"]) == 0
    assert registry.history(root)[-1]["checks"]["smoke"] == "skipped (--no-smoke)"


def test_the_small_models_metadata_holds_the_test_split_fingerprint(small_model_dir):
    assert len(read_metadata(small_model_dir).data["test_sha256"]) == 64


def test_tasks_py_delegates_promote_and_rollback(monkeypatch):
    spec = importlib.util.spec_from_file_location("tasks_for_registry", ROOT / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    ran = []
    monkeypatch.setattr(tasks, "in_venv", lambda *cmd, **kw: ran.append((cmd, kw)) or 0)
    assert tasks.main(["promote", "1a2b3c4d5e6f", "--models-root", "/tmp/m"]) == 0
    assert tasks.main(["rollback"]) == 0
    assert [cmd for cmd, _ in ran] == [
        ("-m", "sentiment_model.registry", "promote", "1a2b3c4d5e6f", "--models-root", "/tmp/m"),
        ("-m", "sentiment_model.registry", "rollback"),
    ]
    assert all(kw == {"stop_is_clean": False, "train": False} for _, kw in ran)

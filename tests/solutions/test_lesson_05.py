"""Lesson 5's runnable answers (lessons/05_lifecycle/solutions/) give the outcomes its
solutions/README.md states. In-process, with the small test model: a few seconds."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import yaml
from answers import solution as lesson_solution

SOLUTIONS = Path(__file__).resolve().parents[2] / "lessons" / "05_lifecycle" / "solutions"


solution = partial(lesson_solution, "05_lifecycle")


def lifecycle_stage(start_stage) -> str:
    """Stage 5 where it exists; before, the final stage, which loads in the background too."""
    return "lifecycle" if "lifecycle" in start_stage.modules else "batched"


def test_exercise_1_the_probes_against_a_model_that_cannot_load(start_stage, tmp_path) -> None:
    probes = yaml.safe_load((SOLUTIONS / "probes.yaml").read_text())
    stage = lifecycle_stage(start_stage)
    with start_stage(stage, MODEL_DIR=tmp_path / "nowhere", ready=False) as client:
        server = client.app.state.server
        start_stage.wait_until(lambda: server.load_error is not None, "the load did not fail")
        live = client.get(probes["livenessProbe"]["httpGet"]["path"])
        assert live.status_code == 200 and live.json()["model_loaded"] is False
        for probe in ("readinessProbe", "startupProbe"):
            ready = client.get(probes[probe]["httpGet"]["path"])
            assert ready.status_code == 503 and ready.headers["retry-after"] == "60"
            assert "model directory does not exist" in ready.json()["reason"]
        assert client.post("/predict", json={"text": "good"}).status_code == 503


def test_exercise_3_gc_freeze_leaves_nothing_long_lived_to_scan(small_model_dir) -> None:
    outcome = solution("gc_freeze").measure(str(small_model_dir), rounds=1)
    assert outcome["frozen"] > 10_000  # the libraries' objects and the model's
    assert outcome["objects_with_model"] - outcome["objects_before_load"] < 5_000
    assert outcome["objects_left_to_scan"] < 1_000


def test_exercise_4_first_second_and_third_signal() -> None:
    assert solution("signals_check").three_signals() == [
        "begin_shutdown: readiness flips",
        "server handler",
        "logged second_signal",
        "on_second",
        "server handler",
    ]

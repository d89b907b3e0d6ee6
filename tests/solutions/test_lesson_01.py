"""Lesson 01's answers: what the naive stage says to wrong types and a misspelt field, and how
it fails when its model is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("body", "error_type"),
    [({"text": 12345}, "string_type"), ({"text": ["a", "b"]}, "string_type")],
)
def test_exercise_1_wrong_types_are_422_not_500(start_stage, body, error_type):
    with start_stage("naive") as client:
        r = client.post("/predict", json=body)
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert (error["type"], error["loc"]) == (error_type, ["body", "text"])


def test_exercise_1_a_misspelt_field_reads_as_a_missing_one(start_stage):
    with start_stage("naive") as client:
        r = client.post("/predict", json={"txt": "good"})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert (error["type"], error["loc"]) == ("missing", ["body", "text"])
    assert "txt" not in str(error["loc"])  # nothing names the field that was sent


def test_exercise_3_a_missing_model_stops_uvicorn_with_exit_1(tmp_path):
    env = os.environ | {"INFERENCE_MODEL_DIR": str(tmp_path / "no-such-model")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            "lessons/01_naive",
            "inference_server:app",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "ArtifactNotFoundError" in result.stderr
    assert "model directory does not exist" in result.stderr

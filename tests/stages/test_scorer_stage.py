"""The final stage picks its scorer from INFERENCE_SCORER and says which one it uses."""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sentiment_model import load_model
from serving.logs import flush_logs

ROOT = Path(__file__).resolve().parents[2]


def final_stage(monkeypatch, **env):
    """A fresh import of the final stage (its own settings, registry and log)."""
    for name, value in env.items():
        monkeypatch.setenv(f"INFERENCE_{name}", str(value))
    spec = importlib.util.spec_from_file_location(
        f"stage_{uuid.uuid4().hex}", ROOT / "inference_server.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def served_lines(module, log_path: Path, texts: list[str]) -> tuple[list[dict], list[dict]]:
    """Start the app, predict ``texts``, stop it; return (answers, JSON log lines)."""
    with TestClient(module.app) as client:
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.02)
        answers = [client.post("/predict", json={"text": t}).json() for t in texts]
    flush_logs()  # the final stage writes its log in a background thread
    lines = [json.loads(x) for x in log_path.read_text(encoding="utf-8").splitlines()]
    return answers, lines


TEXTS = ["A wonderful, moving film.", "Terrible and boring.", "Café crème, naïve!"]


@pytest.mark.parametrize("setting,expected", [(None, "direct"), ("sklearn", "sklearn")])
def test_scorer_setting(monkeypatch, tmp_path, small_model_dir, setting, expected):
    env = {"MODEL_DIR": small_model_dir, "LOG_PATH": tmp_path / "r.log"}
    if setting:
        env["SCORER"] = setting
    module = final_stage(monkeypatch, **env)
    answers, lines = served_lines(module, tmp_path / "r.log", TEXTS)
    [loaded] = [x for x in lines if x["event"] == "model_loaded"]
    assert loaded["scorer"] == expected
    assert loaded["settings"]["scorer"] == (setting or "direct")
    reference = load_model(small_model_dir).predict(TEXTS)
    assert [a["label"] for a in answers] == [p.label for p in reference]
    assert [a["score"] for a in answers] == pytest.approx([p.score for p in reference], abs=1e-9)


def test_unsupported_pipeline_falls_back_to_sklearn_with_a_warning(
    monkeypatch, tmp_path, small_model_dir
):
    module = final_stage(monkeypatch, MODEL_DIR=small_model_dir, LOG_PATH=tmp_path / "r.log")

    def load_binary_tf(path):
        model = load_model(path)
        model.pipeline.steps[0][1].set_params(analyzer="char_wb")  # not reproduced: refused
        return model

    monkeypatch.setattr(module, "load_model", load_binary_tf)
    answers, lines = served_lines(module, tmp_path / "r.log", TEXTS[:1])
    [refused] = [x for x in lines if x["event"] == "direct_scorer_refused"]
    assert refused["level"] == "WARNING" and "analyzer='char_wb'" in refused["problem"]
    [loaded] = [x for x in lines if x["event"] == "model_loaded"]
    assert loaded["scorer"] == "sklearn"
    assert answers[0]["label"] in ("positive", "negative")


def test_bad_scorer_setting_stops_start_up(monkeypatch, tmp_path):
    with pytest.raises(SystemExit, match="INFERENCE_SCORER"):
        final_stage(monkeypatch, SCORER="onnx", LOG_PATH=tmp_path / "r.log")

"""The final stage picks its scorer from INFERENCE_SCORER and says which one it uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentiment_model import load_model
from serving.logs import flush_logs


def served_lines(
    start_stage, log_path: Path, texts: list[str], **settings
) -> tuple[list[dict], list[dict]]:
    """Start the final stage, predict ``texts``, stop it; return (answers, JSON log lines)."""
    with start_stage("fast", log_path=log_path, **settings) as client:
        answers = [client.post("/predict", json={"text": t}).json() for t in texts]
    flush_logs()  # the final stage writes its log in a background thread
    lines = [json.loads(x) for x in log_path.read_text(encoding="utf-8").splitlines()]
    return answers, lines


TEXTS = ["A wonderful, moving film.", "Terrible and boring.", "Café crème, naïve!"]


@pytest.mark.parametrize("setting,expected", [(None, "direct"), ("sklearn", "sklearn")])
def test_scorer_setting(start_stage, tmp_path, small_model_dir, setting, expected):
    settings = {"SCORER": setting} if setting else {}
    answers, lines = served_lines(start_stage, tmp_path / "r.log", TEXTS, **settings)
    [loaded] = [x for x in lines if x["event"] == "model_loaded"]
    assert loaded["scorer"] == expected
    assert loaded["settings"]["scorer"] == (setting or "direct")
    reference = load_model(small_model_dir).predict(TEXTS)
    assert [a["label"] for a in answers] == [p.label for p in reference]
    assert [a["score"] for a in answers] == pytest.approx([p.score for p in reference], abs=1e-9)


def test_unsupported_pipeline_falls_back_to_sklearn_with_a_warning(
    start_stage, tmp_path, small_model_dir
):
    def load_binary_tf(path):
        model = load_model(path)
        model.pipeline.steps[0][1].set_params(analyzer="char_wb")  # not reproduced: refused
        return model

    answers, lines = served_lines(
        start_stage, tmp_path / "r.log", TEXTS[:1], load_model=load_binary_tf
    )
    [refused] = [x for x in lines if x["event"] == "direct_scorer_refused"]
    assert refused["level"] == "WARNING" and "analyzer='char_wb'" in refused["problem"]
    [loaded] = [x for x in lines if x["event"] == "model_loaded"]
    assert loaded["scorer"] == "sklearn"
    assert answers[0]["label"] in ("positive", "negative")


def test_bad_scorer_setting_stops_start_up(start_stage, tmp_path):
    with pytest.raises(SystemExit, match="INFERENCE_SCORER"):
        start_stage.app("fast", SCORER="onnx", LOG_PATH=tmp_path / "r.log")

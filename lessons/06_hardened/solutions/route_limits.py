"""Lesson 6, exercise 2: the route-sized body limit follows MAX_TEXT_CHARS.

    .venv/bin/python lessons/06_hardened/solutions/route_limits.py

With ``INFERENCE_MAX_TEXT_CHARS=1000`` the largest valid ``/predict`` body is 1,000 characters
at their worst JSON escape (12 bytes each) plus the overheads of ``serving/schemas.py``. A
``Content-Length`` one byte over is refused with 413 before a byte of the body is read; a body
of exactly the limit passes the size check and is parsed and validated, then meets the
readiness check: this app never loads a model, so it answers 503.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

from fastapi.testclient import TestClient

from sentiment_model import ModelLoadError
from serving.jsonbody import body_limits
from serving.settings import load_settings

ROOT = Path(__file__).resolve().parents[3]
# The hardened stage; the final stage (repository root) keeps the same limits.
STAGE = ROOT / "lessons" / "06_hardened" / "inference_server.py"
if not STAGE.is_file():
    STAGE = ROOT / "inference_server.py"


def no_model(model_dir):
    raise ModelLoadError(model_dir, "this exercise needs no model")


def stage_module():
    spec = importlib.util.spec_from_file_location("hardened_stage", STAGE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def answers(max_text_chars: int = 1000) -> dict:
    """The /predict limit, and the status of a body at the limit and one byte over it."""
    predict_limit, batch_limit = body_limits(max_text_chars, 64)
    with tempfile.TemporaryDirectory() as scratch:
        settings = load_settings(
            max_text_chars=max_text_chars,
            model_dir=scratch,
            log_path=Path(scratch) / "requests.log",
            log_level="ERROR",  # the exercise reads the answers, not the log
        )
        app = stage_module().create_app(settings, load_model=no_model)
        statuses = {}
        with TestClient(app) as client:
            for name, size in (
                ("at the limit", predict_limit),
                ("one byte over", predict_limit + 1),
            ):
                valid = b'{"text": "a fine film"}'
                body = valid + b" " * (size - len(valid))  # JSON may end in white space
                r = client.post(
                    "/predict", content=body, headers={"content-type": "application/json"}
                )
                statuses[name] = (r.status_code, r.json()["detail"])
    return {"predict_limit": predict_limit, "batch_limit": batch_limit, **statuses}


if __name__ == "__main__":
    for key, value in answers(int(sys.argv[1]) if len(sys.argv) > 1 else 1000).items():
        print(f"{key:14} {value}")

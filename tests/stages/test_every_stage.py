"""Every stage, naive to fast, gives the same labels for the same texts: each stage adds one idea
about serving, none changes what the model says (lesson map: serving/stages.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentiment_model import load_model
from serving.stages import STAGES

TEXTS = [
    "A wonderful, moving film with brilliant acting. I loved every minute of it.",
    "Terrible, boring and badly acted. The worst movie I have seen, a waste of time.",
    "The food was cold and the waiter never came back.",
    "Fast delivery, works as described, would buy again.",
]


@pytest.fixture(scope="module")
def expected(small_model_dir: Path) -> list[str]:
    """The model's own labels (the texts need no cleaning, so the naive stage agrees)."""
    return [p.label for p in load_model(small_model_dir).predict(TEXTS)]


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_answers_with_the_models_labels(start_stage, expected, stage):
    with start_stage(stage) as client:
        singles = [client.post("/predict", json={"text": text}) for text in TEXTS]
        batch = None if stage == "naive" else client.post("/predict/batch", json={"texts": TEXTS})
    assert [r.status_code for r in singles] == [200] * len(TEXTS)
    assert [r.json()["label"] for r in singles] == expected
    if batch is not None:  # the naive stage has no /predict/batch
        assert batch.status_code == 200
        assert [p["label"] for p in batch.json()["predictions"]] == expected

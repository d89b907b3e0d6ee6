"""Request payloads for the load test: real texts from the test split, by profile.

Two profiles, because the model's cost depends on text length far more than on anything else:

- ``short``: Rotten Tomatoes sentences (about 110 characters), the typical API call;
- ``long``: IMDB reviews (about 1,300 characters), where tokenising dominates.

Reading and splitting the data set takes a few seconds, so the benchmark runner writes the
texts once to a small JSON file (:func:`write_payload_file`) and every locust process reads that
file instead (:func:`load_payload_file`). The texts are the test split's, in its order: the real
length distribution, not one constant string.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PROFILES: dict[str, str] = {"short": "rotten_tomatoes", "long": "imdb"}
LABELS = frozenset({"positive", "negative"})


def profile_texts(profile: str) -> list[str]:
    """Every test-split text of ``profile``'s source (``short`` or ``long``)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    from sentiment_model.data import load_splits  # slow import + read: only when needed

    test = load_splits().test
    return test.loc[test["source"] == PROFILES[profile], "text"].tolist()


def write_payload_file(path: Path, profiles: tuple[str, ...] = tuple(PROFILES)) -> Path:
    """Write ``{"short": [...], "long": [...]}`` from the test split to ``path``; return it."""
    from sentiment_model.data import load_splits

    test = load_splits().test
    data = {p: test.loc[test["source"] == PROFILES[p], "text"].tolist() for p in profiles}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def load_payload_file(path: Path | str | None, profile: str) -> list[str]:
    """The texts of ``profile`` from a file written by :func:`write_payload_file`.

    With no file (``path`` is None or empty), read the test split directly: slower, same texts.
    """
    if not path:
        return profile_texts(profile)
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if profile not in data:
        raise ValueError(f"{path} has no {profile!r} texts (it has: {', '.join(data)})")
    return data[profile]


def batch_body(texts: list[str], rng: random.Random, max_items: int = 8) -> dict:
    """A ``/predict/batch`` body of 2..max_items texts drawn from ``texts``."""
    return {"texts": rng.sample(texts, rng.randint(2, max_items))}


def predict_body(text: str) -> dict:
    """The ``/predict`` request body for one text."""
    return {"text": text}


def check_prediction(item: object) -> str | None:
    """Why ``item`` is not a ``{"label", "score"}`` prediction, or None when it is one."""
    if not isinstance(item, dict):
        return f"prediction is {type(item).__name__}, not an object"
    if item.get("label") not in LABELS:
        return f"bad label {item.get('label')!r}"
    score = item.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 1:
        return f"bad score {score!r}"
    return None

"""The ceiling: how fast the model alone predicts, in-process, with no HTTP in the way.

No server can beat the model it wraps, so every stage's throughput is reported as a fraction of
this figure, measured on the same texts, on one core, one text at a time and in batches of the
server's configured batch size, once per scorer: ``sklearn`` (the pipeline's own
``predict_proba``) and ``direct`` (the final stage's direct scorer, where this checkout has one).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from sentiment_model import SentimentModel
from sentiment_model.throughput import measure, pinned_to_cpu

__all__ = ["DIRECT_SCORER", "best_ceiling", "measure", "measure_ceiling", "pinned_to_cpu"]

# Where the direct scorer comes from: ``module:factory``; ``factory(model)`` returns an object
# with ``predict(texts)`` (or is itself that function). Changeable with ``--direct-scorer``.
DIRECT_SCORER = "loadtest.ceiling:direct_model"


def scorer_for(model: SentimentModel, name: str, direct: str = DIRECT_SCORER) -> Any | None:
    """An object with ``predict(texts)`` for scorer ``name``, or None where this checkout has no
    such scorer (the direct scorer before it exists)."""
    if name == "sklearn":
        return model
    if name != "direct":
        raise ValueError(f"unknown scorer {name!r}; choose sklearn or direct")
    module_name, _, attr = direct.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return None
    scorer = factory(model)
    return scorer if hasattr(scorer, "predict") else _Callable(scorer)


def direct_model(model: SentimentModel) -> SentimentModel:
    """A copy of ``model`` that scores as the final stage does by default (INFERENCE_SCORER=
    direct: sentiment_model/scorer.py), cleaning and post-processing included."""
    twin = copy.copy(model)  # shares the fitted pipeline; only the scorer differs
    if twin.use_scorer("direct") != "direct":
        raise RuntimeError("the direct scorer refused this pipeline; see the warning logged")
    return twin


class _Callable:
    def __init__(self, fn):
        self.predict = fn


def measure_ceiling(
    model: SentimentModel,
    texts_by_profile: dict[str, Sequence[str]],
    batch_sizes: Iterable[int] = (1, 32),
    seconds: float = 2.0,
    cpu: int | None = 0,
    scorers: dict[str, Any] | None = None,
) -> list[dict]:
    """One row per (scorer, profile, batch size): in-process throughput on one core.

    ``scorers`` maps a name to an object with ``predict(texts)`` (default: the model itself,
    named ``sklearn``).
    """
    rows = []
    with pinned_to_cpu(cpu):
        for scorer, predictor in (scorers or {"sklearn": model}).items():
            for profile, texts in texts_by_profile.items():
                for b in batch_sizes:
                    m = measure(predictor, texts, b, seconds)
                    rows.append({"scorer": scorer, "profile": profile} | m)
    return rows


def best_ceiling(ceiling: pd.DataFrame) -> pd.DataFrame:
    """One row per (scorer, profile, batch size): the fastest of the repeated measurements.

    The runner measures the ceiling at the start and at the end of a run; on a shared machine
    another process may take the CPU during one of them, and a limit is best estimated by the
    least disturbed measurement.
    """
    if ceiling is None or ceiling.empty:
        return pd.DataFrame() if ceiling is None else ceiling
    col = "texts_per_s_p50" if "texts_per_s_p50" in ceiling else "texts_per_s"
    keys = [k for k in ("scorer", "profile", "batch_size") if k in ceiling]
    best = ceiling.sort_values(col, ascending=False).drop_duplicates(keys)
    order = best["profile"].map({"short": 0, "long": 1}).fillna(2)
    by = ["_order", "batch_size"] if "scorer" not in best else ["scorer", "_order", "batch_size"]
    return best.assign(_order=order).sort_values(by).drop(columns="_order")

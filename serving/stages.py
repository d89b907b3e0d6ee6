"""The server stages, in one place: where each one's code, lesson and notebook live, and which
in-repo modules its lesson teaches (the lesson map).

Standard library only, so ``tasks.py`` can import it before ``.venv`` exists. The benchmark,
the tests and ``tasks.py`` all read the stages from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One stage: uvicorn serves ``app`` imported from ``app_dir``; paths are relative to the
    repository root.

    ``teaches``: the in-repo modules (``sentiment_model.*``, ``serving.*``) this stage's lesson
    introduces. A stage may import what its lesson or an earlier one teaches, and nothing a
    later one does (tests/unit/test_stage_imports.py checks both ways).
    ``loads_in_background``: the server listens at once and loads its model afterwards, so
    "ready" is its ``model_loaded`` line, not an open port (``tasks.py serve``).
    """

    name: str
    app_dir: str
    lesson_dir: str
    notebooks: tuple[str, ...]
    teaches: tuple[str, ...]
    loads_in_background: bool = False
    app: str = "inference_server:app"


_NB = "notebooks/"
STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "naive",
            "lessons/01_naive",
            "lessons/01_naive",
            (f"{_NB}01_naive_server.ipynb",),
            ("sentiment_model", "sentiment_model.artifact"),  # the artifact of lesson 0, loaded
        ),
        Stage(
            "validated",
            "lessons/02_validated",
            "lessons/02_validated",
            (f"{_NB}02_validated_server.ipynb",),
            (
                "sentiment_model.data",  # clean_text: the training data's cleaning
                "sentiment_model.normalise",  # text limits counted as the model counts them
                "serving",
                "serving.asgi",  # BodyLimitMiddleware
                "serving.errors",
                "serving.schemas",
                "serving.settings",
            ),
        ),
        Stage(
            "metrics",
            "lessons/03_metrics",
            "lessons/03_metrics",
            (f"{_NB}03_metrics_and_logs.ipynb",),
            ("serving.context", "serving.logfile", "serving.logs", "serving.metrics"),
        ),
        Stage(
            "batched",
            "lessons/04_batched",
            "lessons/04_batched",
            (f"{_NB}04_batched_server.ipynb",),
            ("serving.batcher", "serving.dependencies", "serving.rejections", "serving.state"),
        ),
        Stage(
            "lifecycle",
            "lessons/05_lifecycle",
            "lessons/05_lifecycle",
            (),
            ("serving.multiprocess", "serving.shutdown"),
            loads_in_background=True,
        ),
        Stage(
            "hardened",
            "lessons/06_hardened",
            "lessons/06_hardened",
            (),
            ("serving.jsonbody", "serving.limits"),
            loads_in_background=True,
        ),
        Stage(
            "fast",
            ".",
            "lessons/07_fast",
            (f"{_NB}07_compare_stages.ipynb",),
            ("sentiment_model.scorer",),  # imported when the direct scorer is built
            loads_in_background=True,
        ),
        Stage(
            "lean",
            "lessons/10_price",
            "lessons/10_price",
            (f"{_NB}10_price_of_production.ipynb",),
            (),  # cuts in what earlier lessons taught; no new module
            loads_in_background=True,
        ),
    )
}
BASELINE_STAGE, FINAL_STAGE = "naive", "fast"

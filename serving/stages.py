"""The four server stages, in one place: where each one's code, lesson and notebook live.

Standard library only, so ``tasks.py`` can import it before ``.venv`` exists. The benchmark,
the tests and ``tasks.py`` all read the stages from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One stage: uvicorn serves ``app`` imported from ``app_dir``; paths are relative to the
    repository root."""

    name: str
    app_dir: str
    lesson_dir: str
    notebooks: tuple[str, ...]
    app: str = "inference_server:app"


_NB = "notebooks/"
STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("naive", "lessons/01_naive", "lessons/01_naive", (f"{_NB}01_naive_server.ipynb",)),
        Stage(
            "validated",
            "lessons/02_validated",
            "lessons/02_validated",
            (f"{_NB}02_validated_server.ipynb",),
        ),
        Stage(
            "metrics",
            "lessons/03_metrics",
            "lessons/03_metrics",
            (f"{_NB}03_metrics_and_logs.ipynb",),
        ),
        Stage(
            "batched",
            ".",
            "lessons/04_batched",
            (f"{_NB}04_batched_server.ipynb", f"{_NB}07_compare_stages.ipynb"),
        ),
    )
}
BASELINE_STAGE, FINAL_STAGE = "naive", "batched"

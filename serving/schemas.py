"""The HTTP contract: request and response models.

Requests are strict (no coercion: ``{"text": 5}`` is an error, not ``"5"``) and closed (unknown
fields are errors), so a client's mistake is reported instead of silently "fixed". The length
limits come from the settings, so the request models are built by :func:`request_models`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi.responses import Response
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sentiment_model.normalise import lengths_table, within


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text must not be only whitespace")
    return text


def _normalised_within(limit: int):
    """An after-validator: the text is at most ``limit`` characters *as the model reads it*.

    The vectorizer expands some characters under Unicode NFKD (U+FDFA becomes 18), so the raw
    length alone would let a 10,000-character text cost the model 180,000 characters of work.
    Same error type as the raw limit (``string_too_long``), so clients need no new case.
    """
    lengths_table()  # built now (about 0.15 s, once per process), not by the first request

    def check(text: str) -> str:
        if not within(text, limit):
            raise PydanticCustomError(
                "string_too_long",
                "String should have at most {max_length} characters once normalised as the "
                "model reads it (Unicode NFKD, accents stripped; some characters become "
                "several)",
                {"max_length": limit},
            )
        return text

    return check


FEW_UNKNOWN_KEYS = 10


class StrictModel(BaseModel):
    """Base for request bodies: exact JSON types, unknown fields rejected."""

    model_config = ConfigDict(strict=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _not_a_key_flood(cls, data: object) -> object:
        # One error for a body with many more keys than the model has fields: pydantic would
        # build one error per unknown key (90,000 keys: 0.3 s of event loop to list them).
        # A few unknown keys still get one error each, naming the key.
        if isinstance(data, dict) and len(data) > len(cls.model_fields) + FEW_UNKNOWN_KEYS:
            unknown = len(data.keys() - cls.model_fields.keys())
            accepted = ", ".join(sorted(cls.model_fields))
            raise ValueError(f"{unknown} unknown field(s); accepted: {accepted}")
        return data


def request_models(
    max_text_chars: int, max_batch_items: int
) -> tuple[type[StrictModel], type[StrictModel]]:
    """``(PredictRequest, BatchRequest)`` with these limits (they show in the OpenAPI schema)."""
    Text = Annotated[
        str,
        StringConstraints(min_length=1, max_length=max_text_chars),
        AfterValidator(_not_blank),
        AfterValidator(_normalised_within(max_text_chars)),
        Field(
            description=f"A review: 1..{max_text_chars} characters, also once Unicode-normalised "
            "(NFKD, accents stripped, as the model reads it); not only whitespace."
        ),
    ]

    class PredictRequest(StrictModel):
        """One text to classify."""

        text: Text

    class BatchRequest(StrictModel):
        """Several texts to classify; answers come back in the same order."""

        texts: Annotated[list[Text], Field(min_length=1, max_length=max_batch_items)]

    return PredictRequest, BatchRequest


Label = Literal["negative", "positive"]


class LabelScore(BaseModel):
    """One text's result."""

    label: Label
    score: float = Field(description="Probability the model gives the returned label.")


class PredictResponse(LabelScore):
    """Answer to POST /predict."""

    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    latency_ms: float = Field(
        description="Server-side time from the validated request to this answer, queueing and "
        "model included."
    )


class BatchResponse(BaseModel):
    """Answer to POST /predict/batch: one prediction per text, in input order."""

    model_config = ConfigDict(protected_namespaces=())

    predictions: list[LabelScore]
    model_version: str
    latency_ms: float


class HealthResponse(BaseModel):
    """Liveness: the process answers, whatever the model's state."""

    model_config = ConfigDict(protected_namespaces=())

    status: Literal["ok"] = "ok"
    model_loaded: bool
    model_version: str | None


class ReadyResponse(BaseModel):
    """Readiness: may this instance receive traffic?"""

    ready: bool
    reason: str | None = Field(None, description="Why not, when ready is false.")


class ErrorResponse(BaseModel):
    """Error body of 413, 503, 504 and 500 answers."""

    detail: str
    request_id: str | None = None


def json_response(
    body: BaseModel, status_code: int = 200, *, exclude_none: bool = False
) -> Response:
    """Serialize an already-validated model once, in pydantic-core.

    Returning a ``Response`` makes FastAPI skip its own response validation and encoding, which
    would check the same model a second time on every request (the route still declares
    ``response_model`` for the OpenAPI schema).
    """
    return Response(
        body.model_dump_json(exclude_none=exclude_none), status_code, media_type="application/json"
    )

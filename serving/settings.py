"""Server settings, read from environment variables prefixed ``INFERENCE_``.

One class serves every stage; each stage uses the fields it needs. A bad value stops start-up
with a message that names the environment variable, instead of a traceback or a server that
misbehaves later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "INFERENCE_"


class Settings(BaseSettings):
    """Every tunable of the server. Defaults are derived from the data (see lessons/02)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", protected_namespaces=(), validate_default=True
    )

    model_dir: Path | None = Field(
        None, description="Model artifact directory; unset means the one named in models/LATEST."
    )
    max_text_chars: int = Field(
        10_000, ge=1, le=1_000_000, description="Longest accepted text, in characters."
    )
    max_batch_items: int = Field(
        64, ge=1, le=10_000, description="Most texts in one POST /predict/batch request."
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1, description="Largest accepted request body; larger gets 413."
    )
    max_batch_size: int = Field(32, ge=1, le=1024, description="Most texts in one model call.")
    max_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Longest a batch waits for more texts after its first; 0 (default): greedy, "
        "never wait, take whatever is queued when the model is free.",
    )
    max_queue: int = Field(
        256, ge=1, description="Most texts waiting for the model; beyond it requests get 503."
    )
    request_timeout_s: float = Field(
        2.0, gt=0, le=600, description="Longest a request waits for its result; then 504."
    )
    drain_timeout_s: float = Field(
        10.0, gt=0, le=600, description="Longest shutdown waits for accepted texts to finish."
    )
    log_path: Path = Field(
        Path("logs/requests.log"), description="JSON log file (rotated); also logged to stdout."
    )
    # Hostile or broken clients (serving/limits.py, serving/protocol.py); defaults after nginx's.
    max_header_bytes: int = Field(
        32_768, ge=1_024, le=1_048_576, description="Largest request head (line + headers); 431."
    )
    header_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="Longest wait for a complete request head; then 408."
    )
    body_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="Longest wait for a complete request body; then 408."
    )
    max_connections: int = Field(
        512,
        ge=1,
        description="Most open connections; at the cap the one waiting longest for a head "
        "makes room, and only when every one is busy does a new one get 503 and close.",
    )
    docs: bool = Field(False, description="Serve /docs and /redoc (their scripts come from a CDN).")
    scorer: Literal["direct", "sklearn"] = Field(
        "direct",
        description="Final stage: 'direct' scores from the pipeline's fitted arrays (checked "
        "against scikit-learn at load; falls back to it), 'sklearn' calls predict_proba.",
    )
    feedback_max_ids: int = Field(
        100_000,
        ge=1,
        le=10_000_000,
        description="Monitored stage: most predictions remembered for POST /feedback (a batch "
        "request counts each text); the oldest are forgotten first.",
    )
    feedback_ttl_s: float = Field(
        3600.0,
        gt=0,
        le=7 * 86_400,
        description="Monitored stage: how long a prediction is remembered for POST /feedback.",
    )
    # Rollout (lessons/12_rollout, serving/rollout.py): candidates next to the stable model.
    shadow_model_dir: Path | None = Field(
        None, description="A candidate that scores a share of texts off the hot path."
    )
    shadow_fraction: float = Field(0.0, ge=0, le=1, description="Share of texts shadow-scored.")
    canary_model_dir: Path | None = Field(
        None, description="A candidate that answers a share of the requests."
    )
    canary_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of request keys (X-Canary-Key, else the request id) "
        "answered by the canary, at start-up (POST /admin/canary changes it).",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Enables POST /admin/reload and POST /admin/canary for callers with this "
        "bearer token.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_text: bool = Field(False, description="Log the raw review text (off: privacy, log size).")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _queue_fits_a_batch_request(self) -> Settings:
        # A queue smaller than one full batch request would refuse that request forever.
        if self.max_queue < self.max_batch_items:
            raise ValueError(
                f"{ENV_PREFIX}MAX_QUEUE ({self.max_queue}) must be at least "
                f"{ENV_PREFIX}MAX_BATCH_ITEMS ({self.max_batch_items})"
            )
        return self


class SettingsError(SystemExit):
    """A setting is invalid. Raised as SystemExit so start-up stops with just the message."""


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment (``overrides`` win), or stop with a message
    naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            name = ".".join(str(p) for p in err["loc"])
            where = f"{ENV_PREFIX}{name.upper()}={err['input']!r}: " if name else ""
            problems.append(f"  {where}{err['msg']}")
        raise SettingsError("invalid server settings:\n" + "\n".join(problems)) from None

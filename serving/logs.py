"""JSON logs: one object per line, to a rotated file and to stdout.

A line carries the UTC ``timestamp``, ``level``, ``event`` and whatever the caller passes in
``extra`` (request_id, status, latency_ms, ...), so the file can be loaded straight into pandas
(``pd.read_json(path, lines=True)``) or any log system.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pythonjsonlogger.json import JsonFormatter

from serving.logfile import WholeLineFileHandler
from serving.settings import SettingsError

LOGGER_NAME = "inference"
MAX_LOG_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5


class FormatOnceJsonFormatter(JsonFormatter):
    """Format a record once, however many handlers write it.

    Each handler formats the record again, and ``RotatingFileHandler`` formats it once more to
    decide on rotation: three JSON encodings per line with a file and stdout. The access log is
    on the benchmarked path, so the first result is kept on the record and reused.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line, encoded on the first call only."""
        line = record.__dict__.get("_json_line")
        if line is None:
            line = super().format(record)
            record.__dict__["_json_line"] = line
        return line


def configure_logging(
    log_path: Path | str, level: str = "INFO", name: str = LOGGER_NAME
) -> logging.Logger:
    """Return the logger ``name``, writing JSON lines to ``log_path`` (rotated) and stdout.

    Calling it again replaces the handlers (a test or a reload may point it elsewhere).
    """
    formatter = FormatOnceJsonFormatter(
        "{timestamp}{levelname}{message}",
        style="{",
        rename_fields={"levelname": "level", "message": "event"},
        timestamp=True,
        json_ensure_ascii=False,
    )
    log_path = Path(log_path)
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = WholeLineFileHandler(log_path, MAX_LOG_BYTES, LOG_BACKUPS)
    except OSError as e:  # read-only, under a file, a directory: say which setting to fix
        raise SettingsError(
            f"INFERENCE_LOG_PATH={str(log_path)!r}: cannot write the log file there "
            f"({e.strerror or e})"
        ) from None
    handlers: list[logging.Handler] = [file_handler, logging.StreamHandler(sys.stdout)]
    logger = logging.getLogger(name)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # the root logger (uvicorn's format) would print each line twice
    # Our access log replaces uvicorn's plain-text one (same requests, without the request id).
    logging.getLogger("uvicorn.access").disabled = True
    return logger


def prediction_fields(
    texts: list[str], model_version: str, batch_size: int, log_text: bool = False
) -> dict:
    """Access-log fields of a prediction: sizes, never the raw text unless ``log_text``."""
    fields: dict = {
        "model_version": model_version,
        "batch_size": batch_size,
        "texts": len(texts),
        "text_chars": sum(len(t) for t in texts),
    }
    if log_text:
        fields["text"] = texts
    return fields

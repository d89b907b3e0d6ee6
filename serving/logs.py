"""JSON logs: one object per line, to a rotated file and to stdout.

A line carries the UTC ``timestamp``, ``level``, ``event`` and whatever the caller passes in
``extra`` (request_id, status, latency_ms, ...), so the file can be loaded straight into pandas
(``pd.read_json(path, lines=True)``) or any log system.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import sys
from datetime import datetime, timezone
from logging.handlers import QueueHandler, QueueListener, RotatingFileHandler
from pathlib import Path

import orjson

LOGGER_NAME = "inference"
MAX_LOG_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5

# A record's standard attributes; everything else on it came from ``extra`` and is logged.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "_json_line",
}


class JsonLineFormatter(logging.Formatter):
    """A record as one JSON line: ``timestamp`` (UTC), ``level``, ``event``, ``exc_info`` when
    there is a trace, then every ``extra`` field.

    Encoded once with orjson and kept on the record: each handler formats the record again,
    and ``RotatingFileHandler`` once more to decide on rotation.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line, encoded on the first call only."""
        line = record.__dict__.get("_json_line")
        if line is None:
            doc = {
                "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                "level": record.levelname,
                "event": record.getMessage(),
            }
            if record.exc_info:
                doc["exc_info"] = self.formatException(record.exc_info)
            if record.stack_info:
                doc["stack_info"] = self.formatStack(record.stack_info)
            for key, value in record.__dict__.items():
                if key not in _STANDARD:
                    doc[key] = value
            try:
                line = orjson.dumps(doc, default=str).decode()
            except TypeError:  # what orjson refuses (an int over 64 bits, ...): the slow way
                line = json.dumps(doc, default=str, ensure_ascii=False)
            record.__dict__["_json_line"] = line
        return line


# Kept under its old name: the access log is still encoded once per line.
FormatOnceJsonFormatter = JsonLineFormatter


class _SizeCountingRotatingFileHandler(RotatingFileHandler):
    """``RotatingFileHandler`` that counts the bytes it writes instead of asking the file.

    The stdlib's rollover check costs two ``stat`` calls, a ``seek`` and a ``tell`` per line.
    With ``flush_each=False`` (background writing) the listener flushes instead of each line.
    """

    flush_each = True

    def _open(self):
        stream = super()._open()
        self._size = stream.seek(0, 2)
        self._regular = os.path.isfile(self.baseFilename)  # never rename /dev/null or a pipe
        return stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.stream is None:
                self.stream = self._open()
            line = self.format(record) + self.terminator
            size = len(line.encode())
            full = self.maxBytes > 0 and self._size + size >= self.maxBytes
            if full and self._regular and self._size:
                self.doRollover()  # reopens: _size is 0 again
            self.stream.write(line)
            self._size += size
            if self.flush_each:
                self.stream.flush()
        except Exception:
            self.handleError(record)


class _UnflushedStreamHandler(logging.StreamHandler):
    """Writes without a flush per line; the listener flushes whenever its queue runs dry."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)


class _UnflushedRotatingFileHandler(_SizeCountingRotatingFileHandler):
    """The rotating file, flushed by the listener rather than once per line."""

    flush_each = False


class _BatchingListener(QueueListener):
    """A ``QueueListener`` that flushes its handlers once the queue is empty: under load, many
    lines leave in one write; when idle, each line is on disk at once."""

    def dequeue(self, block: bool):
        if block and self.queue.empty():
            self.flush()
        return self.queue.get(block)

    def flush(self) -> None:
        for handler in self.handlers:
            handler.flush()


class BackgroundQueueHandler(QueueHandler):
    """Puts records on the listener's queue as they are: formatting happens in its thread.

    (The stdlib's ``QueueHandler`` formats the record in the caller's thread, to make it
    picklable for other processes; a thread needs no such copy.) Closing it stops the
    listener, which writes out every line still queued.
    """

    def __init__(self, handlers: list[logging.Handler]) -> None:
        super().__init__(queue.Queue())
        self.listener = _BatchingListener(self.queue, *handlers, respect_handler_level=True)
        self.listener.start()
        atexit.register(self.close)  # the last lines of the process reach the file too

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record

    def flush(self) -> None:
        """Wait until every line logged so far is written out (tests, shutdown)."""
        if self.listener._thread is not None:
            self.queue.join()
        self.listener.flush()

    def close(self) -> None:
        if self.listener._thread is not None:
            self.listener.stop()
            atexit.unregister(self.close)
        for handler in self.listener.handlers:
            handler.close()
        super().close()


def configure_logging(
    log_path: Path | str, level: str = "INFO", name: str = LOGGER_NAME, background: bool = False
) -> logging.Logger:
    """Return the logger ``name``, writing JSON lines to ``log_path`` (rotated) and stdout.

    With ``background`` the caller only queues the record; a listener thread formats and writes
    it (``flush_logs`` waits for it). Calling it again replaces the handlers (a test or a reload
    may point it elsewhere).
    """
    formatter = JsonLineFormatter()
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    file_handler, stdout_handler = (
        (_UnflushedRotatingFileHandler, _UnflushedStreamHandler)
        if background
        else (_SizeCountingRotatingFileHandler, logging.StreamHandler)
    )
    handlers: list[logging.Handler] = [
        file_handler(log_path, maxBytes=MAX_LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"),
        stdout_handler(sys.stdout),
    ]
    for handler in handlers:
        handler.setFormatter(formatter)
    if background:
        handlers = [BackgroundQueueHandler(handlers)]
    logger = logging.getLogger(name)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # the root logger (uvicorn's format) would print each line twice
    # Our access log replaces uvicorn's plain-text one (same requests, without the request id).
    logging.getLogger("uvicorn.access").disabled = True
    return logger


def flush_logs(name: str = LOGGER_NAME) -> None:
    """Wait until every line logged so far to ``name`` is written (a no-op when synchronous)."""
    for handler in logging.getLogger(name).handlers:
        handler.flush()


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

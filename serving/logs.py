"""JSON logs: one object per line, to a rotated file and to stdout.

A line carries the UTC ``timestamp``, ``level``, ``event`` and whatever the caller passes in
``extra`` (request_id, status, latency_ms, ...), so the file can be loaded straight into pandas
(``pd.read_json(path, lines=True)``) or any log system.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import logging
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from logging.handlers import QueueHandler
from pathlib import Path

import orjson

from serving.logfile import WholeLineFileHandler
from serving.settings import SettingsError

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


class _UnflushedStreamHandler(logging.StreamHandler):
    """Writes a whole batch of lines in one ``write``, flushed once by the writer thread.

    One call per batch matters for stdout: with ``PYTHONUNBUFFERED`` (common in containers)
    every ``write`` is a system call, and each one makes the writer thread hand the GIL back
    to the busy event loop and wait to get it again.
    """

    reader_gone = False  # stdout's reader went away (``serve | head``): stop writing there

    def emit(self, record: logging.LogRecord) -> None:
        self.emit_many([record])

    def emit_many(self, records: list[logging.LogRecord]) -> None:
        """Write ``records`` as one string; one that cannot be formatted loses only itself."""
        if self.reader_gone:
            return
        try:
            text = "".join([self.format(r) + self.terminator for r in records])
        except Exception:
            text = "".join(self._format_or_report(r) for r in records)
        try:
            with self.lock:
                self.stream.write(text)
        except BrokenPipeError:
            self._gone()
        except Exception:
            self.handleError(records[-1])

    def flush(self) -> None:
        """Flush stdout; a closed pipe is said once on stderr, not a trace every 50 ms."""
        if self.reader_gone:
            return
        try:
            super().flush()
        except BrokenPipeError:
            self._gone()

    def _gone(self) -> None:
        self.reader_gone = True
        with contextlib.suppress(OSError, ValueError):
            print("stdout closed: JSON lines now go to the log file only", file=sys.stderr)

    def _format_or_report(self, record: logging.LogRecord) -> str:
        try:
            return self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return ""


class _PolledQueue:
    """What ``QueueHandler`` puts records into: a deque that wakes no thread.

    ``queue.Queue.put`` notifies the waiting writer thread on every record; on a server
    pinned to one core that is a thread switch and a GIL hand-off per request. The writer
    polls instead (``BackgroundQueueHandler.interval``) and takes everything queued at once.
    """

    def __init__(self) -> None:
        self.items: collections.deque[logging.LogRecord] = collections.deque()

    def put_nowait(self, record: logging.LogRecord) -> None:
        self.items.append(record)  # atomic: callers in any thread need no lock


class _WriteThrough(_PolledQueue):
    """The queue of a closed handler: no writer thread is left, so a record is written at once
    (a thread still logging while the process exits would otherwise lose its lines)."""

    def __init__(self, handler: BackgroundQueueHandler) -> None:
        super().__init__()
        self.handler = handler

    def put_nowait(self, record: logging.LogRecord) -> None:
        self.items.append(record)
        self.handler.flush()


class BackgroundQueueHandler(QueueHandler):
    """Queue records as they are; a writer thread formats and writes them in batches.

    The caller (the event loop) only builds the record and appends it to a deque. Every
    ``interval`` seconds the writer thread formats whatever queued up, writes it to each
    handler and flushes once. (The stdlib's ``QueueHandler`` also formats the record in the
    caller's thread, to make it picklable for other processes; a thread needs no such copy.)
    :meth:`flush` writes out everything queued so far; closing stops the writer.
    """

    def __init__(self, handlers: list[logging.Handler], interval: float = 0.05) -> None:
        super().__init__(_PolledQueue())  # type: ignore[arg-type]
        self.targets = handlers
        self.interval = interval
        self._drain_lock = threading.Lock()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = threading.Thread(
            target=self._run, name="log-writer", daemon=True
        )
        self._writer.start()
        atexit.register(self.close)  # the last lines of the process reach the file too

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._drain()

    def _drain(self) -> None:
        items = self.queue.items  # type: ignore[attr-defined]
        with self._drain_lock:
            if not items:
                return
            records = [items.popleft() for _ in range(len(items))]
            for handler in self.targets:
                # One handler failing (stdout closed: EPIPE) must neither keep the lines from
                # the others nor end the writer thread, which would stop every later line.
                try:
                    mine = [r for r in records if r.levelno >= handler.level and handler.filter(r)]
                    if mine:
                        handler.emit_many(mine)  # one write per batch, not per line
                    handler.flush()
                except Exception:
                    handler.handleError(records[-1])

    @property
    def running(self) -> bool:
        """Whether the writer thread is still running."""
        return self._writer is not None

    def flush(self) -> None:
        """Write out every record queued so far (tests, shutdown)."""
        self._drain()

    def close(self) -> None:
        """Stop the writer and write out what is queued; later records are written at once."""
        if self._writer is not None:
            self._stop.set()
            self._writer.join()
            self._writer = None
            atexit.unregister(self.close)
            left = self.queue.items  # type: ignore[attr-defined]
            self.queue = _WriteThrough(self)  # type: ignore[assignment]
            self.queue.items = left  # type: ignore[attr-defined]
        self._drain()
        for handler in self.targets:
            handler.close()
        super().close()


def configure_logging(
    log_path: Path | str,
    level: str = "INFO",
    name: str = LOGGER_NAME,
    background: bool = False,
    on_lost: Callable[[int], None] | None = None,
) -> logging.Logger:
    """Return the logger ``name``, writing JSON lines to ``log_path`` (rotated) and stdout.

    With ``background`` the caller only queues the record; a writer thread formats and writes
    the queued records every 50 ms (``flush_logs`` writes them out now). The file gets whole
    lines or nothing; ``on_lost`` is told how many lines it could not take (a full disk), and a
    file moved or deleted while running is opened again (``serving/logfile.py``). Calling it
    again replaces the handlers (a test or a reload may point it elsewhere).
    """
    formatter = JsonLineFormatter()
    log_path = Path(log_path)
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = WholeLineFileHandler(log_path, MAX_LOG_BYTES, LOG_BACKUPS, on_lost)
    except OSError as e:  # read-only, under a file, a directory: say which setting to fix
        raise SettingsError(
            f"INFERENCE_LOG_PATH={str(log_path)!r}: cannot write the log file there "
            f"({e.strerror or e})"
        ) from None
    stdout_handler = _UnflushedStreamHandler if background else logging.StreamHandler
    handlers: list[logging.Handler] = [file_handler, stdout_handler(sys.stdout)]
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

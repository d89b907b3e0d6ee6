"""A rotating log file that writes whole lines or nothing, and degrades quietly on a full disk.

``logging.handlers.RotatingFileHandler`` writes through a buffered text stream: on a full disk
it can leave half a JSON line in the file, and every lost record prints a 40-line traceback to
stderr. Here each line is one ``os.write`` of its encoded bytes; a short or failed write is cut
back off the file, counted in ``lost``, and reported once on stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from logging.handlers import RotatingFileHandler


class WholeLineFileHandler(RotatingFileHandler):
    """RotatingFileHandler with one ``os.write`` per line (UTF-8, unencodable characters
    escaped) and quiet failure: ``lost`` counts the records that could not be written, and
    ``on_lost`` (a metric's ``inc``) is told how many each time."""

    def __init__(
        self,
        filename: str | os.PathLike,
        max_bytes: int,
        backup_count: int,
        on_lost: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(filename, maxBytes=max_bytes, backupCount=backup_count, delay=True)
        self.lost = 0
        self.on_lost = on_lost
        self.warned = False
        self.stream = self._open()  # opened now: an unusable path fails at start-up

    def _open(self):  # type: ignore[override]
        """Unbuffered, append-only bytes: a line reaches the file in one system call."""
        return open(self.baseFilename, "ab", buffering=0)

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        return False  # decided in emit(), which knows the encoded size

    def emit(self, record: logging.LogRecord) -> None:
        """Append the record as one line, or count it as lost."""
        try:
            line = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
        except Exception:
            self.handleError(record)
            return
        try:
            if self.stream is None:
                self.stream = self._open()
            start = self.stream.tell()
            if self.maxBytes and start + len(line) > self.maxBytes and start > 0:
                self.doRollover()
                if self.stream is None:  # delay=True: doRollover leaves it closed
                    self.stream = self._open()
                start = self.stream.tell()
            written = os.write(self.stream.fileno(), line)
            if written != len(line):  # the disk filled up mid-line: take the piece back
                os.ftruncate(self.stream.fileno(), start)
                raise OSError(28, "short write (disk full?)")
        except OSError as e:
            self._lose(e)
        except Exception:
            self.handleError(record)

    def emit_many(self, records: list[logging.LogRecord]) -> None:
        """Append ``records`` (the background writer's batch) with one ``os.write`` per run of
        lines between two rotations; a short write takes its whole run back and counts it."""
        try:
            lines = [(self.format(r) + "\n").encode("utf-8", "backslashreplace") for r in records]
        except Exception:
            self.handleError(records[-1])
            return
        with self.lock:
            run: list[bytes] = []
            try:
                if self.stream is None:
                    self.stream = self._open()
                start = size = self.stream.tell()
                for line in lines:
                    if self.maxBytes and size + len(line) > self.maxBytes and size > 0:
                        self._write_run(run, start)
                        run = []
                        self.doRollover()
                        if self.stream is None:  # delay=True: doRollover leaves it closed
                            self.stream = self._open()
                        start = size = self.stream.tell()
                    run.append(line)
                    size += len(line)
                self._write_run(run, start)
            except OSError as e:
                self._lose(e, len(run))

    def _write_run(self, run: list[bytes], start: int) -> None:
        if not run:
            return
        data = b"".join(run)
        written = os.write(self.stream.fileno(), data)  # type: ignore[union-attr]
        if written != len(data):  # the disk filled up mid-run: take the piece back
            os.ftruncate(self.stream.fileno(), start)  # type: ignore[union-attr]
            raise OSError(28, "short write (disk full?)")

    def _lose(self, error: OSError, lines: int = 1) -> None:
        self.lost += lines
        if self.on_lost is not None:
            self.on_lost(lines)
        if not self.warned:
            self.warned = True
            print(
                f"log file {self.baseFilename}: cannot write ({error.strerror or error}); "
                "dropping log lines until it works again (counted in "
                "inference_log_lines_lost_total)",
                file=sys.stderr,
                flush=True,
            )

"""A rotating log file that writes whole lines or nothing, degrades quietly on a full disk, and
follows the file when it is moved or deleted.

``logging.handlers.RotatingFileHandler`` writes through a buffered text stream: on a full disk
it can leave half a JSON line in the file, and every lost record prints a 40-line traceback to
stderr. Here a batch of lines is one ``os.write`` of its encoded bytes; on a short write the
file is cut back to the last whole line, the lines that did not fit are counted in ``lost``
(and ``on_lost``), and one warning goes to stderr.

Like ``logging.handlers.WatchedFileHandler``, the file is reopened when the path no longer
names the open file (deleted, moved away, or replaced by ``logrotate``): otherwise every later
line would go to a file nobody can see, and a deleted file would keep its disk space.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import sys
from collections.abc import Callable
from logging.handlers import RotatingFileHandler


class WholeLineFileHandler(RotatingFileHandler):
    """RotatingFileHandler with one ``os.write`` per batch (UTF-8, unencodable characters
    escaped), whole lines or nothing, and quiet failure: ``lost`` counts the records that did
    not reach the file, ``on_lost`` (a metric's ``inc``) is told how many each time, and
    ``reopened`` counts the times the file was found moved or deleted and opened again."""

    def __init__(
        self,
        filename: str | os.PathLike,
        max_bytes: int,
        backup_count: int,
        on_lost: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(filename, maxBytes=max_bytes, backupCount=backup_count, delay=True)
        self.lost = 0
        self.reopened = 0
        self.on_lost = on_lost
        self.warned = False  # the one warning on stderr was printed
        self.rotation_failed = False
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._size = 0  # bytes in the open file, kept up to date by the single writer
        self._torn = False  # the file ends mid-line: the next write starts with a newline
        self.stream = self._open()  # opened now: an unusable path fails at start-up

    def _open(self):  # type: ignore[override]
        """Unbuffered, append-only bytes: a batch reaches the file in one system call. A
        missing folder is made again (``rm -r logs`` while the server runs)."""
        try:
            stream = open(self.baseFilename, "ab", buffering=0)  # noqa: SIM115 - kept open
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
            stream = open(self.baseFilename, "ab", buffering=0)  # noqa: SIM115
        st = os.fstat(stream.fileno())
        self._identity = (st.st_dev, st.st_ino)
        self._size = st.st_size
        self._torn = stat.S_ISREG(st.st_mode) and st.st_size > 0 and not self._ends_a_line()
        return stream

    def _ends_a_line(self) -> bool:
        """Whether the file's last byte is a newline (an earlier run may have died mid-line)."""
        try:
            with open(self.baseFilename, "rb") as f:
                f.seek(-1, os.SEEK_END)
                return f.read(1) == b"\n"
        except OSError:
            return True  # cannot tell: write as usual

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        return False  # decided in _append(), which knows the encoded size

    def emit(self, record: logging.LogRecord) -> None:
        """Append the record as one line, or count it as lost."""
        lines = self._encode([record])
        if lines:
            self._append(lines)

    def emit_many(self, records: list[logging.LogRecord]) -> None:
        """Append ``records`` (the background writer's batch) with one ``os.write`` per run of
        lines between two rotations; what the file cannot take is cut back and counted."""
        lines = self._encode(records)
        with self.lock:
            if lines:
                self._append(lines)

    def _encode(self, records: list[logging.LogRecord]) -> list[bytes]:
        """Each record as a line of bytes; one that cannot be formatted is reported and
        counted, and loses only itself (not the rest of the batch)."""
        try:
            return [(self.format(r) + "\n").encode("utf-8", "backslashreplace") for r in records]
        except Exception:
            lines = []
            for r in records:
                try:
                    lines.append((self.format(r) + "\n").encode("utf-8", "backslashreplace"))
                except Exception:
                    self._count_lost(1)
                    self.handleError(r)
            return lines

    def _append(self, lines: list[bytes]) -> None:
        """Write ``lines``, rotating between runs as needed; count what the file did not get."""
        done = 0
        try:
            self._follow_the_path()
            while done < len(lines):
                if self._size and self._over(len(lines[done])):
                    self._rotate()
                run = lines[done:] if done else lines
                if self._over(sum(map(len, run))):  # the file fills up within this batch
                    end, size = done + 1, len(lines[done])
                    while end < len(lines) and not self._over(size + len(lines[end])):
                        size += len(lines[end])
                        end += 1
                    run = lines[done:end]
                written, error = self._write_whole(run)
                done += written
                if error is not None:
                    raise error
        except OSError as e:
            self._count_lost(len(lines) - done)
            self._warn(e)

    def _rotate(self) -> None:
        """Rotate; if the file cannot be renamed (a file bind-mounted on its own: EBUSY, a
        read-only folder), keep writing to it past ``maxBytes`` rather than lose every line."""
        try:
            self.doRollover()  # delay=True: leaves the stream closed
        except OSError as e:
            if not self.rotation_failed:
                self.rotation_failed = True
                print(
                    f"log file {self.baseFilename}: cannot rotate ({e.strerror or e}); "
                    "writing on past its size limit",
                    file=sys.stderr,
                    flush=True,
                )
            self.maxBytes = 0  # do not try again on every batch
        if self.stream is None:
            self.stream = self._open()

    def _over(self, more: int) -> bool:
        """Whether ``more`` bytes would take the file over ``maxBytes`` (when it rotates)."""
        return bool(self.maxBytes and self.backupCount) and self._size + more > self.maxBytes

    def _follow_the_path(self) -> None:
        """Open the file if closed; reopen it if the path now names another file or none
        (``WatchedFileHandler``'s test, one ``stat`` per batch) and write a line saying so."""
        if self.stream is None:
            self.stream = self._open()
            return
        try:
            st = os.stat(self.baseFilename)
        except FileNotFoundError:
            reason = "missing"
        else:
            if (st.st_dev, st.st_ino) == self._identity:
                self._size = st.st_size  # another program may have truncated it (copytruncate)
                return
            reason = "replaced"
        old, self.stream = self.stream, None
        with contextlib.suppress(OSError):
            old.close()  # frees a deleted file's disk space
        self.stream = self._open()
        self.reopened += 1
        note = logging.makeLogRecord(
            {
                "name": self.name or "",
                "levelno": logging.WARNING,
                "levelname": "WARNING",
                "msg": "log_file_reopened",
                "reason": reason,
                "reopened": self.reopened,
            }
        )
        self._write_whole(self._encode([note]))  # best effort: not a record of the caller's

    def _write_whole(self, run: list[bytes]) -> tuple[int, OSError | None]:
        """Write ``run`` in one system call; on a short write cut the file back to the last
        whole line. Returns how many lines are in the file, and the error if any."""
        prefix = b"\n" if self._torn else b""
        data = prefix + b"".join(run) if prefix else b"".join(run)
        fd = self.stream.fileno()  # type: ignore[union-attr]
        try:
            written = os.write(fd, data)
        except OSError as e:
            return 0, e
        self._size += written
        if written == len(data):
            self._torn = False
            return len(run), None
        error = OSError(errno.ENOSPC, "short write (disk full?)")
        if written <= len(prefix):  # none of the run (at most the newline) reached the file
            self._torn = self._torn and not written
            return 0, error
        whole, keep = 0, len(prefix)
        while whole < len(run) and keep + len(run[whole]) <= written:
            keep += len(run[whole])
            whole += 1
        try:
            # O_APPEND: our bytes end where the offset is now, whatever the file held before.
            start = os.lseek(fd, 0, os.SEEK_CUR) - written
            os.ftruncate(fd, start + keep)
            self._size -= written - keep
            self._torn = False
        except OSError:
            self._torn = keep < written  # the piece stays: the next write ends it first
        return whole, error

    def _count_lost(self, lines: int) -> None:
        if lines:
            self.lost += lines
            if self.on_lost is not None:
                self.on_lost(lines)

    def _warn(self, error: OSError) -> None:
        if not self.warned:
            self.warned = True
            print(
                f"log file {self.baseFilename}: cannot write ({error.strerror or error}); "
                "dropping log lines until it works again (counted in "
                "inference_log_lines_lost_total)",
                file=sys.stderr,
                flush=True,
            )

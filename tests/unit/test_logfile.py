"""serving/logfile.py and the background writer on a full disk and with the file moved or
deleted while running: whole lines or nothing, a lost-line count that matches the file, and
no line lost silently."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import serving.logfile
from serving.logfile import WholeLineFileHandler
from serving.logs import JsonLineFormatter, configure_logging, flush_logs

REPO = Path(__file__).resolve().parents[2]


def record(i: int, pad: int = 0) -> logging.LogRecord:
    return logging.makeLogRecord(
        {"msg": "request", "levelname": "INFO", "levelno": 20, "request_id": f"id-{i}"}
        | {"pad": "x" * pad}
    )


def handler_at(path: Path, max_bytes: int = 0, backups: int = 0) -> WholeLineFileHandler:
    handler = WholeLineFileHandler(path, max_bytes, backups)
    handler.setFormatter(JsonLineFormatter())
    return handler


def read_lines(folder: Path, pattern: str = "r.log*") -> list[bytes]:
    """Every line of every log file, each checked to be whole (the file ends in a newline)."""
    lines: list[bytes] = []
    for path in sorted(folder.glob(pattern)):
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path.name} ends mid-line: {data[-40:]!r}"
        lines += data.splitlines()
    return lines


def request_ids(lines: list[bytes]) -> list[str]:
    """The request ids in ``lines``; every line must be valid JSON."""
    docs = [json.loads(line) for line in lines]
    return [d["request_id"] for d in docs if "request_id" in d]


class SmallDisk:
    """A disk of ``capacity`` bytes holding the files of ``folder``: ``os.write`` to one of them
    writes what still fits (a short write, as Linux does) and then fails with ENOSPC."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, folder: Path, capacity: int) -> None:
        self.folder = folder
        self.capacity = capacity
        self.real_write = os.write
        monkeypatch.setattr(serving.logfile.os, "write", self.write)

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())

    def write(self, fd: int, data) -> int:
        mine = os.fstat(fd)
        if not any(os.path.samestat(mine, p.stat()) for p in self.folder.iterdir()):
            return self.real_write(fd, data)
        room = self.capacity - self.used()
        if room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real_write(fd, bytes(data[:room]))


@pytest.mark.parametrize("rotation", [False, True])
def test_full_disk_leaves_whole_lines_and_counts_exactly_the_missing_ones(
    monkeypatch, tmp_path, rotation
):
    """Short writes, then ENOSPC, for batches (the background writer) and single lines, then
    room again: every line in the files is whole and ``lost`` is exactly what is missing."""
    folder = tmp_path / "logs"
    folder.mkdir()
    lost: list[int] = []
    handler = handler_at(folder / "r.log", 1_500 if rotation else 0, 50 if rotation else 0)
    handler.on_lost = lost.append
    disk = SmallDisk(monkeypatch, folder, capacity=4_000)
    sent = 0
    for round_ in range(3):  # full, room again, full again
        for size in (1, 7, 3, 20, 1, 1, 12):
            handler.emit_many([record(sent + k, pad=(sent + k) % 53) for k in range(size)])
            sent += size
            handler.emit(record(sent, pad=sent % 31))
            sent += 1
        disk.capacity += 3_000 if round_ == 0 else 0
    handler.close()
    ids = request_ids(read_lines(folder))
    assert len(ids) == len(set(ids))  # nothing written twice
    assert handler.lost == sum(lost) == sent - len(ids) > 0
    assert len(ids) > 20  # the disk took some lines


def test_lines_that_fit_in_a_short_write_are_kept(monkeypatch, tmp_path):
    handler = handler_at(tmp_path / "r.log")
    one = len(JsonLineFormatter().format(record(0))) + 1
    disk = SmallDisk(monkeypatch, tmp_path, capacity=2 * one + one // 2)
    handler.emit_many([record(i) for i in range(4)])  # same length: two and a half fit
    assert request_ids(read_lines(tmp_path)) == ["id-0", "id-1"] and handler.lost == 2
    disk.capacity = 10**6
    handler.emit(record(4))
    handler.close()
    assert request_ids(read_lines(tmp_path)) == ["id-0", "id-1", "id-4"]


def test_a_cut_that_fails_never_glues_the_next_line_onto_the_piece(monkeypatch, tmp_path):
    """If the file refuses to be cut back, the piece stays; the next line starts on its own."""
    path = tmp_path / "r.log"
    handler = handler_at(path)
    real_write = os.write
    mine = handler.stream.fileno()
    monkeypatch.setattr(
        serving.logfile.os,
        "write",
        lambda fd, data: real_write(fd, data[:10] if fd == mine else data),
    )

    def refuse(fd, length):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(serving.logfile.os, "ftruncate", refuse)
    handler.emit(record(0))
    monkeypatch.undo()
    handler.emit_many([record(1), record(2)])
    handler.close()
    piece, *rest = path.read_bytes().splitlines()
    assert len(piece) == 10 and request_ids(rest) == ["id-1", "id-2"] and handler.lost == 1


def test_a_file_left_mid_line_by_an_earlier_run_gets_a_newline_first(tmp_path):
    path = tmp_path / "r.log"
    path.write_bytes(b'{"event": "request", "request_id": "id-')  # a crash or an old bug
    handler = handler_at(path)
    handler.emit(record(1))
    handler.close()
    assert request_ids(path.read_bytes().splitlines()[1:]) == ["id-1"]


def test_a_failed_open_after_rotation_counts_the_rest_of_the_batch(monkeypatch, tmp_path):
    handler = handler_at(tmp_path / "r.log", max_bytes=500, backups=2)
    one = len(JsonLineFormatter().format(record(0))) + 1

    def refuse(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(handler, "_open", refuse)
    handler.emit_many([record(i) for i in range(10)])
    kept = request_ids(read_lines(tmp_path))
    assert len(kept) == 500 // one and handler.lost == 10 - len(kept)


def test_a_record_that_cannot_be_formatted_loses_only_itself(tmp_path, capsys):
    """A bad ``%`` argument used to take the whole 50 ms batch with it, uncounted."""
    lost: list[int] = []
    log = configure_logging(tmp_path / "r.log", name="bad-record", background=True)
    [background] = log.handlers
    background.targets[0].on_lost = lost.append
    log.info("request", extra={"request_id": "id-0"})
    log.info("odd %d", "not a number")
    log.info("request", extra={"request_id": "id-2"})
    flush_logs("bad-record")
    out = capsys.readouterr()
    assert request_ids(read_lines(tmp_path)) == ["id-0", "id-2"] and lost == [1]
    assert out.out.count("request_id") == 2  # stdout keeps the good lines too
    background.close()


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("how", ["moved", "deleted", "folder deleted", "replaced"])
def test_a_moved_or_deleted_log_file_is_reopened(tmp_path, background, how):
    folder = tmp_path / "logs"
    path = folder / "r.log"
    name = f"reopen-{how}-{background}"
    log = configure_logging(path, name=name, background=background)
    log.info("request", extra={"request_id": "before"})
    flush_logs(name)
    if how == "moved":
        path.rename(tmp_path / "moved.log")
    elif how == "deleted":
        path.unlink()
    elif how == "folder deleted":
        shutil.rmtree(folder)
    else:  # another program put a new file in its place (logrotate's "create")
        path.rename(tmp_path / "moved.log")
        path.write_bytes(b"")
    for i in range(3):
        log.info("request", extra={"request_id": f"after-{i}"})
    flush_logs(name)
    docs = [json.loads(line) for line in read_lines(folder)]
    assert [d.get("request_id") for d in docs] == [None, "after-0", "after-1", "after-2"]
    assert docs[0]["event"] == "log_file_reopened" and docs[0]["level"] == "WARNING"
    file_handler = log.handlers[0].targets[0] if background else log.handlers[0]
    assert file_handler.reopened == 1
    if how == "moved":
        assert request_ids(read_lines(tmp_path, "moved.log")) == ["before"]
    for handler in log.handlers:
        handler.close()


def test_rotation_still_works_after_a_reopen(monkeypatch, tmp_path):
    handler = handler_at(tmp_path / "r.log", max_bytes=1_000, backups=3)
    handler.emit_many([record(i) for i in range(5)])
    (tmp_path / "r.log").unlink()
    for i in range(5, 60, 5):
        handler.emit_many([record(k) for k in range(i, i + 5)])
    handler.close()
    assert len(list(tmp_path.glob("r.log.*"))) == 3
    for path in tmp_path.glob("r.log*"):
        assert 0 < path.stat().st_size <= 1_000
    oldest_first = [tmp_path / f"r.log.{i}" for i in (3, 2, 1)] + [tmp_path / "r.log"]
    ids = request_ids([line for p in oldest_first for line in p.read_bytes().splitlines()])
    assert ids == [f"id-{i}" for i in range(60 - len(ids), 60)]  # the newest, in order


def test_a_file_that_cannot_be_rotated_keeps_its_lines(monkeypatch, tmp_path, capsys):
    """A log file bind-mounted on its own cannot be renamed (EBUSY): every line after the
    first rotation used to be lost."""
    handler = handler_at(tmp_path / "r.log", max_bytes=500, backups=2)

    def busy(source, dest):
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(handler, "rotate", busy)
    for i in range(0, 20, 5):
        handler.emit_many([record(k) for k in range(i, i + 5)])
    handler.emit(record(20))
    handler.close()
    assert request_ids(read_lines(tmp_path)) == [f"id-{i}" for i in range(21)]
    assert handler.lost == 0 and capsys.readouterr().err.count("cannot rotate") == 1


def test_one_write_per_batch_and_no_per_line_system_call(monkeypatch, tmp_path):
    handler = handler_at(tmp_path / "r.log")
    calls: list[str] = []
    real_write, real_stat = os.write, os.stat

    def write(fd, data):
        if fd == handler.stream.fileno():  # other threads may write elsewhere meanwhile
            calls.append("write")
        return real_write(fd, data)

    def stat(path, *args, **kwargs):
        if os.fspath(path) == handler.baseFilename:
            calls.append("stat")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(serving.logfile.os, "write", write)
    monkeypatch.setattr(serving.logfile.os, "stat", stat)
    handler.emit_many([record(i) for i in range(200)])
    monkeypatch.undo()
    handler.close()
    assert calls == ["stat", "write"]  # one check that the file is still there, one write
    assert len(read_lines(tmp_path)) == 200


class BrokenPipe(io.StringIO):
    """stdout whose reader went away (``serve | head``, a closed terminal)."""

    def write(self, s: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


class ClosedFile(io.StringIO):
    """stdout closed under the server (any other error from a handler)."""

    def write(self, s: str) -> int:
        raise ValueError("I/O operation on closed file")

    def flush(self) -> None:
        raise ValueError("I/O operation on closed file")


@pytest.mark.parametrize("stdout", [BrokenPipe, ClosedFile])
def test_a_broken_stdout_neither_stops_the_writer_nor_the_file(
    monkeypatch, tmp_path, capsys, stdout
):
    monkeypatch.setattr(sys, "stdout", stdout())
    monkeypatch.setattr(logging, "raiseExceptions", False)  # no trace per batch on stderr
    log = configure_logging(tmp_path / "r.log", name="broken-stdout", background=True)
    [background] = log.handlers
    for i in range(3):
        log.info("request", extra={"request_id": f"id-{i}"})
        background._drain()  # the writer thread's own step: used to raise and end the thread
    flush_logs("broken-stdout")
    assert request_ids(read_lines(tmp_path)) == ["id-0", "id-1", "id-2"]
    background.close()
    if stdout is BrokenPipe:
        assert capsys.readouterr().err.count("stdout closed") == 1  # said once


def test_lines_logged_after_close_still_reach_the_file(tmp_path):
    """At exit ``atexit`` closes the writer; a thread may still log (uvicorn, the batcher)."""
    log = configure_logging(tmp_path / "r.log", name="after-close", background=True)
    [background] = log.handlers
    log.info("request", extra={"request_id": "id-0"})
    background.close()
    log.info("request", extra={"request_id": "id-1"})
    assert request_ids(read_lines(tmp_path)) == ["id-0", "id-1"]
    background.targets[0].close()


TINY_FS_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, sys
    from serving.logs import configure_logging, flush_logs
    lost = []
    with contextlib.redirect_stdout(io.StringIO()):
        log = configure_logging(sys.argv[1] + "/r.log", name="tiny", background=True,
                                on_lost=lost.append)
        for i in range(3000):
            log.info("request", extra={"request_id": f"id-{i}", "pad": "x" * (i % 97)})
            if i % 37 == 0:
                flush_logs("tiny")
        log.handlers[0].close()
    print(sum(lost))
    """
)


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs util-linux unshare")
def test_a_real_tiny_filesystem(tmp_path):
    """A 64 KB tmpfs in a private mount namespace (no root needed where user namespaces are
    allowed; skipped elsewhere): whole lines, and the count matches the file."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    mount_it = f"mount -t tmpfs -o size=64k tmpfs {mount}"
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", mount_it], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no private tmpfs here: {probe.stderr.decode(errors='replace')[:200]}")
    script = tmp_path / "fill.py"
    script.write_text(TINY_FS_SCRIPT)
    copy = tmp_path / "copy"
    copy.mkdir()
    shell = f"{mount_it} && {sys.executable} {script} {mount} && cp {mount}/r.log* {copy}/"
    done = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", shell],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    lost = int(done.stdout.split()[-1])
    ids = request_ids(read_lines(copy))
    assert lost > 0 and lost == 3000 - len(ids)

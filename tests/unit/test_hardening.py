"""Pure pieces of the hardening: bounded error text, the log file on a full disk, an unusable
log path, the body read timeout and its shutdown bound, the second signal, expired texts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
from pathlib import Path

import pytest

import serving.logfile
from serving.batcher import DynamicBatcher
from serving.errors import MAX_ERRORS, clip, public_errors, summarize, without_paths
from serving.limits import BodyTimeoutError, ReadTimeoutMiddleware, ReadTimeouts
from serving.logfile import WholeLineFileHandler
from serving.logs import configure_logging
from serving.settings import SettingsError
from serving.shutdown import ShutdownSignals


def test_error_parts_are_clipped_and_encodable():
    assert clip("\ud800") == "\\ud800"
    assert clip("x" * 1000).endswith("...") and len(clip("x" * 1000)) < 80
    assert clip(3) == 3
    errors = [
        {"type": "extra_forbidden", "loc": ("body", f"k{i}"), "msg": "no", "input": 1}
        for i in range(50)
    ]
    assert len(public_errors(errors)) == MAX_ERRORS
    assert "input" not in public_errors(errors)[0]
    assert summarize(errors).endswith(f"and {50 - MAX_ERRORS} more")
    json.dumps(public_errors([{"type": "t", "loc": ("\udc80",), "msg": "m"}])).encode()


def test_public_messages_lose_their_paths():
    assert without_paths("/srv/models/x: model directory does not exist") == (
        "<path>: model directory does not exist"
    )
    assert "models" not in without_paths("checksum mismatch in models/v1/model.skops")


def record(message: str = "request") -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)


def test_full_disk_loses_lines_quietly_and_counts_them(capsys):
    handler = WholeLineFileHandler("/dev/full", 0, 0)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for _ in range(5):
        handler.emit(record())
    handler.close()
    assert handler.lost == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err  # one warning, not a trace per line


def test_a_short_write_is_taken_back(tmp_path, monkeypatch):
    path = tmp_path / "r.log"
    handler = WholeLineFileHandler(path, 0, 0)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit(record("first"))
    real_write = os.write
    monkeypatch.setattr(serving.logfile.os, "write", lambda fd, data: real_write(fd, data[:3]))
    handler.emit(record("second line"))  # the disk fills after 3 bytes
    monkeypatch.undo()
    handler.emit(record("third"))
    handler.close()
    assert path.read_text() == "first\nthird\n" and handler.lost == 1


@pytest.mark.parametrize("where", ["directory", "under a file"])
def test_unusable_log_path_names_the_setting(tmp_path, where):
    (tmp_path / "file").write_text("x")
    path = tmp_path if where == "directory" else tmp_path / "file" / "r.log"
    with pytest.raises(SettingsError, match="INFERENCE_LOG_PATH"):
        configure_logging(path, name=f"unusable-{where}")


def test_read_only_log_path_names_the_setting(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(WholeLineFileHandler, "_open", refuse)
    with pytest.raises(SettingsError, match=r"INFERENCE_LOG_PATH.*Permission denied"):
        configure_logging(tmp_path / "r.log", name="read-only")


async def stalled_upload(timeouts: ReadTimeouts, on_start=None) -> int:
    """Run the middleware around an app that reads a body that never comes; the status."""
    never = asyncio.Event()
    sent: list[dict] = []

    async def receive():
        await never.wait()

    async def app(scope, receive, send):
        try:
            await receive()
        except BodyTimeoutError as e:
            await send({"type": "http.response.start", "status": e.status_code})

    async def send(message):
        sent.append(message)

    middleware = ReadTimeoutMiddleware(app, timeouts=timeouts)
    task = asyncio.create_task(middleware({"type": "http", "headers": []}, receive, send))
    await asyncio.sleep(0.05)
    if on_start:
        on_start()
    await asyncio.wait_for(task, 10)
    return sent[0]["status"]


def test_stalled_body_gets_408():
    assert asyncio.run(stalled_upload(ReadTimeouts(0.1, 5))) == 408


def test_shutdown_bounds_a_stalled_body_by_the_drain_timeout():
    timeouts = ReadTimeouts(body_timeout_s=600, drain_timeout_s=0.1)
    assert asyncio.run(stalled_upload(timeouts, on_start=timeouts.begin_drain)) == 408


def test_second_signal_hurries_and_is_not_passed_on(monkeypatch):
    calls: list[str] = []
    hook = ShutdownSignals(lambda: calls.append("first"), lambda: calls.append("second"),
                           logging.getLogger("t"))  # fmt: skip
    hook.previous = {signal.SIGINT: lambda s, f: calls.append("uvicorn")}
    for _ in range(3):
        hook._handle(signal.SIGINT, None)
    assert calls == ["first", "uvicorn", "second", "uvicorn"]


def test_expired_texts_are_never_run_when_queued_behind_a_batch():
    """Under load a caller's own timeout callback may run after the collector has taken its
    texts (same loop iteration); the batcher checks the deadline itself."""
    ran: list[str] = []
    release = threading.Event()

    def predict(texts):
        ran.extend(texts)
        if "hold" in texts:
            release.wait(10)
        return texts

    async def main():
        loop = asyncio.get_running_loop()
        real_time, offset = loop.time, [0.0]
        loop.time = lambda: real_time() + offset[0]  # time passes instantly for the loop
        batcher = DynamicBatcher(predict, max_batch_size=8, max_wait_s=0, max_queue=8)
        await batcher.start()
        hold = asyncio.create_task(batcher.submit(["hold"], timeout=600))
        while not ran:
            await asyncio.sleep(0.01)
        late = asyncio.create_task(batcher.submit(["late 1", "late 2"], timeout=60))
        await asyncio.sleep(0.01)
        offset[0] = 120.0  # the late texts' deadline has passed, not the holder's
        release.set()
        await hold
        fresh = await batcher.submit(["fresh"], timeout=60)
        with contextlib.suppress(Exception):
            await late
        await batcher.stop(1)
        return fresh.results, batcher.dropped_texts

    results, dropped = asyncio.run(main())
    assert results == ["fresh"] and ran == ["hold", "fresh"] and dropped == 2


def test_log_file_writes_whole_json_lines(tmp_path):
    log = configure_logging(tmp_path / "r.log", name="whole-lines")
    log.info("request", extra={"error": "bad \ud800 key"})
    for handler in log.handlers:
        handler.close()
    [line] = Path(tmp_path / "r.log").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["event"] == "request"

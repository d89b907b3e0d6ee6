"""serving/logs.py: one JSON line per record, the same fields as before, written in a thread."""

from __future__ import annotations

import json
import logging
import sys
import threading

import pytest
from pythonjsonlogger.json import JsonFormatter

import serving.logs
from serving.logs import JsonLineFormatter, configure_logging, flush_logs


def record(**extra) -> logging.LogRecord:
    base = {"msg": "request", "levelname": "INFO", "levelno": 20, "created": 1_800_000_000.25}
    return logging.makeLogRecord(base | extra)


def test_same_fields_as_python_json_logger():
    reference = JsonFormatter(
        "{timestamp}{levelname}{message}",
        style="{",
        rename_fields={"levelname": "level", "message": "event"},
        timestamp=True,
        json_ensure_ascii=False,
    )
    extra = {"request_id": "r-1", "status": 200, "latency_ms": 1.25, "text": ["é"], "n": None}
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        exc = sys.exc_info()
    for fields in (extra, extra | {"exc_info": exc}):
        ours = json.loads(JsonLineFormatter().format(record(**fields)))
        theirs = json.loads(reference.format(record(**fields)))
        assert ours == theirs
        assert list(ours)[:3] == ["timestamp", "level", "event"]


def test_a_line_is_encoded_once_and_odd_values_still_encode():
    formatter = JsonLineFormatter()
    r = record(big=2**70, obj=object())
    line = formatter.format(r)
    assert formatter.format(r) is line
    parsed = json.loads(line)
    assert parsed["big"] == 2**70 and parsed["obj"].startswith("<object")


def test_background_logging_writes_every_line_from_its_own_thread(tmp_path):
    log = configure_logging(tmp_path / "r.log", name="bg-test", background=True)
    [handler] = log.handlers
    assert handler.running and handler._writer is not threading.current_thread()
    for i in range(500):
        log.info("request", extra={"request_id": f"id-{i}", "status": 200})
    flush_logs("bg-test")
    lines = (tmp_path / "r.log").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["request_id"] for x in lines] == [f"id-{i}" for i in range(500)]
    handler.close()
    assert not handler.running  # closing stops the writer thread


def test_reconfiguring_stops_the_previous_writer(tmp_path):
    first = configure_logging(tmp_path / "a.log", name="bg-again", background=True)
    [old] = first.handlers
    first.info("one")
    configure_logging(tmp_path / "b.log", name="bg-again", background=True)
    assert not old.running
    assert json.loads((tmp_path / "a.log").read_text())["event"] == "one"  # written on close
    logging.getLogger("bg-again").handlers[0].close()


@pytest.mark.parametrize("background", [False, True])
def test_rotation_counts_bytes_itself(monkeypatch, tmp_path, background):
    monkeypatch.setattr(serving.logs, "MAX_LOG_BYTES", 2_000)
    log = configure_logging(tmp_path / "r.log", name=f"rot-{background}", background=background)
    for i in range(100):
        log.info("request", extra={"request_id": f"id-{i}", "status": 200})
    for handler in log.handlers:
        handler.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files[:3] == ["r.log", "r.log.1", "r.log.2"]
    for name in files:
        content = (tmp_path / name).read_bytes()
        assert len(content) <= 2_000
        assert all(json.loads(line) for line in content.decode().splitlines())

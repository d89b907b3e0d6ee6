"""The launcher (``python -m serving.serve``) and plain uvicorn as real processes: SIGTERM
under load drains and ends with the documented exit status; a second signal changes nothing;
SIGHUP is ignored and logged.

Everything talks to 127.0.0.1 on a free port, is bounded in requests and seconds, and every
process is killed by its PID in teardown whatever happens.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest
from loadgen import check_nothing_dropped, load_then_signal
from multiworker import json_lines

from loadtest.launcher import StageServer

LAUNCHER = ("-m", "serving.serve")
UVICORN = ("-m", "uvicorn")


@pytest.fixture
def start(tmp_path, small_model_dir):
    """Make (not start) a server: a stage under a launcher, its output in ``tmp_path``."""
    started: list[StageServer] = []

    def make(launcher: tuple[str, ...], stage: str = "fast", **env: object) -> StageServer:
        settings = {"MODEL_DIR": small_model_dir, "LOG_PATH": tmp_path / "requests.log"}
        server = StageServer(
            stage,
            launcher=launcher,
            env={f"INFERENCE_{k}": str(v) for k, v in (settings | env).items()},
            log_path=tmp_path / "server.log",
            cpu=None,
            ready_timeout=60,
        )
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop(timeout=10)


def check_drained(tmp_path: Path, outcomes: list) -> None:
    check_nothing_dropped(outcomes)
    lines = json_lines(tmp_path / "requests.log")
    [shutdown] = [x for x in lines if x["event"] == "shutdown"]
    assert shutdown["drain_complete"] is True
    assert 500 not in [x["status"] for x in lines if x["event"] == "request"]


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGINT)],
    ids=["term", "int"],
)
def test_launcher_drains_and_exits_0_even_on_a_second_signal(start, tmp_path, signals):
    server = start(LAUNCHER, MAX_BATCH_WAIT_MS=300).start()  # requests linger: some in flight
    returncode, outcomes = load_then_signal(server.url, server.proc, *signals)
    assert returncode == 0, server.log_text()
    check_drained(tmp_path, outcomes)
    # The final stage's own handler (serving.shutdown.ShutdownSignals) takes the second signal:
    # it logs it and hurries stalled uploads, and does not pass it on to the launcher.
    [second] = [x for x in json_lines(tmp_path / "requests.log") if x["event"] == "second_signal"]
    assert second["signal"] == "SIGINT"


def test_plain_uvicorn_drains_and_exits_as_terminated_by_sigterm(start, tmp_path):
    server = start(UVICORN, MAX_BATCH_WAIT_MS=300).start()
    returncode, outcomes = load_then_signal(server.url, server.proc, signal.SIGTERM)
    assert returncode == -signal.SIGTERM, server.log_text()  # a shell shows 143 (128 + 15)
    check_drained(tmp_path, outcomes)


def test_bad_setting_stops_the_launcher_with_a_message(start):
    server = start(LAUNCHER, "metrics", MAX_TEXT_CHARS="0").spawn()  # /ready never comes
    returncode = server.proc.wait(timeout=60)
    assert returncode != 0
    assert "INFERENCE_MAX_TEXT_CHARS" in server.log_text()
    assert "Traceback" not in server.log_text()  # a message, not a stack


@pytest.mark.parametrize("stage", ["fast", "metrics"])
def test_launcher_ignores_sighup_and_logs_it(start, stage):
    # SIGHUP (a closed terminal, kill -HUP) used to end the server at once, without a drain.
    # The final stage's own handler logs it to its log; the launcher covers every stage.
    server = start(LAUNCHER, stage).start()
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "signal_ignored" not in server.log_text():
        assert server.proc.poll() is None, server.log_text()
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.1)
    [line] = [json.loads(x) for x in server.log_text().splitlines() if "signal_ignored" in x]
    assert line["signal"] == "SIGHUP"
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0, server.log_text()

"""The launcher (``python -m serving.serve``) and plain uvicorn as real processes: SIGTERM
under load drains and ends with the documented exit status; a second signal changes nothing.

Everything talks to 127.0.0.1 on a free port, is bounded in requests and seconds, and every
process is killed by its PID in teardown whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = [sys.executable, "-m", "serving.serve"]
UVICORN = [sys.executable, "-m", "uvicorn", "inference_server:app"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A server process on a free port, its output in files under ``tmp_path``."""

    def __init__(self, command: list[str], tmp_path: Path, env: dict[str, object]) -> None:
        self.port = free_port()
        self.tmp_path = tmp_path
        full_env = os.environ | {f"INFERENCE_{k}": str(v) for k, v in env.items()}
        with open(tmp_path / "stdout.log", "wb") as out, open(tmp_path / "stderr.log", "wb") as err:
            self.proc = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT,
                env=full_env,
                stdout=out,
                stderr=err,
            )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return (self.tmp_path / "stderr.log").read_text()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited: {self.stderr()}")
            try:
                if httpx.get(f"{self.base}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail("server not ready in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> list[dict]:
        text = (self.tmp_path / "requests.log").read_text()
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def start(tmp_path, small_model_dir):
    started: list[Running] = []

    def run(command: list[str], **env: object) -> Running:
        settings = {"MODEL_DIR": small_model_dir, "LOG_PATH": tmp_path / "requests.log"}
        server = Running(command, tmp_path, settings | env)
        started.append(server)
        return server

    yield run
    for server in started:
        server.stop()


def load_then_signal(server: Running, *signals: signal.Signals) -> tuple[int, list]:
    """4 clients send /predict until 3 s after the first signal; the signals are sent while
    at least two requests are in flight. Returns the exit code and (sent, done, outcome)."""
    outcomes: list[tuple[float, float, object]] = []
    lock = threading.Lock()
    in_flight: dict[int, float] = {}
    stop_at = [time.monotonic() + 30.0]

    def worker(n: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=server.base, timeout=10, limits=limits) as client:
            for i in range(400):
                if time.monotonic() > stop_at[0]:
                    return
                sent = time.monotonic()
                with lock:
                    in_flight[n] = sent
                try:
                    r = client.post("/predict", json={"text": f"client {n} review {i}: good"})
                    result: object = r.status_code
                except httpx.TransportError as e:
                    result = type(e).__name__
                with lock:
                    del in_flight[n]
                    outcomes.append((sent, time.monotonic(), result))
                if result != 200:
                    time.sleep(0.05)

    def lingering() -> int:
        now = time.monotonic()
        with lock:
            return sum(now - sent > 0.05 for sent in in_flight.values())

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 15
        while not (len(outcomes) >= 20 and lingering() >= 2):
            assert time.monotonic() < deadline, "load did not build up"
            time.sleep(0.002)
        first_at = time.monotonic()
        for sig in signals:
            os.kill(server.proc.pid, sig)
            time.sleep(0.05)
        stop_at[0] = first_at + 3.0
        returncode = server.proc.wait(timeout=30)
    finally:
        stop_at[0] = 0
        for t in threads:
            t.join(20)
    return returncode, [(sent - first_at, done - first_at, r) for sent, done, r in outcomes]


def check_drained(server: Running, outcomes: list) -> None:
    before = [result for sent, _, result in outcomes if sent < 0]
    assert before and set(before) <= {200, 503}, before  # answered or refused, never dropped
    assert sum(1 for sent, done, r in outcomes if sent < 0 < done and r == 200) >= 2
    after = {result for sent, _, result in outcomes if sent >= 0}
    assert after <= {200, 503, "ConnectError", "ReadError", "RemoteProtocolError"}, after
    lines = server.log()
    [shutdown] = [x for x in lines if x["event"] == "shutdown"]
    assert shutdown["drain_complete"] is True
    assert 500 not in [x["status"] for x in lines if x["event"] == "request"]


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGINT)],
    ids=["term", "int"],
)
def test_launcher_drains_and_exits_0_even_on_a_second_signal(start, signals):
    server = start(LAUNCHER, MAX_BATCH_WAIT_MS=300)  # requests linger: some are in flight
    server.wait_ready()
    returncode, outcomes = load_then_signal(server, *signals)
    assert returncode == 0, server.stderr()
    check_drained(server, outcomes)
    # The final stage's own handler (serving.limits.ShutdownSignals) takes the second signal:
    # it logs it and hurries stalled uploads, and does not pass it on to the launcher.
    [second] = [x for x in server.log() if x["event"] == "second_signal"]
    assert second["signal"] == "SIGINT"


def test_plain_uvicorn_drains_and_exits_as_terminated_by_sigterm(start):
    server = start(UVICORN, MAX_BATCH_WAIT_MS=300)
    server.wait_ready()
    returncode, outcomes = load_then_signal(server, signal.SIGTERM)
    assert returncode == -signal.SIGTERM, server.stderr()  # a shell shows 143 (128 + 15)
    check_drained(server, outcomes)


def test_bad_setting_stops_the_launcher_with_a_message(start):
    server = start([*LAUNCHER, "--app-dir", "lessons/03_metrics"], MAX_TEXT_CHARS="0")
    returncode = server.proc.wait(timeout=60)
    assert returncode != 0
    assert "INFERENCE_MAX_TEXT_CHARS" in server.stderr()
    assert "Traceback" not in server.stderr()  # a message, not a stack

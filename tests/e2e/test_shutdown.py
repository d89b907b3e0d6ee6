"""The final stage as a real uvicorn process: body limits on the wire, graceful shutdown under
load (SIGTERM -> every accepted request answered -> exit 0), and bad settings stop start-up.

Everything talks to 127.0.0.1 on a free port, is bounded in requests and seconds, and the
process is killed by its PID in teardown whatever happens.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest
from loadgen import check_nothing_dropped, load_then_signal
from multiworker import json_lines

from loadtest.launcher import StageServer


def final_stage(tmp_path: Path, env: dict[str, object]) -> StageServer:
    """The final stage as a real process under the course's launcher (``python -m serving.serve``,
    which exits 0 after a complete drain), not started yet, unpinned; its output (stdout and
    stderr) goes to ``tmp_path/server.log``."""
    return StageServer(
        "fast",
        launcher=("-m", "serving.serve"),
        env={f"INFERENCE_{k}": str(v) for k, v in env.items()},
        log_path=tmp_path / "server.log",
        cpu=None,
        ready_timeout=60,
    )


def raw_exchange(port: int, head: bytes, chunks: list[bytes]) -> bytes:
    """Send a request head and some body bytes, never finishing the body; read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        for chunk in chunks:
            s.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = s.recv(65536)
            if not data:
                break
            answer += data
        return answer


@pytest.fixture
def server(tmp_path, small_model_dir):
    stage = final_stage(
        tmp_path,
        {
            "MODEL_DIR": small_model_dir,
            "LOG_PATH": tmp_path / "requests.log",
            "MAX_BODY_BYTES": 65536,
            "MAX_BATCH_WAIT_MS": 300,  # concurrent requests linger: some are in flight at SIGTERM
        },
    )
    try:
        stage.start()  # waits for /ready and one real prediction
        yield stage.proc, stage.port
    finally:
        stage.stop(timeout=10)


def test_real_server_limits_then_graceful_shutdown_under_load(server, tmp_path):
    proc, port = server
    base = f"http://127.0.0.1:{port}"

    # 413 before the body is read: a declared 50 MB body, of which nothing is sent.
    answer = raw_exchange(
        port,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000000\r\n\r\n",
        [],
    )
    assert answer.startswith(b"HTTP/1.1 413")
    # A chunked body is refused once it crosses the limit, without waiting for its end.
    chunk = b"x" * 16384
    answer = raw_exchange(
        port,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 6,  # 96 KiB > 64 KiB, no final 0-chunk
    )
    assert answer.startswith(b"HTTP/1.1 413")

    # Load: 4 clients, one connection per request, until 3 s after SIGTERM (bounded anyway).
    returncode, outcomes = load_then_signal(base, proc, signal.SIGTERM, exit_timeout=20)
    assert returncode == 0, (tmp_path / "server.log").read_text()
    # Sent before SIGTERM: answered (200), or reached the app after it and refused (503);
    # never dropped (a transport error), never a 500. Sent after: 503 or a closed socket.
    check_nothing_dropped(outcomes)

    lines = json_lines(tmp_path / "requests.log")
    [shutdown] = [x for x in lines if x["event"] == "shutdown"]
    assert "drained_texts" in shutdown
    statuses = [x["status"] for x in lines if x["event"] == "request"]
    assert 500 not in statuses


def test_bad_setting_stops_the_process(tmp_path):
    stage = final_stage(tmp_path, {"MAX_BATCH_SIZE": "0", "LOG_PATH": tmp_path / "r.log"})
    stage.spawn()  # no waiting for /ready: it never comes
    try:
        returncode = stage.proc.wait(timeout=60)
    finally:
        stage.stop(timeout=10)
    stderr = stage.log_text()
    assert returncode != 0
    assert "INFERENCE_MAX_BATCH_SIZE" in stderr
    assert "Traceback" not in stderr  # a message, not a stack

"""Hostile and broken clients against the final stage as a real process, over raw sockets.

Two ways to run it: the plain ``uvicorn inference_server:app`` (what an app can protect by
itself: body read timeout, shutdown bound) and with ``--http serving.protocol:...`` (header size
limit, header timeout, connection cap, uvicorn's own 400s logged), which the launcher
``python -m serving.serve`` uses by default. 127.0.0.1 only, bounded waits, every server
stopped by its PID.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from multiworker import json_lines

from loadtest.launcher import StageServer
from loadtest.rawhttp import request_bytes

pytestmark = pytest.mark.slow
PROTOCOL = ("-m", "uvicorn", "--http", "serving.protocol:LimitedHttpToolsProtocol")
PLAIN = ("-m", "uvicorn")
LAUNCHER = ("-m", "serving.serve")  # the protocol class by default; exit 0 after a full drain


def start(tmp_path: Path, launcher: tuple[str, ...], name: str, **env: object) -> StageServer:
    """The final stage on a free port, small model, its own log file."""
    log_dir = tmp_path / name
    log_dir.mkdir()
    settings = {"LOG_PATH": log_dir / "requests.log"} | env
    full_env = {f"INFERENCE_{k}": str(v) for k, v in settings.items()}
    server = StageServer("fast", env=full_env, cpu=None, launcher=launcher)
    server.log_path = log_dir / "server.out"
    return server.start()


def log_lines(server: StageServer) -> list[dict]:
    """The JSON lines the server logged so far."""
    return json_lines(Path(server.env["INFERENCE_LOG_PATH"]))


def wait_for_line(server: StageServer, match, timeout: float = 10.0) -> dict:
    """The first log line for which ``match(line)`` holds (the log is written after the send)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_lines(server):
            if match(line):
                return line
        time.sleep(0.05)
    raise AssertionError("no such log line")


def metric(server: StageServer, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in httpx.get(server.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def connect(server: StageServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=15)


def read_answer(sock: socket.socket) -> bytes:
    """Everything until the server closes (or 15 s pass)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def status_of(answer: bytes) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, small_model_dir):
    """The final stage with the protocol class and short limits."""
    server = start(
        tmp_path_factory.mktemp("guarded"),
        PROTOCOL,
        "guarded",
        MODEL_DIR=small_model_dir,
        HEADER_TIMEOUT_S=2,
        BODY_TIMEOUT_S=2,
        MAX_CONNECTIONS=16,
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory, small_model_dir):
    """The final stage under the plain uvicorn command."""
    server = start(
        tmp_path_factory.mktemp("plain"),
        PLAIN,
        "plain",
        MODEL_DIR=small_model_dir,
        BODY_TIMEOUT_S=2,
    )
    try:
        yield server
    finally:
        server.stop()


def test_oversized_head_gets_431_logged_and_counted(guarded):
    before = metric(guarded, "inference_limit_events_total", event="header_too_large")
    with connect(guarded) as s:  # a complete head of 40 KB
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
        assert status_of(read_answer(s)) == 431
    with connect(guarded) as s:  # a head that never ends: refused long before 8 MB
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        try:
            while sent < 8_000_000:
                s.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_answer(s)
        assert status_of(answer) == 431 or sent < 8_000_000
    assert metric(guarded, "inference_limit_events_total", event="header_too_large") == before + 2
    line = wait_for_line(guarded, lambda x: x.get("status") == 431)
    assert line["route"] == "unmatched" and line["error_type"] == "header_too_large"
    assert len(json.dumps(line)) < 1000  # the head itself is not logged
    assert httpx.get(guarded.url + "/health", timeout=5).status_code == 200


def test_launcher_answers_an_oversized_head_with_431(tmp_path, small_model_dir):
    """``python -m serving.serve`` runs the protocol class without being told to."""
    server = start(tmp_path, LAUNCHER, "launcher", MODEL_DIR=small_model_dir)
    try:
        with connect(server) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
            assert status_of(read_answer(s)) == 431
        assert metric(server, "inference_limit_events_total", event="header_too_large") == 1
        wait_for_line(server, lambda x: x.get("status") == 431)
    finally:
        server.stop()


def test_stalled_head_gets_408_and_a_silent_connection_is_closed(guarded):
    before = metric(guarded, "inference_limit_events_total", event="header_timeout")
    with connect(guarded) as silent, connect(guarded) as half:
        half.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        assert status_of(read_answer(half)) == 408
        assert read_answer(silent) == b""  # closed without an answer: nothing was asked
    assert metric(guarded, "inference_limit_events_total", event="header_timeout") == before + 2
    wait_for_line(guarded, lambda x: x.get("status") == 408 and x["route"] == "unmatched")
    wait_for_line(guarded, lambda x: x["event"] == "connection_closed")


@pytest.mark.parametrize("which", ["guarded", "plain"])
def test_stalled_body_gets_408(which, request):
    server = request.getfixturevalue(which)
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    with connect(server) as s:
        s.sendall(
            head + b"X-Request-ID: stalled-" + which.encode() + b"\r\nContent-Length: 100\r\n\r\n{"
        )
        answer = read_answer(s)
    assert status_of(answer) == 408, answer[:200]
    line = wait_for_line(server, lambda x: x.get("request_id") == f"stalled-{which}")
    assert line["status"] == 408 and line["route"] == "/predict"
    assert metric(server, "http_requests_total", method="POST", route="/predict", status="408") >= 1
    assert metric(server, "inference_limit_events_total", event="body_timeout") >= 1


@pytest.mark.parametrize("which", ["guarded", "plain"])
def test_aborted_upload_is_logged_as_aborted(which, request):
    server = request.getfixturevalue(which)
    with connect(server) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Request-ID: gone-" + which.encode() + b'\r\nContent-Length: 100\r\n\r\n{"te'
        )
        time.sleep(0.3)  # let the server start reading the body
    line = wait_for_line(server, lambda x: x.get("request_id") == f"gone-{which}")
    assert line["aborted"] is True and line["status"] is None
    assert metric(server, "http_requests_total", method="POST", route="/predict", status="aborted")


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"FROB / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["bad-content-length", "length-and-chunked", "unknown-method"],
)
def test_uvicorns_own_400s_are_logged_and_counted(guarded, raw):
    before = metric(guarded, "http_requests_total", method="OTHER", route="unmatched", status="400")
    before += metric(guarded, "http_requests_total", method="POST", route="unmatched", status="400")
    with connect(guarded) as s:
        s.sendall(raw)
        assert status_of(read_answer(s)) == 400
    after = metric(guarded, "http_requests_total", method="OTHER", route="unmatched", status="400")
    after += metric(guarded, "http_requests_total", method="POST", route="unmatched", status="400")
    assert after == before + 1
    wait_for_line(guarded, lambda x: x.get("error_type") == "bad_request")


def test_content_length_shorter_than_body_is_logged_with_the_status_sent(guarded):
    body = b'{"text": "a fine film"}'
    with connect(guarded) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Request-ID: short-length\r\nContent-Length: 5\r\n\r\n" + body
        )
        answer = read_answer(s)
    assert status_of(answer) == 400 and answer.count(b"HTTP/1.1 ") == 1
    wait_for_line(guarded, lambda x: x.get("request_id") == "short-length")
    lines = [x for x in log_lines(guarded) if x.get("request_id") == "short-length"]
    assert [x["status"] for x in lines if x["event"] == "request"] == [400]


def test_connection_cap_refuses_with_503(guarded):
    """Every slot busy (bodies on their way): a new connection gets 503 with Retry-After."""
    before = metric(guarded, "inference_limit_events_total", event="connection_refused")
    held = [connect(guarded) for _ in range(16)]
    try:
        for s in held:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.2)
        with connect(guarded) as extra:
            answer = read_answer(extra)
        assert status_of(answer) == 503 and b"\r\nretry-after: 1\r\n" in answer
    finally:
        for s in held:
            s.close()
    assert metric(guarded, "inference_limit_events_total", event="connection_refused") > before
    time.sleep(0.2)
    assert httpx.get(guarded.url + "/health", timeout=5).status_code == 200


def test_slowloris_at_twice_the_cap_does_not_keep_working_clients_out(guarded):
    """32 sockets (twice the cap of 16) that send one byte and reconnect 0.5 s after the server
    closes them: a working client still gets in, because the connection that waited longest
    for a head makes room."""
    stop = threading.Event()

    def slowloris() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError), connect(guarded) as s:
                s.sendall(b"G")
                s.settimeout(0.5)
                while not stop.is_set():  # until the server closes it
                    with contextlib.suppress(TimeoutError):
                        if not s.recv(1024):
                            break
            stop.wait(0.5)

    attackers = [threading.Thread(target=slowloris) for _ in range(32)]
    for t in attackers:
        t.start()
    statuses = []
    try:
        time.sleep(1.5)  # the cap is full of them
        for _ in range(40):
            time.sleep(0.1)
            try:
                with httpx.Client(timeout=5) as client:  # a new connection each time
                    statuses.append(client.get(guarded.url + "/health").status_code)
            except httpx.TransportError:
                statuses.append(0)
    finally:
        stop.set()
        for t in attackers:
            t.join(10)
    assert statuses.count(200) >= 36, statuses  # at least 90 %
    assert metric(guarded, "inference_limit_events_total", event="connection_evicted") > 0


def send_in_pieces(sock: socket.socket, raw: bytes, cuts: list[int]) -> None:
    """Send ``raw`` cut at ``cuts``, pausing between pieces so the server reads them apart."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        sock.sendall(raw[start:end])
        time.sleep(0.05)


def read_statuses(sock: socket.socket, count: int) -> list[int]:
    """The statuses of ``count`` answers (or fewer if the server closes first)."""
    data = b""
    sock.settimeout(15)
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while data.count(b"HTTP/1.1 ") < count and (chunk := sock.recv(65536)):
            data += chunk
    return [int(x) for x in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_pipelined_burst_split_mid_request_gets_300_answers(guarded, method):
    """Issue 22: 300 requests of about 340 bytes in three pieces, the middle one 40 KB, each
    piece beginning or ending mid-request (under the default 32 KB head limit)."""
    agent = b"User-Agent: pipeline-test/1.0 " + b"a" * 200 + b"\r\nAccept: */*\r\n"
    if method == "GET":
        one = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + agent + b"\r\n"
    else:
        body = b'{"text": "a fine film"}'
        one = request_bytes("/predict", body, agent)
    raw = one * 300
    first = len(one) * 5 + len(one) // 2
    with connect(guarded) as s:
        send_in_pieces(s, raw, [first, first + 40_000])
        assert read_statuses(s, 300) == [200] * 300


def test_oversized_trailer_gets_431_and_an_endless_one_is_cut(guarded):
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    head += b"Content-Type: application/json\r\n\r\n"
    body = b'17\r\n{"text": "a fine film"}\r\n0\r\n'
    with connect(guarded) as s:  # a complete 40 KB trailer section
        s.sendall(head + body + b"X-Big: " + b"a" * 40_000 + b"\r\n\r\n")
        assert status_of(read_answer(s)) == 431
    with connect(guarded) as s:  # a trailer field that never ends: cut long before 8 MB
        s.sendall(head + body + b"X-Big: ")
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < 8_000_000:
                s.sendall(b"a" * 65536)
                sent += 65536
        assert status_of(read_answer(s)) == 431 or sent < 8_000_000
    with connect(guarded) as s:  # a small trailer is fine
        s.sendall(head + body + b"X-Checksum: abc\r\n\r\n")
        assert status_of(read_answer(s)[:200]) == 200


@pytest.mark.parametrize("which", ["guarded", "launcher"])
def test_websocket_upgrade_is_answered_logged_and_closed(which, request, tmp_path):
    """A head with a line over 8 KB once stalled uvicorn's WebSocket protocol for good."""
    if which == "launcher":  # ws="none" there, and the protocol refuses upgrades by itself
        server = start(
            tmp_path, LAUNCHER, "ws", MODEL_DIR=request.getfixturevalue("small_model_dir")
        )
    else:
        server = request.getfixturevalue("guarded")  # uvicorn --http ... with --ws auto
    try:
        before = metric(server, "inference_limit_events_total", event="upgrade_refused")
        for n in range(3):
            with connect(server) as s:
                s.sendall(
                    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                    b"X-Request-ID: ws-%d\r\nX-Long: %s\r\n\r\n" % (n, b"l" * 9000)
                )
                assert status_of(read_answer(s)) == 404  # answered, then closed by the server
        assert metric(server, "inference_limit_events_total", event="upgrade_refused") == before + 3
        line = wait_for_line(server, lambda x: x.get("request_id") == "ws-2")
        assert line["status"] == 404 and line["path"] == "/ws"
        if which == "launcher":
            with connect(server) as s:  # one still on its way when the signal comes
                s.sendall(
                    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                    b"Upgrade: websocket\r\n\r\n"
                )
                server.proc.send_signal(signal.SIGTERM)
                server.proc.wait(30)
            assert server.proc.returncode == 0
    finally:
        if which == "launcher":
            server.stop()


def test_a_client_that_never_reads_does_not_hold_shutdown(tmp_path, small_model_dir):
    """Pipelined requests whose answers are never read: the transport's writes back up. The drain
    deadline closes the connection and the shutdown line says so."""
    server = start(tmp_path, LAUNCHER, "reader", MODEL_DIR=small_model_dir, DRAIN_TIMEOUT_S=1)
    try:
        with connect(server) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setblocking(False)
            request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
            with contextlib.suppress(BlockingIOError):
                for _ in range(20_000):
                    s.send(request)
            time.sleep(2)  # the answers back up
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(30)  # today: until the client goes
        assert server.proc.returncode == 4  # the launcher: the drain did not end on its own
        shutdown = wait_for_line(server, lambda x: x["event"] == "shutdown")
        assert shutdown["drain_complete"] is False
        assert shutdown["connections_closed_by_force"] >= 1
        wait_for_line(server, lambda x: x.get("reason") == "drain_forced_close")
    finally:
        server.stop()


@pytest.mark.parametrize(
    "launcher,exit_code",
    [(PLAIN, -signal.SIGTERM), (PROTOCOL, -signal.SIGTERM), (LAUNCHER, 0)],
    ids=["plain", "protocol", "launcher"],
)
def test_unfinished_upload_does_not_hold_shutdown(tmp_path, small_model_dir, launcher, exit_code):
    """Uvicorn re-raises SIGTERM after its graceful shutdown (a shell shows 143); the launcher
    exits 0 only after a complete drain (serving/serve.py)."""
    server = start(
        tmp_path,
        launcher,
        "drain",
        MODEL_DIR=small_model_dir,
        DRAIN_TIMEOUT_S=1,
        BODY_TIMEOUT_S=300,
    )
    try:
        with connect(server) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.3)
            server.proc.send_signal(signal.SIGTERM)
            server.proc.wait(30)  # far below the 300 s body timeout
            assert status_of(read_answer(s)) == 408
        assert server.proc.returncode == exit_code
        shutdown = wait_for_line(server, lambda x: x["event"] == "shutdown")
        assert shutdown["drain_complete"] is True
    finally:
        server.stop()


def test_second_ctrl_c_answers_in_flight_requests_and_writes_the_shutdown_line(
    tmp_path, small_model_dir
):
    server = start(tmp_path, PLAIN, "ctrlc", MODEL_DIR=small_model_dir, MAX_BATCH_WAIT_MS=50)
    statuses: list[int] = []

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for _ in range(30):
                try:
                    statuses.append(c.post("/predict", json={"text": "fine"}).status_code)
                except httpx.TransportError:
                    return

    try:
        upload = connect(server)
        upload.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        server.proc.send_signal(signal.SIGINT)
        server.proc.wait(30)
        for t in threads:
            t.join(30)
        assert status_of(read_answer(upload)) == 408
        upload.close()
        assert 500 not in statuses and statuses
        wait_for_line(server, lambda x: x["event"] == "second_signal")
        wait_for_line(server, lambda x: x["event"] == "shutdown")
    finally:
        server.stop()

"""Load and a signal, for the e2e shutdown tests: clients send ``POST /predict`` until requests
linger inside the server, the test sends signal(s), the clients stop 3 s later.

Imported as ``from loadgen import ...`` (pytest puts this folder on ``sys.path``, as for
``multiworker``). Everything is bounded: every wait has a deadline, every thread is joined.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import httpx

# (sent, done, status code or transport error name); times relative to the first signal.
Outcome = tuple[float, float, object]
# After the signal a request may get 503, or find the socket closed (a connection still in the
# kernel's backlog when uvicorn closes its socket is reset: ReadError).
AFTER_SIGNAL = {200, 503, "ConnectError", "ReadError", "RemoteProtocolError"}


def predict_outcome(http: httpx.Client, text: str) -> object:
    """One ``POST /predict``: its status code, or the name of the transport error."""
    try:
        return http.post("/predict", json={"text": text}).status_code
    except httpx.TransportError as e:
        return type(e).__name__


def load_then_signal(
    url: str,
    proc: subprocess.Popen,
    *signals: signal.Signals,
    clients: int = 4,
    requests: int = 400,
    client_timeout: float = 10.0,
    build_up: tuple[int, int] = (20, 2),
    build_timeout: float = 15.0,
    exit_timeout: float = 30.0,
) -> tuple[int, list[Outcome]]:
    """``clients`` threads send /predict (a new connection each) until 3 s after the first
    signal. The signals go to ``proc`` once ``build_up`` = (answers so far, requests in flight
    for > 50 ms, i.e. sitting in a batch inside the server) is reached. Returns the exit code
    and every outcome, its times relative to the first signal."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    in_flight: dict[int, float] = {}  # client -> when its current request was sent
    stop_at = [time.monotonic() + 60.0]

    def client(n: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=url, timeout=client_timeout, limits=limits) as http:
            for i in range(requests):
                if time.monotonic() > stop_at[0]:
                    return
                sent = time.monotonic()
                with lock:
                    in_flight[n] = sent
                result = predict_outcome(http, f"client {n} review {i}: good")
                with lock:
                    del in_flight[n]
                    outcomes.append((sent, time.monotonic(), result))
                if result != 200:
                    time.sleep(0.05)

    def lingering() -> int:
        now = time.monotonic()
        with lock:
            return sum(now - sent > 0.05 for sent in in_flight.values())

    min_done, min_lingering = build_up
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + build_timeout
        while not (len(outcomes) >= min_done and lingering() >= min_lingering):
            assert time.monotonic() < deadline, "load did not build up"
            time.sleep(0.002)
        first_at = time.monotonic()
        for sig in signals:
            os.kill(proc.pid, sig)
            time.sleep(0.05)
        stop_at[0] = first_at + 3.0
        returncode = proc.wait(timeout=exit_timeout)
    finally:
        stop_at[0] = 0
        for t in threads:
            t.join(client_timeout + 20)
    return returncode, [(sent - first_at, done - first_at, r) for sent, done, r in outcomes]


# A request's "sent" time is taken before its client opens the connection (keep-alive is off).
# One whose connection was still in the kernel's accept backlog when the server closed its
# listening socket is reset: the server never accepted it, so it is not a dropped request. On a
# busy machine that window reaches a few hundred milliseconds before the signal.
BACKLOG_WINDOW_S = 0.5


def check_nothing_dropped(outcomes: list[Outcome]) -> None:
    """Sent before the signal: answered (200) or refused (503), never dropped, never a 500 (in
    the last :data:`BACKLOG_WINDOW_S` before it, also a connection the server never accepted);
    at least two requests in flight at the signal answered; after it, only
    :data:`AFTER_SIGNAL`."""
    assert any(sent < 0 for sent, _, _ in outcomes), "no request before the signal"
    before = [result for sent, _, result in outcomes if sent < -BACKLOG_WINDOW_S]
    assert set(before) <= {200, 503}, before
    just_before = {result for sent, _, result in outcomes if -BACKLOG_WINDOW_S <= sent < 0}
    assert just_before <= AFTER_SIGNAL, just_before  # never a 500, never a half-sent answer
    answered_after = sum(1 for sent, done, r in outcomes if sent < 0 < done and r == 200)
    assert answered_after >= 2, "the requests in flight at the signal were not all answered"
    after = {result for sent, _, result in outcomes if sent >= 0}
    assert after <= AFTER_SIGNAL, after

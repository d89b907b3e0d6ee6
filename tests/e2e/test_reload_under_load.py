"""The rollout stage as a real process: a SIGHUP reload to another artifact under load fails no
request, and every client's answers switch version exactly once (old ... old, new ... new)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import threading
import time

from loadtest.launcher import StageServer
from loadtest.rollout_cost import closed_loop
from sentiment_model import load_model

TEXTS = ["A warm, funny film.", "Dull and far too long.", "Not bad at all.", "I hated it."]
CLIENTS = 4


def wait_for(condition, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def test_sighup_reload_under_load_fails_nothing_and_switches_each_client_once(
    tmp_path, small_model_dir, second_model_dir
):
    old, new = load_model(small_model_dir).version, load_model(second_model_dir).version
    root = tmp_path / "models"
    shutil.copytree(small_model_dir, root / "a")
    shutil.copytree(second_model_dir, root / "b")
    link = root / "current"
    link.symlink_to("a")
    request_log = tmp_path / "requests.log"
    server = StageServer(
        "rollout",
        env={"INFERENCE_MODEL_DIR": str(link), "INFERENCE_LOG_PATH": str(request_log)},
        log_path=tmp_path / "server.log",
        cpu=None,
        ready_timeout=60,
    )
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        server.start()
        outcomes, threads = closed_loop(server.url, CLIENTS, stop, TEXTS)
        wait_for(lambda: len(outcomes) >= 60, 20, "no load")
        switched = root / "current.new"
        switched.symlink_to("b")
        switched.replace(link)  # atomic, as a mounted volume's update
        signalled = time.monotonic()
        os.kill(server.pid, signal.SIGHUP)

        def reloaded() -> bool:
            return request_log.is_file() and '"model_reloaded"' in request_log.read_text()

        wait_for(reloaded, 30, "no model_reloaded line")
        answered = len(outcomes)
        wait_for(lambda: len(outcomes) >= answered + 60, 20, "no load after the reload")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        code = server.stop()
    assert code == 0, server.log_tail()

    assert {result for _, _, result, _, _ in outcomes} == {200}  # not one request failed
    for n in range(CLIENTS):
        versions = [v for _, _, _, v, client in sorted(outcomes) if client == n]
        switches = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
        assert switches == [old, new], (n, switches)  # each client: old ... old, new ... new

    lines = [json.loads(x) for x in request_log.read_text().splitlines()]
    [started] = [x for x in lines if x["event"] == "model_reload_started"]
    [done] = [x for x in lines if x["event"] == "model_reloaded"]
    assert (started["trigger"], started["model_version"]) == ("signal", old)
    assert (done["model_version"], done["previous_version"]) == (new, old)
    assert not [x for x in lines if x["event"] == "model_reload_failed"]

    # The reload's effect on latency, printed (the measured figures: loadtest/rollout_cost.py).
    def p99(rows) -> float:
        ms = sorted((d - s) * 1000 for s, d, _, _, _ in rows)
        return round(statistics.quantiles(ms, n=100, method="inclusive")[98], 1)

    before = [o for o in outcomes if o[0] < signalled]
    during = [o for o in outcomes if signalled <= o[0] < signalled + done["load_seconds"] + 0.5]
    print(f"p99 before {p99(before)} ms, around the reload {p99(during)} ms ({len(during)} req)")

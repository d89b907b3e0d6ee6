"""The automatic rollback (monitoring/auto_rollback.py) against a fake Prometheus and a fake
server: two HTTP servers in threads on 127.0.0.1 that answer from a script."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from monitoring import auto_rollback


def alert(name: str, state: str) -> dict:
    return {
        "labels": {"alertname": name, "severity": "critical", "job": "inference"},
        "annotations": {"summary": "5% of requests fail with 5xx while a canary serves"},
        "state": state,
        "activeAt": "2026-12-04T05:00:00Z",
        "value": "5e-02",
    }


@contextmanager
def fake(answers: list) -> Iterator[tuple[str, list]]:
    """A server answering each request with the next of ``answers`` (status, body); the last is
    repeated. Yields its URL and the requests it got (path, headers, body)."""
    seen: list = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen.append((self.path, dict(self.headers), self.rfile.read(length)))
            status, body = answers[min(len(seen), len(answers)) - 1]
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def alerts(*items: dict) -> tuple[int, dict]:
    return 200, {"status": "success", "data": {"alerts": list(items)}}


def log_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_firing_canary_alert_reloads_the_stable_model_once(capsys, monkeypatch):
    script = [
        alerts(),
        alerts(alert("InferenceCanaryErrorRatioHigh", "pending")),  # not yet: `for:` runs
        alerts(alert("InferenceLatencyP99High", "firing")),  # not a rollback alert
        alerts(alert("InferenceCanaryErrorRatioHigh", "firing")),
    ]
    reloaded = [(200, {"model_version": "aaaaaaaaaaaa", "previous_version": "bbbbbbbbbbbb"})]
    monkeypatch.setenv("INFERENCE_ADMIN_TOKEN", "s3cret")
    with fake(script) as (prom, polls), fake(reloaded) as (server, posts):
        args = ["--prometheus", prom, "--server", server, "--model-dir", "models/sentiment-a"]
        code = auto_rollback.main([*args, "--interval", "0.01", "--timeout", "10"])
    assert code == auto_rollback.EXIT_ROLLED_BACK
    assert len(polls) == 4 and all(path == "/api/v1/alerts" for path, _, _ in polls)
    [(path, headers, body)] = posts
    assert path == "/admin/reload" and headers["Authorization"] == "Bearer s3cret"
    assert json.loads(body) == {"model_dir": "models/sentiment-a"}
    events = log_lines(capsys)
    assert [e["event"] for e in events] == [
        "auto_rollback_watching",
        "auto_rollback_alert",
        "auto_rollback_done",
    ]
    assert events[1]["alertname"] == "InferenceCanaryErrorRatioHigh"
    assert events[2]["model_version"] == "aaaaaaaaaaaa"


def test_a_refused_reload_is_retried_then_given_up(capsys):
    busy = [(409, {"detail": "a reload is already running"})]
    script = [alerts(alert("InferenceShadowDisagreementHigh", "firing"))]
    with fake(script) as (prom, _), fake(busy) as (server, posts):
        code = auto_rollback.watch(
            prom, lambda: auto_rollback.admin_reload(server, "t"), interval=0.01, attempts=2
        )
    assert code == auto_rollback.EXIT_ACTION_FAILED and len(posts) == 2
    failed = [e for e in log_lines(capsys) if e["event"] == "auto_rollback_failed"]
    assert [e["attempt"] for e in failed] == [1, 2]
    assert "409" in failed[0]["error"] and "already running" in failed[0]["error"]


def test_without_an_alert_it_stops_at_the_timeout_having_done_nothing(capsys):
    acted = []
    with fake([alerts(alert("InferenceCanaryErrorRatioHigh", "pending"))]) as (prom, polls):
        code = auto_rollback.watch(prom, lambda: acted.append(1) or {}, interval=0.05, timeout=0.3)
    assert code == auto_rollback.EXIT_QUIET and acted == [] and len(polls) >= 2
    assert log_lines(capsys)[-1]["event"] == "auto_rollback_quiet"


def test_a_command_can_be_the_action(capsys, tmp_path):
    marker = tmp_path / "rolled-back"
    with fake([alerts(alert("InferenceCanaryErrorRatioHigh", "firing"))]) as (prom, _):
        code = auto_rollback.main(
            ["--prometheus", prom, "--command", f"touch {marker}", "--interval", "0.01"]
        )
    assert code == 0 and marker.exists()
    assert log_lines(capsys)[-1]["command"] == f"touch {marker}"


def test_the_reload_needs_the_token(monkeypatch):
    monkeypatch.delenv("INFERENCE_ADMIN_TOKEN", raising=False)
    with pytest.raises(SystemExit) as e:
        auto_rollback.main(["--prometheus", "http://x", "--server", "http://y"])
    assert e.value.code == 2


def test_canary_off_switches_the_canary_off_through_the_server(capsys, monkeypatch):
    script = [alerts(), alerts(alert("InferenceCanaryErrorRatioHigh", "firing"))]
    switched = [
        (200, {"canary_version": "cccccccccccc", "fraction": 0.0, "previous_fraction": 0.3})
    ]
    monkeypatch.setenv("INFERENCE_ADMIN_TOKEN", "s3cret")
    with fake(script) as (prom, polls), fake(switched) as (server, posts):
        args = ["--prometheus", prom, "--server", server, "--canary-off", "--interval", "0.01"]
        code = auto_rollback.main(args)
    assert code == auto_rollback.EXIT_ROLLED_BACK and len(polls) == 2
    [(path, headers, body)] = posts
    assert path == "/admin/canary" and headers["Authorization"] == "Bearer s3cret"
    assert json.loads(body) == {"fraction": 0}
    done = log_lines(capsys)[-1]
    assert done["event"] == "auto_rollback_done"
    assert (done["canary_version"], done["fraction"], done["previous_fraction"]) == (
        "cccccccccccc",
        0.0,
        0.3,
    )


def test_canary_off_without_a_canary_on_the_server_fails_and_says_why(capsys):
    none = [(409, {"detail": "no canary model is loaded"})]
    script = [alerts(alert("InferenceCanaryErrorRatioHigh", "firing"))]
    with fake(script) as (prom, _), fake(none) as (server, posts):
        code = auto_rollback.watch(
            prom, lambda: auto_rollback.canary_off(server, "t"), interval=0.01, attempts=2
        )
    assert code == auto_rollback.EXIT_ACTION_FAILED and len(posts) == 2
    failed = [e for e in log_lines(capsys) if e["event"] == "auto_rollback_failed"]
    assert "409" in failed[0]["error"] and "no canary" in failed[0]["error"]


@pytest.mark.parametrize(
    "extra", [["--command", "true"], ["--model-dir", "models/sentiment-a"], []]
)
def test_canary_off_is_its_own_action_and_needs_the_token(monkeypatch, extra):
    if extra:
        monkeypatch.setenv("INFERENCE_ADMIN_TOKEN", "s3cret")
    else:
        monkeypatch.delenv("INFERENCE_ADMIN_TOKEN", raising=False)
    with pytest.raises(SystemExit) as e:
        auto_rollback.main(
            ["--prometheus", "http://x", "--server", "http://y", "--canary-off", *extra]
        )
    assert e.value.code == 2

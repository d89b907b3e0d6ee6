"""Unit tests of the request context, the rejection mapping, the SIGTERM hook and the launcher."""

from __future__ import annotations

import json
import logging
import signal
import sys

import pytest
import uvicorn

import serving.serve
import serving.shutdown
from serving.batcher import BatcherClosedError, QueueFullError, RequestTimeoutError
from serving.context import RequestContext, context_of, with_request_id
from serving.rejections import as_http_error
from serving.serve import (
    EXIT_DRAIN_INCOMPLETE,
    EXIT_OK,
    EXIT_STARTUP_FAILED,
    DrainingServer,
    parse_args,
)
from serving.shutdown import ShutdownSignals, drains_complete, record_drain
from serving.state import DRAINING, NotReadyError, ServerState


# --- request context --------------------------------------------------------------------------
def test_request_context_is_stored_once_and_read_back():
    scope: dict = {"type": "http"}
    context = RequestContext("abc-1").attach(scope)
    assert context_of(scope) is context and context.log == {}
    context.log["status_note"] = "x"
    assert context_of(scope).log == {"status_note": "x"}


def test_error_bodies_get_the_request_id_only_when_there_is_one():
    assert with_request_id({}, {"detail": "d"}) == {"detail": "d"}  # stage 2: no middleware
    scope: dict = {}
    RequestContext("rid-7").attach(scope)
    assert with_request_id(scope, {"detail": "d"}) == {"detail": "d", "request_id": "rid-7"}


# --- rejections -------------------------------------------------------------------------------
OVERLOADED = "server is overloaded, retry later"


@pytest.mark.parametrize(
    "error,reason,status,detail,headers",
    [
        (QueueFullError("full"), "queue_full", 503, OVERLOADED, {"Retry-After": "1"}),
        (RequestTimeoutError("no result within 0.2 s"), "timeout", 504, "no result within 0.2 s",
         None),
        (BatcherClosedError("closed"), "not_ready", 503, DRAINING, {"Retry-After": "1"}),
        (NotReadyError("model is loading"), "not_ready", 503, "model is loading",
         {"Retry-After": "5"}),
        (NotReadyError("model not loaded: sha256"), "not_ready", 503, "model not loaded: sha256",
         {"Retry-After": "60"}),
    ],
)  # fmt: skip
def test_each_refusal_has_its_answer_and_reason(error, reason, status, detail, headers):
    got_reason, answer = as_http_error(error)
    assert got_reason == reason
    assert (answer.status_code, answer.detail, answer.headers) == (status, detail, headers)


# --- shutdown signals --------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_flips_first_then_hands_over(sig):
    calls: list[str] = []

    def server_handler(signum, frame) -> None:
        calls.append("server")  # uvicorn's handle_exit: the signal reaches the server

    original = signal.signal(sig, server_handler)
    try:
        hook = ShutdownSignals(lambda: calls.append("drain"), lambda: None, logging.getLogger("t"))
        hook.install()
        signal.raise_signal(sig)
        assert calls == ["drain", "server"]
        hook.uninstall()
        assert signal.getsignal(sig) == server_handler  # the server decides the exit
    finally:
        signal.signal(sig, original)


def test_sighup_is_ignored_and_logged_then_handed_back(caplog):
    calls: list[str] = []
    original = signal.getsignal(signal.SIGHUP)
    hook = ShutdownSignals(lambda: calls.append("drain"), lambda: None, logging.getLogger("t"))
    hook.install()
    try:
        # By default SIGHUP ends the process at once, without a drain: checked before raising.
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, original)
        with caplog.at_level(logging.WARNING, logger="t"):
            signal.raise_signal(signal.SIGHUP)
        assert calls == []  # no drain begins: nothing changes but the log
        [record] = caplog.records
        assert (record.getMessage(), record.signal) == ("signal_ignored", "SIGHUP")
    finally:
        hook.uninstall()
    assert signal.getsignal(signal.SIGHUP) == original


def test_drain_outcomes_are_recorded(monkeypatch):
    monkeypatch.setattr(serving.shutdown, "_drains", [])
    assert drains_complete()  # no app reported: nothing was left undone
    record_drain(True)
    assert drains_complete()
    record_drain(False)
    assert not drains_complete()


# --- launcher ---------------------------------------------------------------------------------
def test_second_signal_does_not_cut_the_drain_short():
    server = DrainingServer(uvicorn.Config("inference_server:app"))
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit and not server.force_exit
    server.handle_exit(signal.SIGINT, None)  # Ctrl-C while draining
    assert not server.force_exit
    assert server.received == [signal.SIGTERM, signal.SIGINT]


def test_captured_signals_are_not_raised_again():
    server = DrainingServer(uvicorn.Config("inference_server:app"))
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with server.capture_signals():
        assert signal.getsignal(signal.SIGTERM) == server.handle_exit
        signal.raise_signal(signal.SIGTERM)
        assert server.should_exit
    # leaving the block restored the handlers and did not re-raise SIGTERM (we are alive)
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_launcher_ignores_and_logs_sighup_for_every_stage(monkeypatch, capsys):
    monkeypatch.setattr(logging.getLogger("inference.launcher"), "handlers", [])
    server = DrainingServer(uvicorn.Config("inference_server:app"))
    before = signal.getsignal(signal.SIGHUP)
    with server.capture_signals():
        assert signal.getsignal(signal.SIGHUP) == server.handle_hup  # checked before raising
        signal.raise_signal(signal.SIGHUP)
        assert not server.should_exit and server.received == []
    assert signal.getsignal(signal.SIGHUP) == before
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (line["event"], line["signal"], line["role"]) == ("signal_ignored", "SIGHUP", "server")


@pytest.mark.parametrize(
    "started,drains,code",
    [(True, [True], EXIT_OK), (True, [], EXIT_OK), (True, [False], EXIT_DRAIN_INCOMPLETE),
     (False, [], EXIT_STARTUP_FAILED)],
)  # fmt: skip
def test_exit_code_tells_how_the_drain_ended(monkeypatch, started, drains, code):
    monkeypatch.setattr(serving.shutdown, "_drains", [])
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() adds --app-dir to it

    def run(self, sockets=None):
        self.started = started
        for complete in drains:
            record_drain(complete)

    monkeypatch.setattr(DrainingServer, "run", run)
    assert serving.serve.main(["--port", "0"]) == code


def test_command_line_defaults_and_checks():
    args = parse_args([])
    assert (args.app, args.app_dir, args.host, args.port, args.workers, args.http) == (
        "inference_server:app", ".", "127.0.0.1", 8000, 1,
        "serving.protocol:LimitedHttpToolsProtocol",
    )  # fmt: skip
    assert parse_args(["--http", "auto"]).http == "auto"  # uvicorn's own protocol on request
    args = parse_args(["--app-dir", "lessons/02_validated", "--workers", "2", "--port", "9"])
    assert (args.app_dir, args.workers, args.port) == ("lessons/02_validated", 2, 9)
    with pytest.raises(SystemExit):
        parse_args(["--workers", "0"])


def test_sigterm_flips_readiness_before_the_launcher_starts_draining():
    """The app's hook (installed at start-up, inside the launcher's capture_signals) runs
    first: /ready says 503 from the moment SIGTERM arrives."""
    server = DrainingServer(uvicorn.Config("inference_server:app"))
    state = ServerState()
    with server.capture_signals():
        hook = ShutdownSignals(state.begin_drain, lambda: None, logging.getLogger("t"))
        hook.install()
        signal.raise_signal(signal.SIGTERM)
        assert state.not_ready_reason() == DRAINING
        assert server.should_exit and server.received == [signal.SIGTERM]
        hook.uninstall()

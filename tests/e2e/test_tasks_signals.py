"""`python3 tasks.py serve` as a student runs it: it says when the server is ready, and SIGTERM
or Ctrl-C stops it cleanly (exit 0) without leaving the server behind.

tasks.py runs in a scratch copy of the repository whose `.venv/bin/python` is the interpreter
running the tests, so nothing is installed and the real `models/` and `.venv` are not touched.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def free_port() -> int:
    """A port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def scratch_root(tmp_path: Path) -> Path:
    """tasks.py, its inputs and the stages' code in a scratch root with a ready-made .venv."""
    for name in ("tasks.py", "requirements.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("lessons", "inference_server.py", "serving", "sentiment_model"):  # read only
        (tmp_path / name).symlink_to(ROOT / name)
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    spec = importlib.util.spec_from_file_location("scratch_tasks", tmp_path / "tasks.py")
    tasks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tasks)
    (tmp_path / ".venv" / ".requirements-sha256").write_text(tasks.requirements_digest())
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "LATEST").write_text("unused: INFERENCE_MODEL_DIR is set\n")
    return tmp_path


def start_serve(scratch_root: Path, small_model_dir: Path, *args: str):
    """Start `tasks.py serve ...`; return the process and its output lines up to "ready:"."""
    env = os.environ | {
        "INFERENCE_MODEL_DIR": str(small_model_dir),
        "INFERENCE_LOG_PATH": str(scratch_root / "requests.log"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, str(scratch_root / "tasks.py"), "serve", *args],
        cwd=scratch_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # bounded: the server either gets ready or exits
        lines.append(line.rstrip())
        if line.startswith("ready: ") or time.monotonic() > deadline:
            break
    return proc, lines


@pytest.mark.parametrize(
    ("stage_args", "sig"),
    [
        (["--stage", "naive"], signal.SIGTERM),
        (["--stage=validated"], signal.SIGINT),
        (["lifecycle"], signal.SIGINT),  # loads in the background too: its output says ready
        (["fast"], signal.SIGTERM),
    ],
)
def test_serve_waits_for_ready_and_stops_cleanly(scratch_root, small_model_dir, stage_args, sig):
    port = free_port()
    proc, lines = start_serve(scratch_root, small_model_dir, *stage_args, "--port", str(port))
    try:
        assert lines and lines[-1] == f"ready: http://127.0.0.1:{port}", "\n".join(lines)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the server runs as a child of tasks.py"
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "\n".join(lines) + rest
    assert "clean stop" in rest
    assert "Traceback" not in rest
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left behind: {[c.pid for c in alive]}"


def test_unknown_stage_lists_the_choices(scratch_root):
    done = subprocess.run(
        [sys.executable, str(scratch_root / "tasks.py"), "serve", "fastest"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    choices = "naive, validated, metrics, batched, lifecycle, hardened, fast"
    assert f"unknown stage 'fastest'; choose one of {choices}" in done.stderr


def serve_env(scratch_root: Path, model_dir: Path) -> dict[str, str]:
    """The environment of a scratch `tasks.py serve`: its model, its log, our code."""
    return os.environ | {
        "INFERENCE_MODEL_DIR": str(model_dir),
        "INFERENCE_LOG_PATH": str(scratch_root / "requests.log"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }


def logged_requests(log: Path) -> list[str]:
    """The access-log lines of the server's JSON log (every request the server saw)."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if '"event":"request"' in line.replace(" ", "")]


def run_serve(scratch_root: Path, model_dir: Path, *args: str, timeout: float = 90):
    """Run `tasks.py serve ...` to its end; whatever it started is stopped by PID if it hangs."""
    proc = subprocess.Popen(
        [sys.executable, str(scratch_root / "tasks.py"), "serve", *args],
        cwd=scratch_root,
        env=serve_env(scratch_root, model_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    tree = psutil.Process(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in [*tree.children(recursive=True), tree]:
            child.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_sighup_stops_the_server_and_leaves_no_orphan(scratch_root, small_model_dir):
    """A closed terminal (SIGHUP) used to kill tasks.py and leave its server running."""
    port = free_port()
    proc, lines = start_serve(scratch_root, small_model_dir, "naive", "--port", str(port))
    try:
        assert lines and lines[-1] == f"ready: http://127.0.0.1:{port}", "\n".join(lines)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children
        proc.send_signal(signal.SIGHUP)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _, alive = psutil.wait_procs(children, timeout=10)
        for child in alive:  # the test itself must not leave them either
            child.kill()
    assert not alive, f"left behind: {[c.pid for c in alive]}"
    assert proc.returncode == 0, rest
    assert "stopped by SIGHUP, passed on as SIGTERM: a clean stop" in rest


def test_a_model_that_cannot_load_is_named_once_and_serve_exits_1(scratch_root, tmp_path):
    """The final stage stays up but never ready without a model: say why once and stop, instead
    of polling /ready for 10 minutes with a WARNING line per poll in the student's log."""
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    done = run_serve(scratch_root, bad, "--port", str(free_port()))
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    reasons = [line for line in out.splitlines() if line.startswith("not ready: model not loaded:")]
    assert len(reasons) == 1 and "model file is missing" in reasons[0], out
    assert "ready: http" not in out
    assert logged_requests(scratch_root / "requests.log") == []  # no probe reached the log


def test_readiness_probes_never_reach_the_students_log(scratch_root, small_model_dir):
    port = free_port()
    proc, lines = start_serve(scratch_root, small_model_dir, "--port", str(port))
    try:
        assert lines and lines[-1] == f"ready: http://127.0.0.1:{port}", "\n".join(lines)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    log = (scratch_root / "requests.log").read_text()
    assert '"model_loaded"' in log and '"shutdown"' in log  # the server did log, to this file
    assert logged_requests(scratch_root / "requests.log") == []


def test_a_taken_port_is_named_before_anything_loads(scratch_root, small_model_dir):
    """Another program on the port used to answer the readiness poll (`ready:` after 0.1 s),
    then uvicorn failed to bind: exit 3 and no summary."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = run_serve(scratch_root, small_model_dir, "naive", "--port", str(port), timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "ready:" not in done.stdout
    [line] = [x for x in done.stdout.splitlines() if x.startswith("cannot serve:")]
    assert f"port {port} is already in use on 127.0.0.1: held by pid {os.getpid()} (" in line
    assert "serving.serve" not in done.stdout  # stopped before the server (and its model) started


def test_a_log_level_that_hides_model_loaded_still_reports_a_failed_load(
    scratch_root, tmp_path, monkeypatch
):
    """At INFERENCE_LOG_LEVEL=WARNING the model_loaded line (INFO) never comes: serve says it
    cannot announce `ready:` and waits quietly; a failed load (an ERROR line) still ends it."""
    monkeypatch.setenv("INFERENCE_LOG_LEVEL", "WARNING")
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    done = run_serve(scratch_root, bad, "--port", str(free_port()))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.count("not ready: model not loaded:") == 1
    assert logged_requests(scratch_root / "requests.log") == []

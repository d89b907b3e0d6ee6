#!/usr/bin/env python3
"""Everyday commands for the course, with nothing but Python 3.10+ installed.

    python3 tasks.py serve [STAGE] [--port 8000] [--workers N]       set up, then run a server
    python3 tasks.py test [pytest args]                              set up, then run the tests
    python3 tasks.py setup | model [args] | lab [args] | bench [args] | lint
    python3 tasks.py monitor [prometheus flags]                      Prometheus on 127.0.0.1:9090

STAGE is naive, validated, metrics or batched (the default); `--stage=naive` works too.
`setup` creates .venv, installs requirements.txt (again only when it changes) and trains the
default model if models/LATEST is missing. The Makefile offers the same commands as targets.
Stop a server, a test run, JupyterLab or a benchmark with Ctrl-C or SIGTERM: the signal is passed
on, the command waits for its child to finish and leaves no process behind.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import venv
from pathlib import Path

from serving.stages import FINAL_STAGE, STAGES  # stdlib only: importable before .venv exists

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".requirements-sha256"
SETUP_LOG = VENV / "setup.log"
TEST_TIME = VENV / ".last-full-test-seconds"
DEFAULT_STAGE = FINAL_STAGE
# The final stage answers 200 here once its model is loaded (503 before). Stages 1-3 have no such
# route (404): they load the model before they listen, so any answer means they are ready.
READY_PATH = "/ready"
# Measured from a fresh clone (README "Quick start" gives the figures and how they were taken).
FULL_SUITE_ESTIMATE = "8 to 13 minutes on 2 cores (notebooks and load tests most of it)"


def run(*cmd: str | Path, **kw) -> None:
    """Echo and run a command from the repository root; stop on failure."""
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True, **kw)


def minutes(seconds: float) -> str:
    """``75.2`` -> ``"1 min 15 s"``."""
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def step(title: str, estimate: str, *cmd: str | Path) -> None:
    """Run one set-up step with a status line; its full output goes to .venv/setup.log.

    pip's own output is hundreds of lines (and setuptools adds a warning block for editable
    installs that is meant for package authors), so it is kept in the log and shown only when
    the step fails. The status line is redrawn every second on a terminal; elsewhere (CI) a
    line every 15 s says the step is still going.
    """
    print(f"{title} (usually {estimate}) ...", flush=True)
    start = last_note = time.monotonic()
    tty = sys.stdout.isatty()
    seen = {"packages": 0, "last": ""}
    with open(SETUP_LOG, "a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(map(str, cmd))}\n")
        log.flush()
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=os.environ | {"PYTHONUNBUFFERED": "1"},  # lines as they come, not in bursts
        )

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                seen["packages"] += line.startswith("Collecting ")
                seen["last"] = line.strip() or seen["last"]

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        while reader.is_alive():
            reader.join(timeout=1.0)
            now = time.monotonic()
            if tty:
                status = f"  {now - start:5.0f} s  {seen['packages']} packages  {seen['last']}"
                print(f"\r{status[:100]:100s}", end="", flush=True)
            elif now - last_note >= 15:
                print(f"  ... {now - start:.0f} s, {seen['packages']} packages so far", flush=True)
                last_note = now
        code = proc.wait()
    if tty:
        print("\r" + " " * 100 + "\r", end="")
    if code:
        tail = SETUP_LOG.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        print("\n".join(tail))
        sys.exit(f"failed after {minutes(time.monotonic() - start)}; full output in {SETUP_LOG}")
    print(f"  done in {minutes(time.monotonic() - start)}", flush=True)


def requirements_digest() -> str:
    """sha256 of what is installed: requirements.txt without comments, and pyproject.toml."""
    pins = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    pins = [line.split("#", 1)[0].strip() for line in pins]
    text = "\n".join(p for p in pins if p) + (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()


def setup(train: bool = True) -> None:
    """Create .venv, install the pinned requirements and this project; with ``train``, train the
    default model if models/LATEST is missing (``model`` trains it itself)."""
    if sys.version_info < (3, 10):  # noqa: UP036 - tasks.py may be started by any python3
        sys.exit(f"Python 3.10 or newer is needed; this is {sys.version.split()[0]}")
    wanted = requirements_digest()
    if not PY.exists() or not STAMP.exists() or STAMP.read_text() != wanted:
        start = time.monotonic()
        if not PY.exists():
            print(
                f"setup [1/4] creating {VENV} with Python {sys.version.split()[0]} ...", flush=True
            )
            venv.create(VENV, with_pip=True)
            print(f"  done in {minutes(time.monotonic() - start)}", flush=True)
        SETUP_LOG.write_text("")
        step("setup [2/4] upgrading pip", "10-20 s", PY, "-m", "pip", "install", "-U", "pip")
        step(
            "setup [3/4] installing the pinned packages of requirements.txt",
            "1-2 minutes, plus the downloads on a fresh clone",
            *(PY, "-m", "pip", "install", "--progress-bar", "off", "-r", "requirements.txt"),
        )
        step(
            "setup [4/4] installing this project (editable)",
            "5 s",
            *(PY, "-m", "pip", "install", "--no-deps", "-e", "."),
        )
        STAMP.write_text(wanted)
        print(f"setup: .venv ready in {minutes(time.monotonic() - start)}", flush=True)
    if not train:
        return
    latest = ROOT / "models" / "LATEST"
    if latest.is_file():  # checked here: no Python process importing scikit-learn to find out
        print(f"default model present: {latest.read_text().strip()}", flush=True)
        return
    print("setup: training the default model, once (usually 20-90 s) ...", flush=True)
    run(PY, "-m", "sentiment_model.train", "--if-missing", "--models-root", ROOT / "models")


# --- child processes: signals are passed on, and nothing is left behind ----------------------


def run_child(
    cmd: list[str | Path],
    *,
    interrupt: int = signal.SIGINT,
    stop_is_clean: bool = True,
    on_start=None,
) -> int:
    """Run ``cmd`` in its own process group; pass Ctrl-C / SIGTERM on; return its exit code.

    The child gets its own group so that a Ctrl-C reaches it once (from us), not twice (from
    the terminal and from us: a second Ctrl-C makes uvicorn skip its graceful shutdown).
    ``interrupt`` is what Ctrl-C becomes for the child (JupyterLab asks "shut down? y/n" on
    SIGINT, so it gets SIGTERM). With ``stop_is_clean``, a child that ends because of a signal we
    passed on has stopped cleanly: 0 is returned (a server); otherwise its status is kept (an
    interrupted test run must not pass for a successful one). Whatever is still in the child's
    group afterwards is stopped.
    ``on_start(proc)`` runs once the child is started (``serve`` waits for readiness there).
    """
    forwarded: list[int] = []
    started: list[subprocess.Popen] = []

    def forward(signum, _frame) -> None:
        sig = interrupt if signum == signal.SIGINT else signum
        forwarded.append(sig)
        if started and started[0].poll() is None:
            started[0].send_signal(sig)

    # The handlers come first, so that a signal arriving while the child starts is not lost.
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, start_new_session=True)
    except BaseException:
        for s, handler in previous.items():
            signal.signal(s, handler)
        raise
    started.append(proc)
    if forwarded:  # a signal came in before the child existed
        proc.send_signal(forwarded[0])
    try:
        if on_start is not None:
            on_start(proc)
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:  # we are leaving early (an error in on_start): stop it
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stop_group(proc.pid)
    if not forwarded and stop_is_clean and code in (-signal.SIGINT, -signal.SIGTERM, 130, 143):
        forwarded.append(-code if code < 0 else code - 128)  # signalled directly, not through us
    if forwarded:
        sig = forwarded[0]
        name = signal.Signals(sig).name
        if not stop_is_clean:
            print(f"stopped by {name}: interrupted (exit status {code})", flush=True)
            return code if code >= 0 else 128 - code
        if code == 0:
            print(f"stopped by {name}: a clean stop", flush=True)
            return 0
        if code in (-sig, 128 + sig):  # uvicorn re-raises the signal after a graceful shutdown
            print(
                f"stopped by {name}: a clean stop (the child ended with exit status "
                f"{128 + sig} = 128 + {name}, as uvicorn does after a graceful shutdown)",
                flush=True,
            )
            return 0
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


def stop_group(pgid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, whatever is left in process group ``pgid``."""
    if not hasattr(os, "killpg"):  # Windows: no process groups to clean
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return  # the group is empty
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.1)


# --- serve ----------------------------------------------------------------------------------


def server_argv(stage: str, host: str, port: int, extra: list[str]) -> list[str | Path]:
    """The command that runs one stage's server: the one place that says how."""
    # serving.serve: uvicorn.Server with the hardened HTTP protocol, exit 0 after a complete
    # drain, and one /metrics over all workers with --workers N (lessons 4 and 6).
    where = ["--host", host, "--port", str(port)]
    app = STAGES[stage]
    return [PY, "-m", "serving.serve", "--app-dir", app.app_dir, app.app, *where, *extra]


def wait_until_ready(proc: subprocess.Popen, base: str, timeout: float = 600.0) -> None:
    """Poll the stage's readiness route until it says ready, then print the URL."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + READY_PATH, timeout=2):
                pass
        except urllib.error.HTTPError as e:
            if e.code != 404:  # 503: still loading
                time.sleep(0.2)
                continue
        except (OSError, ValueError):  # not listening yet
            time.sleep(0.2)
            continue
        print(f"ready: {base}", flush=True)
        return
    if proc.poll() is None:
        print(f"not ready after {timeout:.0f} s: {base}{READY_PATH} never answered", flush=True)


def parse_serve_args(args: list[str]) -> tuple[str, argparse.Namespace, list[str]]:
    """``[STAGE] [--stage STAGE] [--host H] [--port P] [launcher options]`` -> stage, opts, rest."""
    parser = argparse.ArgumentParser(
        prog="python3 tasks.py serve",
        allow_abbrev=False,
        description="Run one stage's server; other options go to python -m serving.serve.",
    )
    parser.add_argument("--stage", choices=STAGES, help=f"default: {DEFAULT_STAGE}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    positional = args[0] if args and not args[0].startswith("-") else None
    opts, extra = parser.parse_known_args(args[1:] if positional else args)
    if positional is None and any(word in STAGES for word in extra):  # serve --port 8001 naive
        positional = next(word for word in extra if word in STAGES)
        extra.remove(positional)
    if positional is not None:
        if positional not in STAGES:
            parser.error(f"unknown stage {positional!r}; choose one of {', '.join(STAGES)}")
        if opts.stage and opts.stage != positional:
            parser.error(f"two stages given: {positional!r} and --stage {opts.stage!r}")
    return positional or opts.stage or DEFAULT_STAGE, opts, extra


def serve(args: list[str]) -> int:
    """Run one stage's server on 127.0.0.1:8000 (default: the final, batched stage)."""
    stage, opts, extra = parse_serve_args(args)
    setup()
    cmd = server_argv(stage, opts.host, opts.port, extra)
    print("+", " ".join(map(str, cmd)), flush=True)
    host = "127.0.0.1" if opts.host in ("0.0.0.0", "::") else opts.host
    return run_child(cmd, on_start=lambda p: wait_until_ready(p, f"http://{host}:{opts.port}"))


# --- the other commands ---------------------------------------------------------------------


def test(args: list[str]) -> int:
    """Run pytest, saying up front how long it takes and at the end how long it took."""
    setup()
    whole = not any(not a.startswith("-") for a in args)  # no files or tests named
    if whole:
        last = TEST_TIME.read_text().strip() if TEST_TIME.exists() else ""
        note = f"; the last full run here took {minutes(float(last))}" if last else ""
        print(f"tests: the whole suite takes {FULL_SUITE_ESTIMATE}{note}.", flush=True)
        print("tests: each file prints its name, then a dot per passed test.", flush=True)
    start = time.monotonic()
    cmd = [PY, "-m", "pytest", *args]
    print("+", " ".join(map(str, cmd)), flush=True)
    code = run_child(cmd, stop_is_clean=False)
    took = time.monotonic() - start
    if whole and code in (0, 1):  # the whole suite ran (1: some tests failed)
        TEST_TIME.write_text(f"{took:.0f}\n")
    print(f"tests: finished in {minutes(took)} (exit status {code})", flush=True)
    return code


def lab(args: list[str]) -> int:
    """JupyterLab on notebooks/; as root (containers, CI images) it needs --allow-root."""
    setup()
    root = getattr(os, "geteuid", lambda: 1)() == 0
    cmd = [BIN / "jupyter", "lab", "notebooks", *args]
    cmd += ["--allow-root"] if root and "--allow-root" not in args else []
    print("+", " ".join(map(str, cmd)), flush=True)
    return run_child(cmd, interrupt=signal.SIGTERM)


def in_venv(*cmd: str | Path, stop_is_clean: bool = True, train: bool = True) -> int:
    """Set up (``train``: see :func:`setup`), then run ``.venv/bin/python cmd...`` as a child
    that signals reach."""
    setup(train)
    print("+", " ".join(map(str, [PY, *cmd])), flush=True)
    return run_child([PY, *cmd], stop_is_clean=stop_is_clean)


def lint(_args: list[str]) -> int:
    """ruff check and ruff format --check."""
    setup()
    run(PY, "-m", "ruff", "check", ".")
    run(PY, "-m", "ruff", "format", "--check", ".")
    return 0


def monitor(args: list[str]) -> int:
    """Run Prometheus with monitoring/prometheus.yml until Ctrl-C or SIGTERM (exit 0), or say how
    to install it (exit 1). ``args`` go to Prometheus and replace our flag of the same name,
    e.g. ``--web.listen-address=127.0.0.1:9191``."""
    from monitoring import prom  # standard library only: no set-up needed

    binary = prom.find_binary()
    if binary is None:
        print(prom.install_help(), file=sys.stderr)
        return 1
    prom.DATA_DIR.mkdir(parents=True, exist_ok=True)
    cmd = prom.command(binary, overrides=args)
    print("+", " ".join(cmd), flush=True)
    print("Prometheus scrapes 127.0.0.1:8000 (`make serve`); Ctrl-C stops it.", flush=True)
    return run_child(cmd)  # Prometheus exits 0 after a graceful shutdown (SIGINT or SIGTERM)


COMMANDS = {  # name -> function(args) returning an exit status
    "setup": lambda args: setup() or 0,
    "serve": serve,
    "test": test,
    "model": lambda args: in_venv("-m", "sentiment_model.train", *args, train=False),
    "lab": lab,
    "bench": lambda args: in_venv("-m", "loadtest.bench", *args, stop_is_clean=False),
    "monitor": monitor,
    "lint": lint,
}


def main(argv: list[str]) -> int:
    """Dispatch ``argv[0]`` to a command; return the exit status."""
    command, args = (argv[0], argv[1:]) if argv else ("help", [])
    if command in COMMANDS:
        return COMMANDS[command](args)
    print(__doc__)
    if command in ("help", "-h", "--help"):
        return 0
    print(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)
    except KeyboardInterrupt:  # Ctrl-C during set-up, before any child of ours runs
        sys.exit("interrupted")

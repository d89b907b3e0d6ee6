#!/usr/bin/env python3
"""Everyday commands for the course, with nothing but Python 3.10+ installed.

    python3 tasks.py serve [STAGE] [--port 8000] [--workers N]       set up, then run a server
    python3 tasks.py test [pytest args]                              set up, then run the tests
    python3 tasks.py setup | model [args] | lab [args] | bench [args] | lint
    python3 tasks.py monitor [--port P | --target HOST:PORT] [prometheus flags]
                                        Prometheus on 127.0.0.1:9090, scraping 127.0.0.1:8000
    python3 tasks.py promote VERSION | rollback      move models/LATEST through the gate, or back

STAGE is naive, validated, metrics, batched, lifecycle, hardened or fast (the default);
`--stage=naive` works too.
`setup` creates .venv, installs requirements.txt (again only when it changes) and trains the
default model if models/LATEST is missing. The Makefile offers the same commands as targets.
Stop a server, a test run, JupyterLab or a benchmark with Ctrl-C or SIGTERM: the signal is passed
on, the command waits for its child to finish and leaves no process behind. SIGHUP (the terminal
closed) stops the child the same way, as SIGTERM.
`serve` checks the port first (a port in use is named with its holder: exit 3), prints
`ready: URL` once its own server can answer, and stops with the reason (exit 1) when the final
stage's model cannot be loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import venv
from collections.abc import Callable
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
# The final stage answers 200 here once its model is loaded (503 with the reason before). serve
# does not poll it (each poll would be a line of the student's access log): see wait_until_ready.
READY_PATH = "/ready"
EXIT_NOT_STARTED = 3  # as python -m serving.serve: the server never started (the port is taken)
# Measured from a fresh clone (lessons/setup.md, "How long set-up takes", gives the figures).
FULL_SUITE_ESTIMATE = "about 15 minutes on 2 cores, in two lanes (notebooks and load tests most)"


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
        chosen = os.environ.get("INFERENCE_MODEL_DIR")  # what the server loads instead
        also = f" (the server loads INFERENCE_MODEL_DIR={chosen})" if chosen else ""
        print(f"default model present: {latest.read_text().strip()}{also}", flush=True)
        return
    print("setup: training the default model, once (usually 20-90 s) ...", flush=True)
    run(PY, "-m", "sentiment_model.train", "--if-missing", "--models-root", ROOT / "models")


# --- child processes: signals are passed on, and nothing is left behind ----------------------


def say(*lines: str) -> None:
    """Print to our stdout, which may be gone: after SIGHUP (the terminal closed) writing to it
    fails, and the child must still be stopped and waited for."""
    with contextlib.suppress(OSError, ValueError):
        print(*lines, sep="\n", flush=True)


# What the child gets when we receive each signal. SIGHUP (the terminal closed, an ssh session
# dropped) would end tasks.py and leave the child running without an owner: it becomes a stop.
_STOPS = ("SIGINT", "SIGTERM", "SIGHUP")  # Windows has no SIGHUP
STOP_SIGNALS = tuple(getattr(signal, name) for name in _STOPS if hasattr(signal, name))


def run_child(
    cmd: list[str | Path],
    *,
    interrupt: int = signal.SIGINT,
    stop_is_clean: bool = True,
    on_start: Callable[[subprocess.Popen], int | None] | None = None,
    on_exit: Callable[[], None] | None = None,
    stdout: int | None = None,
) -> int:
    """Run ``cmd`` in its own process group; pass Ctrl-C / SIGTERM / SIGHUP on; return its exit
    code.

    The child gets its own group so that a Ctrl-C reaches it once (from us), not twice (from
    the terminal and from us: a second Ctrl-C makes uvicorn skip its graceful shutdown).
    ``interrupt`` is what Ctrl-C becomes for the child (JupyterLab asks "shut down? y/n" on
    SIGINT, so it gets SIGTERM); SIGHUP becomes SIGTERM: a closed terminal stops the child
    gracefully instead of leaving it behind. With ``stop_is_clean``, a child that ends because
    of a signal we passed on has stopped cleanly: 0 is returned (a server); otherwise its status
    is kept (an interrupted test run must not pass for a successful one). Whatever is still in
    the child's group afterwards is stopped.
    ``on_start(proc)`` runs once the child is started (``serve`` waits for readiness there); when
    it returns an exit status, the child is stopped and that status returned (a server that can
    never be ready). ``on_exit()`` runs once the child and its group are gone, before the last
    line. ``stdout=subprocess.PIPE`` gives ``on_start`` the child's output to read.
    """
    forwarded: list[tuple[int, int]] = []  # (received, sent to the child)
    started: list[subprocess.Popen] = []

    def forward(signum, _frame) -> None:
        sig = interrupt if signum == signal.SIGINT else signal.SIGTERM
        forwarded.append((signum, sig))
        if started and started[0].poll() is None:
            started[0].send_signal(sig)

    # The handlers come first, so that a signal arriving while the child starts is not lost.
    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    try:
        proc = subprocess.Popen(
            [str(c) for c in cmd], cwd=ROOT, start_new_session=True, stdout=stdout
        )
    except BaseException:
        for s, handler in previous.items():
            signal.signal(s, handler)
        raise
    started.append(proc)
    if forwarded:  # a signal came in before the child existed
        proc.send_signal(forwarded[0][1])
    verdict = None
    try:
        if on_start is not None:
            verdict = on_start(proc)
        if verdict is not None and proc.poll() is None and not forwarded:
            proc.terminate()  # given up on (it can never be ready): a graceful stop
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
        if on_exit is not None:
            on_exit()
    if verdict is not None and not forwarded:
        return verdict
    if not forwarded and stop_is_clean and code in (-signal.SIGINT, -signal.SIGTERM, 130, 143):
        sig = -code if code < 0 else code - 128  # signalled directly, not through us
        forwarded.append((sig, sig))
    if forwarded:
        received, sig = forwarded[0]
        name = signal.Signals(received).name
        how = "" if received == sig else f", passed on as {signal.Signals(sig).name}"
        if not stop_is_clean:
            say(f"stopped by {name}{how}: interrupted (exit status {code})")
            return code if code >= 0 else 128 - code
        if code == 0:
            say(f"stopped by {name}{how}: a clean stop")
            return 0
        if code in (-sig, 128 + sig):  # uvicorn re-raises the signal after a graceful shutdown
            say(
                f"stopped by {name}{how}: a clean stop (the child ended with exit status "
                f"{128 + sig} = 128 + {signal.Signals(sig).name}, as uvicorn does after a "
                "graceful shutdown)"
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


def port_problem(host: str, port: int, hint: str = "") -> str | None:
    """None when ``host:port`` can be bound now, as uvicorn will bind it; else one line saying
    why not, naming the process that holds the port when it can be found (then ``hint``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # uvicorn's choice
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            if os.name != "nt":  # as uvicorn: a port left in TIME_WAIT by a stopped server is free
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return f"port {port} is already in use on {host}: {describe_holders(port)}{hint}"
        return f"cannot listen on {host}:{port}: {e.strerror or e}"
    return None


def port_holders(port: int) -> list[tuple[int, str]] | None:
    """``(pid, command)`` of each process listening on TCP ``port`` that we may look at; None
    where that cannot be found out (no /proc and no lsof). Linux: the listening socket's inode
    from /proc/net/tcp{,6}, then the processes that have it open (/proc/PID/fd)."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return lsof_holders(port)
    inodes = set()
    for table in tables:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # sl local_address rem_address st ... uid timeout inode
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(f"socket:[{fields[9]}]")  # 0A: LISTEN
    found = []
    for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()) if inodes else ():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # gone, or another user's process
            continue
        if any(link(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            found.append((pid, " ".join(a.decode(errors="replace") for a in argv if a)))
    return found


def link(path: str) -> str:
    """Where a /proc fd points ("socket:[123]"), or "" for an fd closed meanwhile."""
    try:
        return os.readlink(path)
    except OSError:
        return ""


def lsof_holders(port: int) -> list[tuple[int, str]] | None:
    """:func:`port_holders` through ``lsof`` (macOS), or None without it."""
    if shutil.which("lsof") is None:
        return None
    try:
        out = subprocess.run(
            ["lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpc"],
            capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    found, pid = [], None
    for line in out.splitlines():
        if line[:1] == "p":
            pid = int(line[1:])
        elif line[:1] == "c" and pid is not None:
            found.append((pid, line[1:]))
    return found


def describe_holders(port: int) -> str:
    """Who holds ``port``, for a message: "pid 123 (python3 tasks.py serve)", or why unknown."""
    holders = port_holders(port)
    if not holders:
        why = "its owner is another user's process" if holders == [] else "no /proc or lsof here"
        return f"held by a process not named here ({why}; try `ss -ltnp` or `lsof -i :{port}`)"
    named = [(pid, clip(" ".join(cmd.split()), 160)) for pid, cmd in holders]  # one line
    return ", ".join(f"held by pid {pid} ({cmd})" for pid, cmd in named)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, "..." marking the cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def accepts(host: str, port: int) -> bool:
    """Whether something accepts connections on ``host:port``. Only a connection: no request,
    so nothing reaches a server's access log."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def listens(pgid: int, host: str, port: int) -> bool:
    """Whether process group ``pgid`` (our server and its workers) listens on ``port``: our own
    child, not whatever else answers there. Without /proc: whether anything accepts there."""
    holders = port_holders(port) if Path("/proc/net/tcp").exists() else None
    if holders is not None:
        for pid, _ in holders:
            try:
                if os.getpgid(pid) == pgid:
                    return True
            except OSError:
                continue
        return False
    return accepts(host, port)


class ServerOutput:
    """The stdout of a stage that loads in the background (lifecycle and later), copied to ours
    as it comes, and watched for the start-up lines that say whether the model loaded:
    ``model_loaded`` (one per worker) or ``model_load_failed`` (its ``error``, the cause /ready
    gives as "model not loaded: ...").

    Reading these lines instead of polling /ready means no probe request reaches the server's
    access log (the student's logs/requests.log).
    """

    def __init__(self, stream) -> None:
        self.stream = stream
        self.loaded = 0
        self.failure: str | None = None
        self.changed = threading.Event()
        self._watching = True
        self._thread = threading.Thread(target=self._copy, daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        out = getattr(sys.stdout, "buffer", None)
        pending = b""
        fd = self.stream.fileno()
        while chunk := os.read(fd, 65536):
            try:
                if out is not None:
                    out.write(chunk)
                    out.flush()
            except (OSError, ValueError):  # our terminal is gone (SIGHUP): keep draining the pipe
                out = None
            if self._watching:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._look_at(line)
        self.changed.set()

    def _look_at(self, line: bytes) -> None:
        if b'"model_load' not in line:  # cheap filter: every request is a line too
            return
        try:
            record = json.loads(line)
        except ValueError:
            return
        if record.get("event") == "model_loaded":
            self.loaded += 1
        elif record.get("event") == "model_load_failed":
            self.failure = f"model not loaded: {record.get('error', '(no message)')}"
        self.changed.set()

    def stop_watching(self) -> None:
        """Only copy from now on (the start-up is decided)."""
        self._watching = False

    def close(self, timeout: float = 5.0) -> None:
        """Wait for the rest of the output (the child has exited)."""
        self._thread.join(timeout)


def wait_until_ready(
    proc: subprocess.Popen,
    host: str,
    port: int,
    output: ServerOutput | None = None,
    workers: int = 1,
    timeout: float = 600.0,
) -> int | None:
    """Wait until our own server is ready, then print ``ready: URL``; None to keep it running,
    or an exit status when it never can be (its model cannot be loaded).

    Nothing here sends the server a request: stages 1-4 load their model before they listen,
    so our process listening on the port means ready; stages 5-7 listen at once and load
    in the background, so their ``model_loaded`` lines (``output``, one per worker) say when.
    """
    base = f"http://{host}:{port}"
    level = os.environ.get("INFERENCE_LOG_LEVEL", "INFO").upper()
    quiet = output is not None and level in ("WARNING", "ERROR")  # model_loaded is INFO
    deadline = time.monotonic() + timeout
    said_loading, next_look = False, 0.0
    while True:
        if proc.poll() is not None:
            if proc.returncode:  # not a stop we passed on (that exits 0): say what we know
                if output is not None:
                    output.close()
                taken = port_problem(host, port)
                say(
                    f"the server exited with status {proc.returncode} before it was ready"
                    + (f": {taken}" if taken else " (its messages are above)")
                )
            return None
        if output is not None and output.failure:
            output.stop_watching()
            say(
                f"not ready: {output.failure}",
                "The server cannot become ready with this model, so it is stopped. Train one "
                "with `python3 tasks.py model`, or point INFERENCE_MODEL_DIR at a model folder.",
            )
            return 1
        up = accepts(host, port)
        loaded = output is None or output.loaded >= workers
        # Whose socket it is costs a look through /proc (tens of ms on a busy machine): only
        # once the rest says ready, and then at most once a second.
        if up and loaded and not quiet and time.monotonic() >= next_look:
            if listens(proc.pid, host, port):
                if output is not None:
                    output.stop_watching()
                say(f"ready: {base}")
                return None
            next_look = time.monotonic() + 1.0  # another process's: ours fails to bind
        if up and not loaded and not said_loading:
            said_loading = True
            if quiet:
                say(
                    f"listening on {base}; INFERENCE_LOG_LEVEL={level} hides the model_loaded "
                    f"line, so `ready:` is not announced: {base}{READY_PATH} says when it is ready"
                )
                while proc.poll() is None and not output.failure:  # a failure is an ERROR line
                    output.changed.wait(1.0)
                    output.changed.clear()
                continue  # the checks above report the exit or the failure
            say(f"listening on {base}; loading the model (/ready answers 503 until then) ...")
        if time.monotonic() > deadline:
            say(f"not ready after {timeout:.0f} s: the model is still loading; still waiting")
            deadline = float("inf")
        if output is not None:
            output.changed.wait(0.2)
            output.changed.clear()
        else:
            time.sleep(0.2)


def workers_of(extra: list[str]) -> int:
    """The ``--workers N`` among the launcher's options (1 when absent or unreadable)."""
    for i, word in enumerate(extra):
        value = word.split("=", 1)[1] if word.startswith("--workers=") else None
        if word == "--workers" and i + 1 < len(extra):
            value = extra[i + 1]
        if value is not None:
            return int(value) if value.isdigit() and int(value) > 0 else 1
    return 1


def port_number(text: str) -> int:
    """``--port`` for argparse: a TCP port, 1-65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def parse_serve_args(args: list[str]) -> tuple[str, argparse.Namespace, list[str]]:
    """``[STAGE] [--stage STAGE] [--host H] [--port P] [launcher options]`` -> stage, opts, rest."""
    parser = argparse.ArgumentParser(
        prog="python3 tasks.py serve",
        allow_abbrev=False,
        description="Run one stage's server; other options go to python -m serving.serve.",
    )
    parser.add_argument("--stage", choices=STAGES, help=f"default: {DEFAULT_STAGE}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=port_number, default=8000)
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
    """Run one stage's server on 127.0.0.1:8000 (default: the final, fast stage)."""
    stage, opts, extra = parse_serve_args(args)
    other = opts.port + 1 if opts.port < 65535 else 8001
    hint = f". Stop it, or choose another port: --port {other}"
    taken = port_problem(opts.host, opts.port, hint)  # before set-up, and again before the start
    if taken is None:
        setup()
        taken = port_problem(opts.host, opts.port, hint)
    if taken is not None:
        say(f"cannot serve: {taken}")
        return EXIT_NOT_STARTED
    cmd = server_argv(stage, opts.host, opts.port, extra)
    say("+ " + " ".join(map(str, cmd)))
    host = "127.0.0.1" if opts.host in ("0.0.0.0", "::") else opts.host
    watch = STAGES[stage].loads_in_background  # it listens, then loads: its output says when
    outputs: list[ServerOutput] = []

    def on_start(proc: subprocess.Popen) -> int | None:
        if watch:
            outputs.append(ServerOutput(proc.stdout))
        output = outputs[0] if outputs else None
        return wait_until_ready(proc, host, opts.port, output, workers_of(extra))

    def on_exit() -> None:
        for output in outputs:
            output.close()  # its last lines (the shutdown line) before our own

    pipe = subprocess.PIPE if watch else None
    return run_child(cmd, on_start=on_start, on_exit=on_exit, stdout=pipe)


# --- the other commands ---------------------------------------------------------------------


# pytest options that take a value as the next word (so that word is not a test path).
PYTEST_VALUE_OPTIONS = {
    "-c", "-k", "-m", "-o", "-p", "-r", "-W", "--basetemp", "--capture", "--color",
    "--confcutdir", "--deselect", "--durations", "--durations-min", "--ignore", "--ignore-glob",
    "--import-mode", "--junit-xml", "--junitxml", "--log-file", "--log-level", "--maxfail",
    "--override-ini", "--pythonwarnings", "--rootdir", "--tb", "--timeout", "-n",
    "--numprocesses", "--dist",
}  # fmt: skip
# What makes a run less than the whole suite: a selection, or a run that executes no test.
PYTEST_NOT_WHOLE = {
    "-k", "-m", "--deselect", "--ignore", "--ignore-glob", "--lf", "--last-failed", "--sw",
    "--stepwise", "--sw-skip", "--stepwise-skip", "-h", "--help", "--version", "-V",
    "--co", "--collect-only", "--fixtures", "--funcargs", "--fixtures-per-test", "--markers",
    "--setup-only", "--setup-plan", "--cache-show",
}  # fmt: skip
# Whole runs that stop at the first failure: only a pass ran everything.
PYTEST_STOPS_EARLY = {"-x", "--exitfirst", "--maxfail"}
# The notebooks run last (pyproject.toml: testpaths = tests, then notebooks): 8 of 626 items, so
# pytest shows 98 % as they start, with about half of the time still ahead. Measured 2026-12-03
# on a busy machine: the notebooks alone 17 min 14 s, while the fast loop took 114 s there
# against about 40 s on a quiet one; scaled alike, about 6 of the whole suite's 11 minutes.
NOTEBOOKS_NOTE = (
    "the notebooks take about half of the time; the three drill notebooks run in a lane of "
    "their own beside the rest"
)


def pytest_selection(args: list[str]) -> tuple[bool, bool]:
    """``(whole, stops_early)`` for pytest ``args``: whether they run the whole suite (no path
    or test named, no -k/-m selection, not --help or --collect-only ...), and whether the run
    stops at the first failure (-x, --maxfail)."""
    whole, stops_early, takes_value = True, False, False
    for arg in args:
        if takes_value:  # the value of the option before (-k EXPR)
            takes_value = False
            continue
        name = arg.split("=", 1)[0]
        if not arg.startswith("-"):
            whole = False  # a path or a test id
        elif name in PYTEST_NOT_WHOLE or (
            not arg.startswith("--") and arg[1:2] in ("k", "m", "h", "V")  # -kEXPR, -mEXPR
        ):
            whole = False
        stops_early |= name in PYTEST_STOPS_EARLY or (
            not arg.startswith("--") and "x" in arg[1:] and arg[1:2] not in "kmpcorW"
        )
        takes_value = arg in PYTEST_VALUE_OPTIONS
    return whole, stops_early


# The whole suite runs in two lanes (pytest-xdist): the three drill notebooks, which mostly wait
# for Prometheus' windows and alerts, beside everything else in the order it always ran
# (tests/conftest.py and notebooks/conftest.py give each test its lane).
TWO_LANES = ["-n", "2", "--dist", "loadgroup"]


def test(args: list[str]) -> int:
    """Run pytest, saying up front how long it takes and at the end how long it took; only a
    whole run that ran to its end is recorded as the last full run. The whole suite runs in
    two lanes (:data:`TWO_LANES`) unless ``args`` say how to distribute (-n, -p no:xdist)."""
    setup()
    whole, stops_early = pytest_selection(args)
    lanes = whole and not any(a.split("=")[0] in ("-n", "--numprocesses", "-p") for a in args)
    if whole:
        last = TEST_TIME.read_text().strip() if TEST_TIME.exists() else ""
        note = f"; the last full run here took {minutes(float(last))}" if last else ""
        print(f"tests: the whole suite takes {FULL_SUITE_ESTIMATE}{note}.", flush=True)
        print(f"tests: each file prints its name, then a dot per passed test; {NOTEBOOKS_NOTE}.")
    start = time.monotonic()
    cmd = [PY, "-m", "pytest", *(TWO_LANES if lanes else []), *args]
    print("+", " ".join(map(str, cmd)), flush=True)
    code = run_child(cmd, stop_is_clean=False)
    took = time.monotonic() - start
    # 0: all passed; 1: some failed, but everything ran (unless it stopped at the first one).
    if whole and (code == 0 or (code == 1 and not stops_early)):
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
    """Run Prometheus, scraping the server on ``--port`` (default 8000) or ``--target
    HOST:PORT``, until Ctrl-C or SIGTERM (exit 0), or say how to install it (exit 1). Other
    ``args`` go to Prometheus and replace our flag of the same name, e.g.
    ``--web.listen-address=127.0.0.1:9191``."""
    from monitoring import prom  # standard library only: no set-up needed

    parser = argparse.ArgumentParser(
        prog="python3 tasks.py monitor",
        allow_abbrev=False,
        description="Prometheus on 127.0.0.1:9090 with the course's rules, scraping one server; "
        "other options (--web.listen-address=..., --storage.tsdb.path=...) go to Prometheus.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--port", type=port_number, help="the server's port on 127.0.0.1")
    where.add_argument("--target", help="the server as HOST:PORT (default 127.0.0.1:8000)")
    opts, rest = parser.parse_known_args(args)
    target = f"127.0.0.1:{opts.port}" if opts.port else opts.target or prom.TARGET
    try:
        prom.parse_target(target)
    except ValueError as e:
        parser.error(f"--target: {e}")
    binary = prom.find_binary()
    if binary is None:
        print(prom.install_help(), file=sys.stderr)
        return 1
    listen = prom.flag_value(rest, "--web.listen-address") or prom.LISTEN
    host, _, port = listen.rpartition(":")
    # Debian's package starts a Prometheus of its own on 9090.
    hint = (
        ". Stop it (Debian: sudo systemctl disable --now prometheus), or choose another address: "
        "--web.listen-address=127.0.0.1:9191"
    )
    taken = port_problem(host or "0.0.0.0", int(port), hint) if port.isdigit() else None
    if taken is not None:
        say(f"cannot monitor: {taken}")
        return EXIT_NOT_STARTED
    config = prom.write_config(target)  # in monitoring/data/, git-ignored like the data
    cmd = prom.command(binary, config=config, overrides=rest)
    say("+ " + " ".join(cmd))
    if prom.flag_value(rest, "--config.file"):
        say("Prometheus reads the --config.file given: its targets are the ones it names.")
    else:
        say(f"Prometheus scrapes {target} every second; Ctrl-C stops it.")
    ui = f"http://{'127.0.0.1' if host in ('', '0.0.0.0', '[::]') else host}:{port}"
    # Prometheus exits 0 after a graceful shutdown (SIGINT or SIGTERM).
    return run_child(cmd, on_start=lambda proc: announce_ui(proc, ui))


def announce_ui(proc: subprocess.Popen, ui: str, timeout: float = 60.0) -> None:
    """Once Prometheus is ready, print where its pages are: they differ between builds (see
    ``monitoring.prom.UI_PAGES``), so each is looked up instead of assumed."""
    from monitoring import prom

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs) -> None:
            return None  # a redirect (Debian: /graph -> /classic/graph) is not the page

    opener = urllib.request.build_opener(NoRedirect)

    def status(path: str) -> int | None:
        try:
            with opener.open(ui + path, timeout=2) as answer:
                return answer.status
        except urllib.error.HTTPError as e:
            return e.code
        except (OSError, ValueError):
            return None

    deadline = time.monotonic() + timeout
    while status("/-/ready") != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            return  # Prometheus says why itself
        time.sleep(0.3)
    pages = {
        name: next((ui + p for p in paths if status(p) == 200), ui + paths[0])
        for name, paths in prom.UI_PAGES.items()
    }
    say(f"Prometheus UI: {pages['graph']}", *(f"  {n}: {u}" for n, u in pages.items()))


COMMANDS = {  # name -> function(args) returning an exit status
    "setup": lambda args: setup() or 0,
    "serve": serve,
    "test": test,
    "model": lambda args: in_venv("-m", "sentiment_model.train", *args, train=False),
    "lab": lab,
    "bench": lambda args: in_venv("-m", "loadtest.bench", *args, stop_is_clean=False),
    "monitor": monitor,
    "lint": lint,
    # The promotion gate and its registry (sentiment_model/registry.py; exit statuses there).
    "promote": lambda args: in_venv(
        "-m", "sentiment_model.registry", "promote", *args, stop_is_clean=False, train=False
    ),
    "rollback": lambda args: in_venv(
        "-m", "sentiment_model.registry", "rollback", *args, stop_is_clean=False, train=False
    ),
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

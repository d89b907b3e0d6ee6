#!/usr/bin/env python3
"""Everyday commands for the course, with nothing but Python 3.10+ installed.

    python3 tasks.py serve [--stage naive|validated|metrics|batched]   set up, then run a server
    python3 tasks.py test [pytest args]                                set up, then run the tests
    python3 tasks.py setup | model | lab | bench [args] | lint
    python3 tasks.py monitor [prometheus flags]                        Prometheus on 127.0.0.1:9090

`setup` creates .venv, installs requirements.txt (again only when it changes) and trains the
default model if models/LATEST is missing. The Makefile offers the same commands as targets.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".requirements-sha256"
STAGES = {  # stage -> (directory uvicorn imports from, module:app)
    "naive": ("lessons/01_naive", "inference_server:app"),
    "validated": ("lessons/02_validated", "inference_server:app"),
    "metrics": ("lessons/03_metrics", "inference_server:app"),
    "batched": (".", "inference_server:app"),
}


def run(*cmd: str | Path, **kw) -> None:
    """Echo and run a command from the repository root; stop on failure."""
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True, **kw)


def setup() -> None:
    """Create .venv, install the pinned requirements and this project, train the model."""
    if sys.version_info < (3, 10):  # noqa: UP036 - tasks.py may be started by any python3
        sys.exit(f"Python 3.10 or newer is needed; this is {sys.version.split()[0]}")
    if not PY.exists():
        print(f"creating {VENV} with Python {sys.version.split()[0]}", flush=True)
        venv.create(VENV, with_pip=True)
    wanted = hashlib.sha256(
        (ROOT / "requirements.txt").read_bytes() + (ROOT / "pyproject.toml").read_bytes()
    ).hexdigest()
    if not STAMP.exists() or STAMP.read_text() != wanted:
        run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        run(PY, "-m", "pip", "install", "--quiet", "-r", "requirements.txt")
        run(PY, "-m", "pip", "install", "--quiet", "--no-deps", "-e", ".")
        STAMP.write_text(wanted)
    run(PY, "-m", "sentiment_model.train", "--if-missing")


def serve(args: list[str]) -> None:
    """Run one stage's server on 127.0.0.1:8000 (default: the final, batched stage)."""
    stage = "batched"
    if args[:1] == ["--stage"] and len(args) > 1:
        stage, args = args[1], args[2:]
    if stage not in STAGES:
        sys.exit(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    app_dir, app = STAGES[stage]
    setup()
    cmd = [PY, "-m", "uvicorn", "--app-dir", app_dir, app, "--host", "127.0.0.1", "--port", "8000"]
    print("+", " ".join(map(str, cmd + args)), flush=True)
    os.chdir(ROOT)
    os.execv(str(PY), [str(c) for c in cmd + args])


def monitor(args: list[str]) -> None:
    """Run Prometheus with monitoring/prometheus.yml until Ctrl-C (or say how to install it)."""
    from monitoring.prom import main as run_prometheus  # standard library only

    sys.exit(run_prometheus(args))


def main() -> None:
    """Dispatch ``sys.argv[1]`` to a command."""
    command, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("help", [])
    if command == "setup":
        setup()
    elif command == "serve":
        serve(args)
    elif command == "model":
        setup()
        run(PY, "-m", "sentiment_model.train", *args)
    elif command == "test":
        setup()
        run(PY, "-m", "pytest", *args)
    elif command == "lab":
        setup()
        run(BIN / "jupyter", "lab", "notebooks", *args)
    elif command == "bench":
        setup()
        run(PY, "-m", "loadtest.bench", *args)
    elif command == "monitor":
        monitor(args)
    elif command == "lint":
        setup()
        run(PY, "-m", "ruff", "check", ".")
        run(PY, "-m", "ruff", "format", "--check", ".")
    else:
        print(__doc__)
        sys.exit(0 if command in ("help", "-h", "--help") else 2)


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as e:
        sys.exit(e.returncode)

"""Where the time goes: one stage under one load step, profiled with pyinstrument.

    python -m loadtest.profile --stage fast --profile long --users 64 --duration 8

runs the stage under ``pyinstrument`` (in front of uvicorn, same process, same pinning), drives
one closed-loop locust step at it, stops it by PID, and writes to
``benchmarks/results/profiles/<stage>-<profile>-u<users>/``: ``profile.txt`` (the call tree;
``--html`` adds ``profile.html``, interactive but ~10 MB), ``summary.csv`` (the step's row, as
in a benchmark run).

pyinstrument samples the server's main thread: the event loop, where HTTP parsing, validation,
middleware, logging and metrics run. The final stage's model thread is not sampled; its share
of the core is the step's ``worker_threads_cpu_pct`` (and ``main_thread_cpu_pct`` is the event
loop's). The profiler slows the server down, so read shares, not absolute rates.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from loadtest.config import PROFILES, RESULTS_ROOT
from loadtest.launcher import StageServer, trim_log
from loadtest.steps import ensure_payload_file, run_step, tidy, warm_up
from serving.stages import FINAL_STAGE, STAGES


def profile_stage(
    stage: str,
    profile: str = "long",
    users: int = 64,
    duration: float = 8.0,
    out_dir: Path | None = None,
    env: dict[str, str] | None = None,
    interval_s: float = 0.001,
    html: bool = False,
) -> Path:
    """Profile ``stage`` under ``users`` closed-loop users; return the output directory."""
    out = Path(out_dir or RESULTS_ROOT / "profiles" / f"{stage}-{profile}-u{users}")
    out.mkdir(parents=True, exist_ok=True)
    session = out / "profile.pyisession"
    launcher = ["-m", "pyinstrument", "-i", str(interval_s), "-r", "pyisession"]
    launcher += ["-o", str(session), "-m", "serving.serve"]
    payloads = ensure_payload_file(out)
    try:
        server = StageServer(stage, env=env, log_path=out / "server.log", launcher=launcher)
        with server:
            warm_up(server, payloads, profile)
            row = run_step(server, profile, users, duration, out / "raw" / "step", payloads)
        tidy([{"kind": "ladder", **row}]).to_csv(out / "summary.csv", index=False)
    finally:
        payloads.unlink(missing_ok=True)
        trim_log(out / "server.log")
    if not session.is_file():
        raise RuntimeError(f"pyinstrument wrote no session; see {out / 'server.log'}")
    renderers = [("text", "profile.txt")] + ([("html", "profile.html")] if html else [])
    for renderer, name in renderers:
        cmd = [sys.executable, "-m", "pyinstrument", "--load", str(session), "-r", renderer]
        cmd += ["-o", str(out / name)]
        if renderer == "text":
            cmd += ["--no-color", "--unicode", "-p", "time=percent_of_total"]
        subprocess.run(cmd, check=True, timeout=300)
    session.unlink()  # large; the two renderings keep what matters
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m loadtest.profile``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=list(STAGES), default=FINAL_STAGE)
    p.add_argument("--profile", choices=list(PROFILES), default="long")
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--html", action="store_true", help="also write profile.html (large)")
    a = p.parse_args(argv)
    out = profile_stage(a.stage, a.profile, a.users, a.duration, a.out, html=a.html)
    print((out / "profile.txt").read_text()[:6000])
    print(f"\nwritten: {out}/profile.txt, summary.csv")


if __name__ == "__main__":
    main()

"""Roll a bad rollout back automatically when its alert fires (lessons/12_rollout).

    python -m monitoring.auto_rollback --prometheus http://127.0.0.1:9090 \\
        --server http://127.0.0.1:8000 --model-dir models/sentiment-1a2b3c4d5e6f

polls Prometheus' ``/api/v1/alerts`` every ``--interval`` seconds. When one of the ``--alert``
names (default :data:`ROLLBACK_ALERTS`) is *firing* (pending is not enough: ``for:`` is there so
that a blip does not roll anything back), it acts once and exits:

* by default it asks the server to reload its stable model: ``POST /admin/reload`` with the
  bearer token from ``$INFERENCE_ADMIN_TOKEN`` and ``{"model_dir": ...}`` (or ``{}``: the
  server's configured source), the way an operator would by hand;
* with ``--canary-off`` it switches the server's canary off instead: ``POST /admin/canary``
  with ``{"fraction": 0}`` and the same token. The next requests go to the stable model, those
  already queued on the canary are still answered: no restart, nothing dropped. (With several
  workers it reaches the one worker that answers: see serving/rollout.py.)
* with ``--command "..."`` it runs that command instead (60 s at most), for rollouts that live
  outside the process: ``kubectl scale deployment/inference-canary --replicas=0``, or a script
  that restarts the server without its canary.

Every step is a JSON line on stdout (``auto_rollback_watching``, ``auto_rollback_alert``,
``auto_rollback_done`` / ``auto_rollback_failed``, ``auto_rollback_quiet``). It gives up after
``--timeout`` seconds (exit 0, nothing done) and tries the action at most ``--attempts`` times
(exit 1 when none worked). Standard library only.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TextIO

ROLLBACK_ALERTS = ("InferenceCanaryErrorRatioHigh", "InferenceShadowDisagreementHigh")
TOKEN_ENV = "INFERENCE_ADMIN_TOKEN"
EXIT_ROLLED_BACK, EXIT_ACTION_FAILED, EXIT_QUIET = 0, 1, 0


def log_line(event: str, out: TextIO | None = None, **fields) -> dict:
    """One JSON log line (default: on stdout), the server log's shape: timestamp, event, fields."""
    record = {"timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
    record |= {"event": event} | fields
    print(json.dumps(record), file=out or sys.stdout, flush=True)
    return record


def firing(prometheus: str, names: Sequence[str], timeout: float = 5.0) -> list[dict]:
    """The alerts among ``names`` that fire now, as ``/api/v1/alerts`` gives them."""
    with urllib.request.urlopen(f"{prometheus.rstrip('/')}/api/v1/alerts", timeout=timeout) as r:
        body = json.load(r)
    return [
        a
        for a in body["data"]["alerts"]
        if a["state"] == "firing" and a["labels"].get("alertname") in names
    ]


def admin_reload(server: str, token: str, model_dir: str | None = None) -> dict:
    """``POST /admin/reload``: the server loads, checks and swaps in ``model_dir`` (None: its
    configured source). Returns the answer (``model_version``, ``previous_version``); raises
    RuntimeError with the server's reason otherwise."""
    body = json.dumps({"model_dir": model_dir} if model_dir else {}).encode()
    request = urllib.request.Request(
        f"{server.rstrip('/')}/admin/reload",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{e.code}: {e.read().decode(errors='replace')[:300]}") from None


def canary_off(server: str, token: str) -> dict:
    """``POST /admin/canary`` ``{"fraction": 0}``: the server's canary answers no more requests.
    Returns the answer (``canary_version``, ``fraction``, ``previous_fraction``); raises
    RuntimeError with the server's reason otherwise (409: no canary is loaded)."""
    request = urllib.request.Request(
        f"{server.rstrip('/')}/admin/canary",
        data=json.dumps({"fraction": 0}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{e.code}: {e.read().decode(errors='replace')[:300]}") from None


def run_command(command: str) -> dict:
    """Run ``command`` (no shell), 60 s at most; RuntimeError unless it exits 0."""
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60)
    if done.returncode:
        raise RuntimeError(f"exit {done.returncode}: {(done.stderr or done.stdout)[-300:]}")
    return {"command": command, "output": done.stdout[-300:]}


def watch(
    prometheus: str,
    action: Callable[[], dict],
    names: Sequence[str] = ROLLBACK_ALERTS,
    interval: float = 1.0,
    timeout: float = 600.0,
    attempts: int = 3,
    out: TextIO | None = None,
) -> int:
    """Poll until an alert in ``names`` fires, then call ``action`` (up to ``attempts`` times
    until it returns); the exit status. Never acts twice, never runs past ``timeout``. The log
    lines go to ``out`` (default: stdout)."""
    say = functools.partial(log_line, out=out)
    say("auto_rollback_watching", prometheus=prometheus, alerts=list(names), timeout_s=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            alerts = firing(prometheus, names)
        except (OSError, ValueError, KeyError) as e:  # Prometheus restarting: ask again
            say("auto_rollback_poll_failed", error=f"{type(e).__name__}: {e}")
            alerts = []
        if alerts:
            alert = alerts[0]
            say(
                "auto_rollback_alert",
                alertname=alert["labels"]["alertname"],
                active_at=alert.get("activeAt"),
                value=alert.get("value"),
                summary=alert.get("annotations", {}).get("summary"),
            )
            for attempt in range(1, attempts + 1):
                try:
                    result = action()
                except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
                    say("auto_rollback_failed", attempt=attempt, error=str(e))
                    time.sleep(interval)
                    continue
                say("auto_rollback_done", attempt=attempt, **result)
                return EXIT_ROLLED_BACK
            return EXIT_ACTION_FAILED
        time.sleep(interval)
    say("auto_rollback_quiet", waited_s=timeout)
    return EXIT_QUIET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.auto_rollback", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--prometheus", required=True, help="e.g. http://127.0.0.1:9090")
    parser.add_argument("--server", help="the server to reload, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model-dir", help="the stable model to reload (default: its source)")
    parser.add_argument(
        "--canary-off",
        action="store_true",
        help="switch the server's canary off (POST /admin/canary) instead of the reload",
    )
    parser.add_argument("--command", help="run this instead of the reload")
    parser.add_argument("--alert", action="append", help=f"default: {', '.join(ROLLBACK_ALERTS)}")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--attempts", type=int, default=3)
    args = parser.parse_args(argv)
    if args.canary_off and (args.command or args.model_dir):
        parser.error("--canary-off is its own action: without --command or --model-dir")
    if args.command:
        action = lambda: run_command(args.command)  # noqa: E731
    elif args.server:
        token = os.environ.get(TOKEN_ENV)
        if not token:
            parser.error(f"${TOKEN_ENV} is not set: the server's admin endpoints need its token")
        if args.canary_off:
            action = lambda: canary_off(args.server, token)  # noqa: E731
        else:
            action = lambda: admin_reload(args.server, token, args.model_dir)  # noqa: E731
    else:
        parser.error("give --server (reload the stable model, or --canary-off) or --command")
    names = tuple(args.alert or ROLLBACK_ALERTS)
    return watch(args.prometheus, action, names, args.interval, args.timeout, args.attempts)


if __name__ == "__main__":
    sys.exit(main())

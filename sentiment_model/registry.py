"""The promotion gate, rollback and a small file registry for ``models/LATEST`` (lesson 12).

    python3 tasks.py promote VERSION      # = python -m sentiment_model.registry promote VERSION
    python3 tasks.py rollback             # LATEST back to the version promoted before
    python3 tasks.py history              # the registry, oldest first

``promote`` moves ``models/LATEST`` to the candidate only when every check passes, in order:

1. **split**: the candidate's test metrics were measured on the same test rows as the current
   default's (``data.test_sha256`` in both metadata files; older metadata without it: the split
   seed and the test rows per source must match);
2. **metrics**: no metric of :data:`GATED_METRICS` is lower than the current default's by more
   than the tolerance (:data:`TOLERANCE`, absolute);
3. **smoke**: the final server stage, started on 127.0.0.1 and a free port with
   ``INFERENCE_MODEL_DIR`` set to the candidate, answers :data:`SMOKE_TEXTS` with the expected
   labels and the candidate's version; it is then stopped by PID.

``rollback`` moves ``LATEST`` back to the version promoted before the current one. Every step is
logged, and every decision (refusals too) is a line of ``registry.jsonl`` next to ``LATEST``::

    {"time": "...", "action": "promote", "version": "1a2b3c4d5e6f", "artifact":
     "sentiment-1a2b3c4d5e6f", "previous": "sentiment-0f9e8d7c6b5a", "outcome": "promoted",
     "failed_check": null, "checks": {"split": {...}, "metrics": {...}, "smoke": {...}},
     "reason": "...", "by": "alice"}

Exit statuses: 0 done, 3 unknown version, 4 metrics regressed, 5 different test split,
6 smoke test failed, 7 nothing to roll back. ``--models-root`` points everything at another
models folder (the tests and the notebook use a temporary one).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sentiment_model.artifact import (
    LATEST_FILE,
    MODELS_ROOT,
    ArtifactMetadata,
    ModelLoadError,
    read_metadata,
)

REGISTRY_FILE = "registry.jsonl"
# A candidate may be worse than the current default by at most this much on each gated metric
# (absolute: 0.005 is half a percentage point of accuracy). On the 3,344 test texts, two models
# trained alike differ by about this much from run to run; a real regression is larger.
TOLERANCE = 0.005
# The gated metrics, read from metadata["metrics"]["test"]: overall accuracy and ROC AUC, and
# the mean of the per-source accuracies (the criterion the hyper-parameter search chose by: the
# 854 short sentences count as much as the 2,490 long reviews).
GATED_METRICS = ("accuracy", "roc_auc", "source_balanced_accuracy")
# Texts whose label no usable sentiment model gets wrong.
SMOKE_TEXTS = (
    ("A wonderful, moving film with brilliant acting. I loved every minute of it!", "positive"),
    ("Terrible, boring and badly acted. The worst movie I have seen, a waste of time.", "negative"),
    ("One of the best films of the year: funny, warm and beautifully made.", "positive"),
    ("A dull, lifeless mess with a plot that makes no sense at all.", "negative"),
)

EXIT_OK = 0
EXIT_UNKNOWN_VERSION = 3
EXIT_METRICS_REGRESSED = 4
EXIT_DIFFERENT_SPLIT = 5
EXIT_SMOKE_FAILED = 6
EXIT_NOTHING_TO_ROLL_BACK = 7

log = logging.getLogger("sentiment_model.registry")


class GateError(Exception):
    """A refusal: ``check`` names the step, ``code`` is the exit status, ``details`` its figures."""

    def __init__(self, check: str, code: int, message: str, details: dict | None = None):
        super().__init__(message)
        self.check, self.code, self.details = check, code, details or {}


@dataclass
class Decision:
    """What :func:`promote` or :func:`rollback` did: the registry line it wrote, and the exit
    status."""

    code: int
    entry: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code == EXIT_OK


# --- the registry file ----------------------------------------------------------------------


def current_default(models_root: Path = MODELS_ROOT) -> str | None:
    """The artifact folder named in ``LATEST`` (e.g. ``sentiment-1a2b3c4d5e6f``), or None."""
    pointer = Path(models_root) / LATEST_FILE
    return pointer.read_text().strip() or None if pointer.is_file() else None


def set_default(models_root: Path, artifact: str) -> None:
    """Point ``LATEST`` at ``artifact``, atomically: a reader sees the old name or the new one."""
    root = Path(models_root)
    fd, tmp = tempfile.mkstemp(prefix=".LATEST-", dir=root)
    with os.fdopen(fd, "w") as f:
        f.write(artifact + "\n")
    os.replace(tmp, root / LATEST_FILE)


def history(models_root: Path = MODELS_ROOT) -> list[dict]:
    """Every line of the registry, oldest first ([] when there is none yet)."""
    path = Path(models_root) / REGISTRY_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def record(models_root: Path, entry: dict) -> dict:
    """Append one decision to the registry (one JSON object per line) and return it."""
    entry = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds")} | entry
    entry.setdefault("by", _user())
    with open(Path(models_root) / REGISTRY_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=False) + "\n")
    return entry


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"


def promoted_stack(entries: list[dict]) -> list[str]:
    """The artifacts that were the default, in order, as the registry's successful moves left
    them: a promotion pushes (the first one also remembers the default it replaced), a rollback
    pops. The last item is what the registry last made the default."""
    stack: list[str] = []
    for e in entries:
        if e.get("action") == "promote" and e.get("outcome") == "promoted":
            if not stack and e.get("previous"):
                stack.append(e["previous"])
            stack.append(e["artifact"])
        elif e.get("action") == "rollback" and e.get("outcome") == "rolled_back":
            while stack and stack[-1] != e["previous"]:
                stack.pop()  # (LATEST had been changed by hand: the registry's view wins)
            if stack:
                stack.pop()
    return stack


# --- the checks -----------------------------------------------------------------------------


def resolve(models_root: Path, version: str) -> Path:
    """The artifact folder for ``version`` (``1a2b3c4d5e6f``, or a folder name such as
    ``sentiment-1a2b3c4d5e6f``) in ``models_root``; :class:`GateError` (exit 3) when there is
    none or more than one."""
    root = Path(models_root)
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    found = [p for p in folders if p.name == version or p.name.rsplit("-", 1)[-1] == version]
    if len(found) != 1:
        known = ", ".join(sorted(p.name for p in folders)) or "none"
        why = "no artifact" if not found else f"{len(found)} artifacts"
        raise GateError(
            "version",
            EXIT_UNKNOWN_VERSION,
            f"unknown version {version!r}: {why} with that version in {root} (there: {known})",
        )
    try:
        read_metadata(found[0])
    except ModelLoadError as e:
        raise GateError("version", EXIT_UNKNOWN_VERSION, f"not a usable artifact: {e}") from None
    return found[0]


def split_identity(meta: ArtifactMetadata) -> dict:
    """What identifies the rows the test metrics were measured on."""
    data = meta.data
    if data.get("test_sha256"):
        return {"test_sha256": data["test_sha256"]}
    # Metadata written before the fingerprint was recorded: the split's seed and sizes.
    return {
        "split_seed": data.get("split_seed"),
        "test_rows_by_source": (data.get("rows_by_source") or {}).get("test"),
    }


def check_split(candidate: ArtifactMetadata, current: ArtifactMetadata) -> dict:
    """Refuse (exit 5) unless both were tested on the same rows."""
    mine, theirs = split_identity(candidate), split_identity(current)
    if set(mine) != set(theirs):  # one has the fingerprint, the other not: compare what both have
        mine = split_identity(candidate.model_copy(update={"data": _no_fp(candidate)}))
        theirs = split_identity(current.model_copy(update={"data": _no_fp(current)}))
    details = {"candidate": mine, "current": theirs}
    if mine != theirs:
        raise GateError(
            "split",
            EXIT_DIFFERENT_SPLIT,
            f"the test metrics were measured on different test splits (candidate {_short(mine)}, "
            f"current {_short(theirs)}): the figures cannot be compared. Evaluate both on the "
            "same split (sentiment_model.data.load_splits) and export again.",
            details,
        )
    return details | {"same": True}


def _no_fp(meta: ArtifactMetadata) -> dict:
    return {k: v for k, v in meta.data.items() if k != "test_sha256"}


def _short(identity: dict) -> str:
    if "test_sha256" in identity:
        return f"test_sha256 {str(identity['test_sha256'])[:12]}..."
    return f"seed {identity.get('split_seed')}, rows {identity.get('test_rows_by_source')}"


def gated_metrics(meta: ArtifactMetadata) -> dict[str, float]:
    """The gated metrics of an artifact (:data:`GATED_METRICS`), from its metadata."""
    test = (meta.metrics or {}).get("test") or {}
    overall, by_source = test.get("overall") or {}, test.get("by_source") or {}
    found = {name: overall[name] for name in ("accuracy", "roc_auc") if name in overall}
    accuracies = [m["accuracy"] for m in by_source.values() if "accuracy" in m]
    if accuracies:
        found["source_balanced_accuracy"] = sum(accuracies) / len(accuracies)
    return {name: float(value) for name, value in found.items()}


def check_metrics(
    candidate: ArtifactMetadata, current: ArtifactMetadata, tolerance: float = TOLERANCE
) -> dict:
    """Refuse (exit 4) when a gated metric is missing from the candidate, or lower than the
    current default's by more than ``tolerance``. Returns the figures."""
    mine, theirs = gated_metrics(candidate), gated_metrics(current)
    figures = {
        name: {
            "candidate": round(mine[name], 4) if name in mine else None,
            "current": round(theirs[name], 4),
            "change": round(mine[name] - theirs[name], 4) if name in mine else None,
        }
        for name in GATED_METRICS
        if name in theirs
    }
    details = {"tolerance": tolerance, "figures": figures}
    missing = [name for name in figures if name not in mine]
    if missing:
        raise GateError(
            "metrics",
            EXIT_METRICS_REGRESSED,
            f"the candidate's metadata has no test {', '.join(missing)}: nothing to compare",
            details,
        )
    worse = {name: f for name, f in figures.items() if f["change"] < -tolerance}
    if worse:
        said = "; ".join(
            f"{name} {f['candidate']:.4f} vs {f['current']:.4f} ({f['change']:+.4f})"
            for name, f in worse.items()
        )
        raise GateError(
            "metrics",
            EXIT_METRICS_REGRESSED,
            f"the candidate's test metrics regress beyond the tolerance of {tolerance}: {said}",
            details,
        )
    return details


def smoke_test(artifact: Path, texts=SMOKE_TEXTS, timeout: float = 120.0) -> dict:
    """Start the final server stage on the candidate (127.0.0.1, a free port, its own log file
    in a temporary folder), send ``texts``, stop it by PID. Refuse (exit 6) unless every answer
    is 200 with the expected label and the candidate's version."""
    import httpx

    from loadtest.launcher import StageServer
    from serving.stages import FINAL_STAGE

    version = read_metadata(artifact).version
    with tempfile.TemporaryDirectory(prefix="smoke-") as scratch:
        env = {"INFERENCE_MODEL_DIR": str(Path(artifact).resolve())}
        env["INFERENCE_LOG_PATH"] = str(Path(scratch) / "requests.log")
        server = StageServer(
            FINAL_STAGE, env=env, log_path=Path(scratch) / "server.log", cpu=None,
            ready_timeout=timeout,
        )  # fmt: skip
        answers, problem = [], None
        try:
            problem = _wait_ready(server, timeout)
            if problem is None:
                log.info("smoke: %s server (pid %s) on %s", FINAL_STAGE, server.pid, server.url)
                with httpx.Client(base_url=server.url, timeout=10) as client:
                    for text, expected in texts:
                        resp = client.post("/predict", json={"text": text})
                        body = resp.json() if resp.status_code == 200 else {}
                        answers.append(
                            {
                                "expected": expected,
                                "status": resp.status_code,
                                "label": body.get("label"),
                                "version": body.get("model_version"),
                            }
                        )
        except (OSError, httpx.HTTPError) as e:
            problem = f"the server did not answer: {type(e).__name__}: {e}"
        finally:
            server.stop()
    wrong = [
        a
        for a in answers
        if (a["status"], a["label"], a["version"]) != (200, a["expected"], version)
    ]
    details = {"stage": FINAL_STAGE, "answers": answers}
    if problem is None and wrong:
        problem = f"{len(wrong)} of {len(answers)} smoke answers wrong: {wrong}"
    if problem:
        raise GateError("smoke", EXIT_SMOKE_FAILED, f"smoke test failed: {problem}", details)
    return details | {"passed": f"{len(answers)}/{len(texts)}"}


def _wait_ready(server, timeout: float) -> str | None:
    """Start ``server`` (a StageServer) and wait until /ready says 200: None, or why not. A
    model that cannot be loaded fails at once (its ``model_load_failed`` line), not at the
    timeout: the server stays up, answering 503, when its model does not load."""
    import httpx

    server.spawn()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return f"the server exited ({server.proc.returncode}): {server.log_tail()[-600:]}"
        output = server.log_path.read_text(errors="replace")
        for line in output.splitlines():
            if '"model_load_failed"' in line:
                error = json.loads(line).get("error", line) if line.startswith("{") else line
                return f"the server did not load the candidate: {error}"
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return None
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return f"the server was not ready after {timeout:.0f} s"


# --- the commands ---------------------------------------------------------------------------


def promote(
    version: str,
    models_root: Path = MODELS_ROOT,
    tolerance: float = TOLERANCE,
    smoke: Callable[[Path], dict] | None = smoke_test,
) -> Decision:
    """Run the gate on ``version``; move ``LATEST`` to it only if every check passes. Every
    decision is logged and recorded in the registry (``smoke=None`` skips the server check and
    says so in the record)."""
    root = Path(models_root)
    previous = current_default(root)
    entry: dict = {"action": "promote", "version": version, "artifact": None, "previous": previous}
    checks: dict = {}
    try:
        artifact = resolve(root, version)
        candidate = read_metadata(artifact)
        entry.update(version=candidate.version, artifact=artifact.name)
        log.info("promote %s: the default is %s", artifact.name, previous or "(none)")
        if previous == artifact.name:
            log.info("promote %s: already the default; nothing to do", artifact.name)
            return Decision(EXIT_OK, entry | {"outcome": "unchanged"})
        current = None
        if previous:
            try:
                current = read_metadata(root / previous)
            except ModelLoadError as e:  # LATEST names a folder that is gone or broken
                log.warning("the current default is unreadable (%s): nothing to compare", e)
        if current is None:
            checks["split"] = checks["metrics"] = "no current default: nothing to compare"
            log.info("checks 1-2: %s", checks["split"])
        else:
            checks["split"] = check_split(candidate, current)
            log.info("check 1 split: the same test rows (%s)", _short(checks["split"]["current"]))
            checks["metrics"] = check_metrics(candidate, current, tolerance)
            log.info("check 2 metrics: within %s of the current default: %s", tolerance,
                     _figures(checks["metrics"]["figures"]))  # fmt: skip
        if smoke is None:
            checks["smoke"] = "skipped (--no-smoke)"
            log.warning("check 3 smoke: skipped")
        else:
            log.info("check 3 smoke: starting the server on %s ...", artifact.name)
            checks["smoke"] = smoke(artifact)
            log.info("check 3 smoke: %s answers as expected", checks["smoke"].get("passed"))
    except GateError as e:
        checks[e.check] = e.details or str(e)
        log.error("refused: %s", e)
        entry |= {"outcome": "refused", "failed_check": e.check, "checks": checks, "reason": str(e)}
        return Decision(e.code, record(root, entry))
    set_default(root, artifact.name)
    log.info("promoted: %s now names %s (was %s)", LATEST_FILE, artifact.name, previous)
    reason = "every check passed" if smoke is not None else "split and metrics passed; no smoke"
    entry |= {"outcome": "promoted", "failed_check": None, "checks": checks, "reason": reason}
    return Decision(EXIT_OK, record(root, entry))


def _figures(figures: dict) -> str:
    return ", ".join(
        f"{name} {f['candidate']:.4f} (current {f['current']:.4f})" for name, f in figures.items()
    )


def rollback(models_root: Path = MODELS_ROOT) -> Decision:
    """Move ``LATEST`` back to the version promoted before the current one (exit 7 when the
    registry knows of none). When ``LATEST`` was changed outside the gate (a retrained model),
    the target is the last version the gate promoted."""
    root = Path(models_root)
    current = current_default(root)
    stack = promoted_stack(history(root))
    if stack and stack[-1] != current:
        target, how = stack[-1], "the last promoted version (LATEST was changed outside the gate)"
    elif len(stack) >= 2:
        target, how = stack[-2], "the version promoted before it"
    else:
        reason = (
            f"nothing to roll back: the registry in {root} has no version promoted before "
            f"{current or '(no default)'}"
        )
        log.error(reason)
        return Decision(EXIT_NOTHING_TO_ROLL_BACK, {"action": "rollback", "reason": reason})
    if not (root / target).is_dir():
        reason = f"cannot roll back to {target}: the folder is gone from {root}"
        log.error(reason)
        return Decision(EXIT_NOTHING_TO_ROLL_BACK, {"action": "rollback", "reason": reason})
    set_default(root, target)
    log.info("rolled back: %s now names %s, %s (was %s)", LATEST_FILE, target, how, current)
    version = target.rsplit("-", 1)[-1]
    entry = {"action": "rollback", "version": version, "artifact": target, "previous": current}
    entry |= {"outcome": "rolled_back", "failed_check": None, "checks": {}, "reason": how}
    return Decision(EXIT_OK, record(root, entry))


def main(argv: list[str] | None = None) -> int:
    """``promote VERSION`` / ``rollback`` / ``history``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m sentiment_model.registry", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--models-root", type=Path, default=MODELS_ROOT)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("promote", help="move LATEST to VERSION if the gate passes")
    p.add_argument("version", help="e.g. 1a2b3c4d5e6f or sentiment-1a2b3c4d5e6f")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help=f"default {TOLERANCE}")
    p.add_argument("--no-smoke", action="store_true", help="skip the server smoke test")
    commands.add_parser("rollback", help="move LATEST back to the version promoted before")
    commands.add_parser("history", help="print the registry, oldest first")
    for sub in commands.choices.values():  # --models-root after the command word works too
        sub.add_argument("--models-root", type=Path, default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    if args.command == "history":
        for entry in history(args.models_root):
            print(json.dumps(entry))
        return EXIT_OK
    if args.command == "rollback":
        return rollback(args.models_root).code
    smoke = None if args.no_smoke else smoke_test
    return promote(args.version, args.models_root, args.tolerance, smoke).code


if __name__ == "__main__":
    sys.exit(main())

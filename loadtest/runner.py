"""A whole benchmark run: which servers run which steps, in what order, and what is written.

Sections, in order (each can be left out, see :class:`loadtest.config.BenchConfig`):

1. the in-process model ceiling, per scorer (``sklearn``, ``direct``), at the start;
2. each stage (``naive`` ... the final stage) and ``<final>-sklearn`` (the final stage with
   ``INFERENCE_SCORER=sklearn``): ladder, ``mixed`` (final stage), ``half_load`` (naive and
   the final stage); the final stage's labels checked against sklearn on the whole test split;
3. ``reference``: the FastAPI ceiling (``loadtest/reference_server.py``), ladder only;
4. the wait sweep: the final stage once per ``INFERENCE_MAX_BATCH_WAIT_MS`` value;
5. the layers: the final stage once per ``INFERENCE_BENCH_OFF`` value, one fixed-load step
   (served as ``loadtest/bench_app.py``, the only app that reads the variable);
6. the model ceiling again at the end (reports keep the faster measurement).

Every server is started by :class:`~loadtest.launcher.StageServer` and stopped by PID when
its section ends; its output goes to ``server-<name>.log`` and its JSON log file to
``server-<name>.requests.log`` in the run directory (both trimmed to their first and last
lines), never to the student's ``logs/requests.log``. The tables are rewritten after each
server, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd

from loadtest.config import (
    BARE,
    BARE_APP,
    FINAL_SKLEARN,
    PLOTS_DIR,
    PROFILES,
    RESULTS_ROOT,
    BenchConfig,
    configured_batch_size,
    final_stage_settings,
    machine_info,
    new_run_dir,
    server_settings,
)
from loadtest.launcher import BENCH_APP, SERVER_CPU, StageServer, trim_log
from loadtest.report import (
    REFERENCE,
    batch_rows,
    closing_table,
    evaluate_targets,
    report_markdown,
)
from loadtest.results import read_table
from loadtest.rounds import collapse_rounds, has_rounds, write_round_files
from loadtest.steps import STEP_OVERHEAD_S, Step, ensure_payload_file, run_steps, tidy
from serving.stages import BASELINE_STAGE, FINAL_STAGE, STAGES


@dataclass(frozen=True)
class ServerSpec:
    """A server the benchmark can run: a stage (or the reference app) with extra settings."""

    label: str
    stage: str
    env: dict[str, str] = field(default_factory=dict)
    app_dir: str | None = None
    app: str | None = None

    def server(self, env: dict[str, str], log_path: Path) -> StageServer:
        """A (not yet started) :class:`StageServer` for this spec."""
        return StageServer(
            self.stage, env=env | self.env, log_path=log_path, app_dir=self.app_dir,
            app=self.app, label=self.label,
        )  # fmt: skip


SERVERS: dict[str, ServerSpec] = {name: ServerSpec(name, name) for name in STAGES} | {
    FINAL_SKLEARN: ServerSpec(FINAL_SKLEARN, FINAL_STAGE, {"INFERENCE_SCORER": "sklearn"}),
    BARE: ServerSpec(BARE, BARE, app_dir=".", app=BARE_APP),
    REFERENCE: ServerSpec(REFERENCE, REFERENCE, app_dir=".", app="loadtest.reference_server:app"),
}
FINAL_VARIANTS = (FINAL_STAGE, FINAL_SKLEARN)  # they get the half-load step too


@dataclass
class Session:
    """One server start: the steps to run against it, then an optional check."""

    name: str  # names the raw files and the server log
    spec: ServerSpec
    env: dict[str, str]
    steps: Callable[[StageServer, list[dict]], Iterable[Step]]  # (server, rows so far)
    n_steps: int
    after: Callable[[StageServer], None] | None = None
    round: int = 1  # which round of the stages' sessions (BenchConfig.rounds)


def plan(config: BenchConfig, hooks: dict[str, Callable[[StageServer], None]]) -> list[Session]:
    """The run's sessions in order. ``hooks``: label -> check run after that server's steps."""
    env = {"INFERENCE_MODEL_DIR": config.model_dir} if config.model_dir else {}
    sessions = []

    def stage_steps(label: str):
        def steps(server: StageServer, rows: list[dict]) -> Iterator[Step]:
            for profile in config.profiles:
                yield from (Step("ladder", profile, u) for u in config.users)
                if config.mixed_users and label == FINAL_STAGE and server.has_batch_route:
                    yield Step("mixed", profile, config.mixed_users, 0, config.batch_share)
                naive = [r["rps"] for r in rows if r["stage"] == BASELINE_STAGE
                         and r["profile"] == profile and r["kind"] == "ladder"]  # fmt: skip
                u = config.half_load_users
                if u and naive and label in (BASELINE_STAGE, *FINAL_VARIANTS):
                    yield Step("half_load", profile, u, user_rate=max(naive) / 2 / u)

        return steps

    labels = [s for s in SERVERS if s in config.stages] + [REFERENCE] * config.reference
    for r in range(config.rounds):
        # Round r starts every server again, in an order rotated by r (interleaved rounds).
        shift = r % len(labels) if labels else 0
        for label in labels[shift:] + labels[:shift]:
            extra = bool(config.half_load_users) * (label in (BASELINE_STAGE, *FINAL_VARIANTS))
            extra += bool(config.mixed_users) * (label == FINAL_STAGE)
            n = len(config.profiles) * (len(config.users) + extra)
            name = label if config.rounds == 1 else f"{label}-r{r + 1}"
            hook = hooks.get(label) if r == 0 else None  # the labels check: first round only
            sessions.append(
                Session(name, SERVERS[label], env, stage_steps(label), n, hook, round=r + 1)
            )
    final = SERVERS[FINAL_STAGE]
    bench = ServerSpec(FINAL_STAGE, FINAL_STAGE, app_dir=".", app=BENCH_APP)  # the layers' app
    with_final = FINAL_STAGE in config.stages  # the sweep and the layers are the final stage's
    for wait in config.sweep_ms if with_final else []:
        sweep = [
            Step("wait_sweep", p, u) for p in config.sweep_profiles for u in config.sweep_users
        ]
        wait_env = env | {"INFERENCE_MAX_BATCH_WAIT_MS": f"{wait:g}"}
        sessions.append(
            Session(f"{FINAL_STAGE}-wait{wait:g}ms", final, wait_env,
                    lambda _s, _r, steps=sweep: steps, len(sweep))
        )  # fmt: skip
    for off in config.layers if with_final else []:
        step = Step("layers", config.layers_profile, config.layers_users)
        off_env = env | ({"INFERENCE_BENCH_OFF": off} if off else {})
        name = f"{FINAL_STAGE}-off-{off.replace(',', '+') or 'none'}"
        sessions.append(Session(name, bench, off_env, lambda _s, _r, st=step: [st], 1))
    return sessions


class _Progress:
    """Prints which server and step runs and an estimate of the time left."""

    RESTART_S = 6.0

    def __init__(self, steps: int, duration: float, restarts: int):
        self.per_step = duration + STEP_OVERHEAD_S
        self.left = steps * self.per_step + restarts * self.RESTART_S
        self.steps, self.done = steps, 0

    def __call__(self, label: str) -> None:
        self.done += 1
        mins, secs = divmod(int(max(self.left, 0)), 60)
        print(f"[{self.done}/{self.steps}] {label}  (~{mins}m{secs:02d}s left)", flush=True)
        self.left -= self.per_step


def run_sessions(
    sessions: list[Session], config: BenchConfig, run_dir: Path, payloads: Path, rows: list[dict]
) -> list[dict]:
    """Start each session's server, run its steps and check, stop it by PID; tables as it goes."""
    progress = _Progress(sum(s.n_steps for s in sessions), config.duration, len(sessions))
    for session in sessions:
        log_path = run_dir / f"server-{session.name}.log"
        server = session.spec.server(session.env, log_path)
        try:
            server.start()
            progress.left -= progress.RESTART_S
            steps = session.steps(server, rows)
            first = len(rows)
            run_steps(
                server, steps, config.duration, run_dir, payloads, session.name, progress,
                into=rows,
            )  # fmt: skip
            for row in rows[first:]:
                row["round"] = session.round
            if session.after:
                session.after(server)
        finally:
            server.stop()
            trim_log(log_path)
            trim_request_log(own_request_log(server))
        write_tables(run_dir, rows)
    return rows


def own_request_log(server: StageServer) -> Path | None:
    """The server's JSON log file when the launcher chose it (beside its output), else None: a
    log the caller chose (``INFERENCE_LOG_PATH`` in the session's env, as notebook 04 does to
    read it afterwards) is theirs and is left whole."""
    if server.request_log is None or "INFERENCE_LOG_PATH" in server.env:
        return None
    return server.request_log


def trim_request_log(path: Path | None) -> None:
    """The server's JSON log file (``INFERENCE_LOG_PATH``, beside its output in the run
    directory): its rotated parts removed, the rest trimmed like the output, which holds the
    same lines (one per request: 49,000 in a quick run)."""
    if path is None:
        return
    for rotated in path.parent.glob(f"{path.name}.*"):
        rotated.unlink()
    trim_log(path)


def write_tables(run_dir: Path, rows: list[dict]) -> pd.DataFrame:
    """``summary.csv`` and ``batch_sizes.csv`` from the rows so far."""
    summary = tidy(rows)
    summary.to_csv(run_dir / "summary.csv", index=False, float_format="%.5g")
    batches = batch_rows(rows)
    if batches:
        pd.DataFrame(batches).to_csv(run_dir / "batch_sizes.csv", index=False)
    return summary


def run_ceiling(config: BenchConfig, payloads: Path, when: str) -> list[dict]:
    """The model alone, in-process on the server's CPU, per scorer, batch 1 and the batch size."""
    from loadtest.ceiling import measure_ceiling, scorer_for
    from loadtest.payloads import load_payload_file
    from sentiment_model import load_model

    model = load_model(config.model_dir or os.environ.get("INFERENCE_MODEL_DIR") or None)
    texts = {p: load_payload_file(payloads, p) for p in config.profiles}
    scorers = {name: scorer_for(model, name, config.direct_scorer) for name in config.scorers}
    for name in [n for n, s in scorers.items() if s is None]:
        print(f"ceiling: no {name!r} scorer in this checkout ({config.direct_scorer}); skipped")
        del scorers[name]
    batch = configured_batch_size()
    print(f"ceiling ({when}): model {model.version} in-process, batches of 1 and {batch}")
    rows = measure_ceiling(
        model, texts, (1, batch), config.ceiling_seconds, cpu=SERVER_CPU, scorers=scorers
    )
    for r in rows:
        print(
            f"  {r['scorer']:7s} {r['profile']:5s} batch {r['batch_size']:3d}: "
            f"{r['texts_per_s']:8.0f} texts/s ({r['texts_per_s_p50']:.0f} from the median batch)"
        )
    return [{"when": when, **r, "model_version": model.version} for r in rows]


def check_labels(server: StageServer, config: BenchConfig, payloads: Path, out: Path) -> dict:
    """The server's labels (``/predict/batch``) vs sklearn's in-process on every test text."""
    from loadtest.payloads import load_payload_file
    from sentiment_model import load_model
    from sentiment_model.data import clean_text

    model = load_model(config.model_dir or os.environ.get("INFERENCE_MODEL_DIR") or None)
    texts = [t for p in PROFILES for t in load_payload_file(payloads, p)]
    expected = model.predict([clean_text(t) for t in texts])  # what the server does first
    n = os.environ.get("INFERENCE_MAX_BATCH_ITEMS") or final_stage_settings()["max_batch_items"]
    n = int(n)
    got, versions = [], set()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for i in range(0, len(texts), n):
            resp = client.post("/predict/batch", json={"texts": texts[i : i + n]})
            resp.raise_for_status()
            got += resp.json()["predictions"]
            versions.add(resp.json()["model_version"])
    diffs = [abs(e.score - g["score"]) for e, g in zip(expected, got, strict=True)]
    result = {
        "texts": len(texts),
        "mismatches": sum(e.label != g["label"] for e, g in zip(expected, got, strict=True)),
        "max_score_diff": max(diffs),
        "stage": server.label,
        "scorer": server_settings(server.stage, server.env)["scorer"],
        "server_model_version": sorted(versions),
        "model_version": model.version,
    }
    out.write_text(json.dumps(result, indent=2))
    print(
        f"labels ({server.label}): {result['mismatches']} of {result['texts']} differ from "
        f"sklearn's, largest score difference {result['max_score_diff']:.2g}",
        flush=True,
    )
    return result


def run(config: BenchConfig, run_dir: Path | None = None) -> tuple[Path, pd.DataFrame]:
    """Run the whole benchmark; return the run directory and the summary table."""
    unknown = [s for s in config.stages if s not in SERVERS or s == REFERENCE]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}; choose from {', '.join(SERVERS)}")
    for profile in {*config.profiles, *config.sweep_profiles, config.layers_profile}:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    if run_dir is None:
        run_dir = new_run_dir(config.quick, Path(config.out_root or RESULTS_ROOT))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"benchmark run {run_dir.name}: {config.stages}, profiles {config.profiles}", flush=True)
    (run_dir / "machine.json").write_text(json.dumps(machine_info(config), indent=2))
    payloads = ensure_payload_file(run_dir)
    hooks = {}
    if config.check_labels:
        for stage in dict.fromkeys([FINAL_STAGE, *config.labels_stages]):
            out = run_dir / ("labels.json" if stage == FINAL_STAGE else f"labels-{stage}.json")
            hooks[stage] = lambda s, out=out: check_labels(s, config, payloads, out)
    ceiling: list[dict] = []
    try:
        if config.ceiling_seconds > 0:
            ceiling = run_ceiling(config, payloads, "start")
            pd.DataFrame(ceiling).to_csv(run_dir / "ceiling.csv", index=False)
        rows = run_sessions(plan(config, hooks), config, run_dir, payloads, [])
        if config.ceiling_seconds > 0:
            ceiling += run_ceiling(config, payloads, "end")
            pd.DataFrame(ceiling).to_csv(run_dir / "ceiling.csv", index=False)
    finally:
        payloads.unlink(missing_ok=True)  # a cache of the test split: not a result
    if hasattr(os, "getloadavg"):  # how busy the (shared) machine was by the end
        machine = json.loads((run_dir / "machine.json").read_text())
        machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        (run_dir / "machine.json").write_text(json.dumps(machine, indent=2))
    summary = write_tables(run_dir, rows)
    plots_dir = Path(config.plots_dir) if config.plots_dir else (
        run_dir / "plots" if config.quick else PLOTS_DIR
    )  # fmt: skip
    report(run_dir, plots_dir)
    return run_dir, summary


def report(run_dir: Path, plots_dir: Path | None = None) -> pd.DataFrame:
    """(Re)compute a run's targets, ``report.md`` and plots from its files; print them.

    ``python -m loadtest.bench --report <run-dir>`` does this without running any load.
    """
    from loadtest import plots
    from loadtest.ceiling import best_ceiling

    run_dir = Path(run_dir)
    summary = read_table(run_dir)  # today's stage names, whatever the run called them
    if has_rounds(summary):  # --rounds N: medians and ranges (rounds.md), targets on medians
        write_round_files(run_dir, summary, FINAL_STAGE)
        summary = collapse_rounds(summary)
    path = run_dir / "ceiling.csv"
    ceiling = best_ceiling(pd.read_csv(path) if path.is_file() else pd.DataFrame())
    path = run_dir / "labels.json"
    labels = json.loads(path.read_text()) if path.is_file() else None
    targets = evaluate_targets(summary, ceiling, configured_batch_size(), labels)
    targets.to_csv(run_dir / "targets.csv", index=False)
    (run_dir / "report.md").write_text(report_markdown(run_dir, summary, ceiling, targets, labels))
    made = plots.plot_run(run_dir, plots_dir or run_dir / "plots")
    print(closing_table(summary, targets), flush=True)
    print(f"\nresults: {run_dir}\nplots:   {', '.join(str(p) for p in made)}", flush=True)
    return targets


def run_wait_sweep(
    waits_ms: Iterable[float] = (0, 1, 2, 5, 10),
    profile: str = "short",
    users: int = 32,
    duration: float = 3.0,
    run_dir: Path | None = None,
    env: dict[str, str] | None = None,
    log=print,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The final stage once per ``INFERENCE_MAX_BATCH_WAIT_MS`` value, one step each (for
    notebooks). Returns ``(summary rows, batch-size histogram rows)``."""
    run_dir = Path(run_dir) if run_dir else new_run_dir(quick=True)
    config = BenchConfig(duration=duration, sweep_ms=list(waits_ms), sweep_profiles=[profile],
                         sweep_users=[users], layers=[])  # fmt: skip
    sessions = [s for s in plan(config, {}) if "-wait" in s.name]
    for s in sessions:
        s.env = dict(env or {}) | s.env
    payloads = ensure_payload_file(run_dir)
    rows: list[dict] = []
    run_sessions(sessions, config, run_dir, payloads, rows)
    return tidy(rows), pd.DataFrame(batch_rows(rows))

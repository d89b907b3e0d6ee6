"""A run's report: the course's performance targets (as data), the headline and layers tables,
``report.md``, and the tidy batch-size rows.

Each target is one :class:`Target` row of :data:`TARGETS`: a name, a measure (a function of the
run's tables that returns the figure and a detail, or None when the run lacks the data), a
comparison and a threshold. :func:`evaluate_targets` evaluates them all the same way.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from loadtest.steps import plural
from serving.stages import BASELINE_STAGE, FINAL_STAGE

REFERENCE = "reference"  # the FastAPI ceiling: validation and a constant answer, no model
NAN = float("nan")


@dataclass
class RunData:
    """What the targets are computed from: the run's tables."""

    summary: pd.DataFrame
    ceiling: pd.DataFrame
    batch_size: int = 32
    labels: dict | None = None  # labels.json: the final stage's labels vs sklearn's

    def __post_init__(self) -> None:
        # Runs recorded before these columns existed: every server scored with sklearn.
        missing = {"scorer": "sklearn", "bench_off": ""}
        missing = {k: v for k, v in missing.items() if k not in self.summary}
        if missing and len(self.summary):
            self.summary = self.summary.assign(**missing)

    def steps(self, kind: str, stage: str, profile: str | None = None) -> pd.DataFrame:
        s = self.summary
        if not len(s):
            return s
        part = s[(s["kind"] == kind) & (s["stage"] == stage)]
        return part[part["profile"] == profile] if profile else part


Measured = tuple[float, str] | None  # (figure, detail), or None: not measured


def _max_rps_ratio(d: RunData, profile: str) -> Measured:
    fin, base = d.steps("ladder", FINAL_STAGE, profile), d.steps("ladder", BASELINE_STAGE, profile)
    if not len(fin) or not len(base):
        return None
    # Requests per server CPU-second at each stage's best step: what the stages would do with
    # the core to themselves (robust to other processes on a shared machine).
    per_cpu = [1000 / p.loc[p["rps"].idxmax(), "cpu_ms_per_req"] for p in (fin, base)]
    return fin["rps"].max() / base["rps"].max(), (
        f"{fin['rps'].max():.0f} vs {base['rps'].max():.0f} req/s; per server CPU-second "
        f"{per_cpu[0]:.0f} vs {per_cpu[1]:.0f} ({per_cpu[0] / per_cpu[1]:.2f}x)"
    )


def _min_step_ratio(d: RunData, profile: str) -> Measured:
    fin, base = d.steps("ladder", FINAL_STAGE, profile), d.steps("ladder", BASELINE_STAGE, profile)
    both = fin.merge(base, on="users", suffixes=("_f", "_b"))
    if not len(both):
        return None
    ratio = both["rps_f"] / both["rps_b"]
    worst = both.loc[ratio.idxmin()]
    steps = ", ".join(f"{u}: {r:.2f}x" for u, r in zip(both["users"], ratio, strict=True))
    return ratio.min(), (
        f"worst at {plural(int(worst['users']), 'user')} ({worst['rps_f']:.0f} vs "
        f"{worst['rps_b']:.0f} req/s); per step {steps}"
    )


def _one_user_p50_ratio(d: RunData, profile: str) -> Measured:
    fin, base = d.steps("ladder", FINAL_STAGE, profile), d.steps("ladder", BASELINE_STAGE, profile)
    f1, b1 = fin[fin["users"] == 1], base[base["users"] == 1] if len(base) else base
    if not len(f1) or not len(b1):
        return None
    f, b = f1["p50_ms"].iloc[0], b1["p50_ms"].iloc[0]
    return f / b, f"{f:.2f} vs {b:.2f} ms"


def _half_load_p99_ratio(d: RunData, profile: str) -> Measured:
    f = d.steps("half_load", FINAL_STAGE, profile)
    b = d.steps("half_load", BASELINE_STAGE, profile)
    if not len(f) or not len(b):
        return None
    f, b = f.iloc[0], b.iloc[0]
    return f["p99_ms"] / b["p99_ms"], (
        f"{f['p99_ms']:.2f} vs {b['p99_ms']:.2f} ms at {f['offered_rps']:.0f} req/s offered "
        f"(achieved {f['rps']:.0f} and {b['rps']:.0f})"
    )


def _reference_fraction(d: RunData, profile: str) -> Measured:
    fin, ref = d.steps("ladder", FINAL_STAGE, profile), d.steps("ladder", REFERENCE, profile)
    if not len(fin) or not len(ref):
        return None
    return fin["rps"].max() / ref["rps"].max(), (
        f"{fin['rps'].max():.0f} of {ref['rps'].max():.0f} req/s (FastAPI validation, constant "
        "answer, no model)"
    )


def _model_ceiling_fraction(d: RunData, profile: str) -> Measured:
    fin, ceil = d.steps("ladder", FINAL_STAGE, profile), d.ceiling
    if not len(fin) or ceil is None or not len(ceil):
        return None
    hit = ceil[(ceil["profile"] == profile) & (ceil["batch_size"] == d.batch_size)]
    scorer = fin["scorer"].dropna().iloc[0] if fin["scorer"].notna().any() else None
    if "scorer" in hit and scorer in set(hit["scorer"]):
        hit = hit[hit["scorer"] == scorer]
    if not len(hit):
        return None
    col = "texts_per_s_p50" if "texts_per_s_p50" in hit else "texts_per_s"
    ceiling = float(hit[col].iloc[0])
    top = fin.loc[fin["texts_per_s"].idxmax()]
    split = ""
    if pd.notna(top.get("main_thread_cpu_pct", NAN)):
        split = (
            f"; at that step the event loop used {top['main_thread_cpu_pct']:.0f}% of a core, "
            f"the model thread {top['worker_threads_cpu_pct']:.0f}%"
        )
    return top["texts_per_s"] / ceiling, f"{top['texts_per_s']:.0f} of {ceiling:.0f} texts/s{split}"


def _failures(d: RunData, _: str | None) -> Measured:
    s = d.summary
    if not len(s):
        return None
    # A step that measured no request at all (locust still spawning when it ended, say) counts
    # as one failure: it proves nothing either way.
    bad = s[(s["failures"] > 0) | (s["requests"] == 0)]
    where = "; ".join(
        f"{r.stage} {r.profile} {r.kind} u{r.users}: "
        + (f"{r.failures} failed" if r.failures else "no request measured")
        for r in bad.itertuples()
    )
    where = where or f"{int(s['requests'].sum())} requests, none failed"
    return float(s["failures"].sum() + (s["requests"] == 0).sum()), where


def _rss_growth(d: RunData, stage: str) -> Measured:
    part = d.steps("ladder", stage)
    if not len(part):
        return None
    growth = part["server_rss_mb"].max() / part["server_rss_mb"].iloc[0]
    return growth, " / ".join(f"{v:.0f}" for v in part["server_rss_mb"]) + " MB per step"


def _label_mismatches(d: RunData, _: str | None) -> Measured:
    if not d.labels:
        return None
    lab = d.labels
    return float(lab["mismatches"]), (
        f"{lab['texts']} texts via /predict/batch, {lab['mismatches']} labels differ; largest "
        f"score difference {lab['max_score_diff']:.2g} (server scorer {lab.get('scorer', '?')})"
    )


@dataclass(frozen=True)
class Target:
    """One target: ``measure(data, key)`` for each key (a profile, a stage or None), compared
    with ``threshold`` by ``op`` (``>=`` or ``<=``). ``op=None``: reported, no target."""

    name: str  # may use {key} and {threshold}
    measure: Callable[[RunData, str | None], Measured]
    op: str | None = ">="
    threshold: float | None = None
    keys: tuple[str | None, ...] | str = ("short", "long")  # "stages": every ladder stage


TARGETS: list[Target] = [
    Target("{key}: final max throughput >= {threshold}x naive", _max_rps_ratio, ">=", 3.5,
           ("short",)),
    Target("{key}: final max throughput >= {threshold}x naive", _max_rps_ratio, ">=", 2.0,
           ("long",)),
    Target("{key}: final throughput >= naive at every ladder step", _min_step_ratio, ">=", 1.0),
    Target("{key}: one user, final p50 <= {threshold}x naive p50", _one_user_p50_ratio, "<=",
           1.1),
    Target("{key}: at half the naive max offered, final p99 <= naive p99", _half_load_p99_ratio,
           "<=", 1.0),
    Target("{key}: final max throughput >= 70% of the FastAPI ceiling", _reference_fraction,
           ">=", 0.7, ("short",)),
    Target("{key}: final max throughput vs in-process ceiling at batch {batch}",
           _model_ceiling_fraction, None),
    Target("zero failures", _failures, "<=", 0, (None,)),
    Target("{key}: RSS flat across the ladder (max <= {threshold}x first step)", _rss_growth,
           "<=", 1.1, "stages"),
    Target("same labels as sklearn on the whole test split", _label_mismatches, "<=", 0, (None,)),
]  # fmt: skip

OPS = {">=": operator.ge, "<=": operator.le}


def evaluate_targets(
    summary: pd.DataFrame,
    ceiling: pd.DataFrame | None = None,
    batch_size: int = 32,
    labels: dict | None = None,
    targets: list[Target] = TARGETS,
) -> pd.DataFrame:
    """Every target with its measured figure and whether it was met (None: not measured, or a
    figure reported without a target). Maximum throughput is the highest closed-loop ``ladder``
    rate of a stage and profile."""
    data = RunData(summary, ceiling if ceiling is not None else pd.DataFrame(), batch_size, labels)
    ladder_stages = list(dict.fromkeys(data.summary["stage"])) if len(summary) else []
    rows = []
    for t in targets:
        keys = ladder_stages if t.keys == "stages" else t.keys
        for key in keys:
            name = t.name.format(key=key, threshold=t.threshold, batch=batch_size)
            measured = t.measure(data, key)
            if t.keys == "stages" and measured is None:
                continue  # a server without ladder steps (the sweep's, the layers')
            value, detail = measured or (NAN, "not measured")
            met = None if measured is None or t.op is None else bool(OPS[t.op](value, t.threshold))
            rows.append(
                {"target": name, "value": value, "threshold": t.threshold, "met": met,
                 "detail": detail}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=["target", "value", "threshold", "met", "detail"])


def batch_rows(rows: list[dict]) -> list[dict]:
    """Tidy batch-size histogram rows (one per step and bucket) from the steps' scrapes."""
    return [
        {"stage": r["stage"], "profile": r["profile"], "kind": r["kind"], "users": r["users"],
         "wait_ms": r["wait_ms"], "bench_off": r.get("bench_off", ""), "le": le, "count": n}
        for r in rows for le, n in r.get("_batches", [])
    ]  # fmt: skip


def headline_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per server and profile: max throughput, lone-user p50 and p99 at max throughput."""
    lad = summary[summary["kind"] == "ladder"]
    rows = []
    for (stage, profile), part in lad.groupby(["stage", "profile"], sort=False):
        top = part.loc[part["rps"].idxmax()]
        one = part[part["users"] == part["users"].min()].iloc[0]
        rows.append(
            {
                "stage": stage,
                "profile": profile,
                "max req/s": round(top["rps"], 1),
                "at users": int(top["users"]),
                "p50 1 user (ms)": round(one["p50_ms"], 2),
                "p99 at max (ms)": round(top["p99_ms"], 1),
                "CPU ms/req at max": round(top["cpu_ms_per_req"], 2),
                "failures": int(part["failures"].sum()),
                "RSS (MB)": f"{part['server_rss_mb'].min():.0f}-{part['server_rss_mb'].max():.0f}",
            }
        )
    return pd.DataFrame(rows)


def layers_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The ``layers`` steps: per ``INFERENCE_BENCH_OFF`` value, req/s and server CPU
    microseconds per request, and both relative to everything on."""
    lay = summary[summary["kind"] == "layers"] if len(summary) else summary
    if not len(lay):
        return pd.DataFrame()
    lay = lay.assign(bench_off=lay["bench_off"].fillna(""))
    on = lay[lay["bench_off"] == ""]
    base_rps = on["rps"].iloc[0] if len(on) else NAN
    base_us = on["cpu_ms_per_req"].iloc[0] * 1000 if len(on) else NAN
    rows = []
    for r in lay.itertuples():
        us = r.cpu_ms_per_req * 1000
        rows.append(
            {
                "switched off": r.bench_off or "(nothing: all on)",
                "profile": r.profile,
                "users": int(r.users),
                "req/s": round(r.rps, 1),
                "vs all on": f"{r.rps / base_rps:.2f}x",
                "server CPU us/req": round(us, 1),
                "saved us/req": round(base_us - us, 1),
                "failures": int(r.failures),
            }
        )
    return pd.DataFrame(rows)


def fmt_table(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in r]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_markdown(
    run_dir: Path,
    summary: pd.DataFrame,
    ceiling: pd.DataFrame,
    targets: pd.DataFrame,
    labels: dict | None = None,
) -> str:
    """The run's results as markdown: headline, layers, ceilings, labels, targets."""
    parts = [f"# Benchmark run {Path(run_dir).name}\n"]
    machine = json.loads((Path(run_dir) / "machine.json").read_text())
    parts.append(
        f"Machine: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs, "
        f"{machine['memory_gb']} GB; server pinned: {machine['pinning']['server']}; "
        f"locust pinned: {machine['pinning']['locust']}; Python {machine['python']}.\n"
    )
    if len(summary):
        parts += ["## Maximum throughput and latency\n", fmt_table(headline_table(summary)), ""]
        layers = layers_table(summary)
        if len(layers):
            parts += ["## What each layer of the final stage costs\n", fmt_table(layers), ""]
    if ceiling is not None and len(ceiling):
        cols = [c for c in ("scorer", "profile", "batch_size", "texts_per_s", "texts_per_s_p50",
                            "batch_p50_ms") if c in ceiling]  # fmt: skip
        parts += ["## In-process ceiling (model alone, one core)\n", fmt_table(ceiling[cols]), ""]
    if labels:
        parts += [
            "## Labels\n",
            f"The final stage ({labels.get('scorer', '?')} scorer) against sklearn in-process on "
            f"{labels['texts']} test-split texts: {labels['mismatches']} labels differ, largest "
            f"score difference {labels['max_score_diff']:.2g}.\n",
        ]
    if len(targets):
        t = targets.assign(met=targets["met"].map({True: "yes", False: "NO", None: "-"}))
        parts += ["## Targets\n", fmt_table(t), ""]
    return "\n".join(parts) + "\n"


def closing_table(summary: pd.DataFrame, targets: pd.DataFrame) -> str:
    """What the terminal shows at the end of a run: headline table and targets."""
    lines = ["", headline_table(summary).to_string(index=False) if len(summary) else "(no steps)"]
    layers = layers_table(summary) if len(summary) else pd.DataFrame()
    if len(layers):
        lines += ["", layers.to_string(index=False)]
    if len(targets):
        lines.append("")
        for _, t in targets.iterrows():
            verdict = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
            lines.append(f"{verdict:7s} {t['target']}: {t['value']:.3g} ({t['detail']})")
    return "\n".join(lines)

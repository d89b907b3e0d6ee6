"""A run of several interleaved rounds (``python -m loadtest.bench --rounds N``): medians and
ranges of the headline points, and the price-of-production targets (issue 18, lesson 10).

One 5 s step is one sample: on a shared machine the same configuration measured 3,768 and
4,663 req/s in one run. So the headline points (the highest ladder rate on each profile, the
one-user p50) are measured once per round, each round starting every server again in a rotated
order, and reported as the median with the lowest and highest round. Ratios (final vs naive,
final vs bare) are taken round by round, between servers measured minutes apart, then
summarised the same way.

    from loadtest import rounds
    summary = read_table("benchmarks/results/<run-id>")
    rounds.headline(summary)          # per server and profile: median (min-max) over rounds
    rounds.price_targets(summary, "fast", labels={"fast": json.load(...)})

The bench writes ``rounds.csv`` (one row per server, profile and round), ``headline.csv``,
``price_targets.csv`` and ``rounds.md`` for such a run (:func:`write_round_files`).
"""

from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path

import pandas as pd

from loadtest.config import BARE
from loadtest.report import fmt_table
from loadtest.steps import plural
from serving.stages import BASELINE_STAGE, STAGES

NAN = float("nan")
KEYS = ["stage", "profile", "kind", "users", "user_rate", "batch_share", "wait_ms", "scorer",
        "bench_off"]  # fmt: skip
SUMMED = ("requests", "failures")
SPREAD = ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req")  # get _min and _max columns
# Issue 18: the share of the bare reference the shipped stage keeps, its speed-up over naive.
OF_BARE = {"short": 0.85, "long": 0.90}
OVER_NAIVE = {"short": 3.0, "long": 2.0}
LAYERS_COST = 0.10  # metrics + access log + request ids, share of max throughput
SCORE_TOLERANCE = 1e-9


def has_rounds(summary: pd.DataFrame) -> bool:
    """Whether the run measured its stages in more than one round."""
    return "round" in summary and summary["round"].nunique() > 1


def collapse_rounds(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per step (server, profile, kind, users ...): the median over the rounds of each
    figure, requests and failures summed, RSS at its highest; ``rps_min``, ``rps_max`` (and the
    same for p50, p99, CPU per request) give the range. A run of one round is returned as is."""
    if not has_rounds(summary):
        return summary
    keys = [k for k in KEYS if k in summary]
    table = summary.assign(**{k: summary[k].fillna("") for k in keys if summary[k].dtype == object})
    rows = []
    warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)  # all-NaN columns
    for _, part in table.groupby(keys, sort=False, dropna=False):
        row = part.iloc[0].to_dict()
        for col in part.columns:
            if col in keys or col == "round" or not pd.api.types.is_numeric_dtype(part[col]):
                continue
            row[col] = part[col].sum() if col in SUMMED else part[col].median()
        if "server_rss_max_mb" in part:
            row["server_rss_max_mb"] = part["server_rss_max_mb"].max()
        for col in SPREAD:
            if col in part:
                row[f"{col}_min"], row[f"{col}_max"] = part[col].min(), part[col].max()
        row["rounds"] = len(part)
        rows.append(row)
    return pd.DataFrame(rows).drop(columns="round")


def round_points(summary: pd.DataFrame) -> pd.DataFrame:
    """Per server, profile and round: the headline points of that round's ladder."""
    lad = summary[summary["kind"] == "ladder"]
    if "round" not in lad:
        lad = lad.assign(round=1)
    rows = []
    for (stage, profile, r), part in lad.groupby(["stage", "profile", "round"], sort=False):
        top = part.loc[part["rps"].idxmax()]
        one = part[part["users"] == part["users"].min()].iloc[0]
        rows.append(
            {
                "stage": stage, "profile": profile, "round": int(r),
                "max_rps": top["rps"], "users_at_max": int(top["users"]),
                "p99_at_max_ms": top["p99_ms"], "cpu_ms_per_req_at_max": top["cpu_ms_per_req"],
                "p50_one_user_ms": one["p50_ms"], "one_user": int(one["users"]),
                "failures": int(part["failures"].sum()), "requests": int(part["requests"].sum()),
                "rss_growth": part["server_rss_mb"].max() / part["server_rss_mb"].iloc[0],
                "host_load_1m": part["host_load_1m"].mean(),
                "cpu0_others_pct_max": part["cpu0_others_pct"].max(),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def _spread(values: list[float]) -> dict[str, float]:
    values = [v for v in values if v == v]
    if not values:
        return {"median": NAN, "min": NAN, "max": NAN, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}  # fmt: skip


def _paired(points: pd.DataFrame, stage: str, other: str, profile: str, col: str) -> list[float]:
    """``stage / other`` of ``col``, round by round (rounds where both were measured)."""
    p = points[points["profile"] == profile].set_index(["stage", "round"])[col]
    if stage not in p.index.get_level_values(0) or other not in p.index.get_level_values(0):
        return []
    a, b = p.loc[stage], p.loc[other]
    both = a.index.intersection(b.index)
    return [float(a[r] / b[r]) for r in both if b[r] > 0]


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """Per server and profile: max req/s and one-user p50, median (min, max) over rounds, and
    the max req/s as a ratio to naive's and to the bare reference's, round by round."""
    points = round_points(summary)
    rows = []
    for (stage, profile), part in points.groupby(["stage", "profile"], sort=False):
        row = {"stage": stage, "profile": profile, "rounds": len(part)}
        for col in ("max_rps", "p50_one_user_ms", "cpu_ms_per_req_at_max"):
            s = _spread(part[col].tolist())
            row |= {col: s["median"], f"{col}_min": s["min"], f"{col}_max": s["max"]}
        row["users_at_max"] = "/".join(str(u) for u in part["users_at_max"])
        for other, name in ((BASELINE_STAGE, "vs_naive"), (BARE, "vs_bare")):
            s = _spread(_paired(points, stage, other, profile, "max_rps"))
            row |= {name: s["median"], f"{name}_min": s["min"], f"{name}_max": s["max"]}
            # The same ratio per server CPU-second (other's CPU per request / this one's): what
            # the servers would do with the core to themselves, less moved by neighbours.
            s = _spread([1 / r for r in _paired(points, stage, other, profile,
                                                  "cpu_ms_per_req_at_max")])  # fmt: skip
            row |= {f"cpu_{name}": s["median"], f"cpu_{name}_min": s["min"],
                    f"cpu_{name}_max": s["max"]}  # fmt: skip
        s = _spread(_paired(points, stage, BASELINE_STAGE, profile, "p50_one_user_ms"))
        row |= {"p50_vs_naive": s["median"], "p50_vs_naive_min": s["min"],
                "p50_vs_naive_max": s["max"]}  # fmt: skip
        row["host_load_1m"] = part["host_load_1m"].median()
        rows.append(row)
    return pd.DataFrame(rows)


def candidates(summary: pd.DataFrame) -> list[str]:
    """The run's stages from the one that introduced the direct scorer on (the final stage and
    the steps after it): the stages the price-of-production targets are about."""
    order = list(STAGES)
    first = next(
        (i for i, s in enumerate(order) if "sentiment_model.scorer" in STAGES[s].teaches), 0
    )
    present = set(summary["stage"])
    return [s for s in order[first:] if s in present]


def _per_cpu(points: pd.DataFrame, stage: str, other: str, profile: str, fmt: str) -> str:
    """The detail of a throughput ratio: the same ratio per server CPU-second."""
    s = _spread([1 / r for r in _paired(points, stage, other, profile, "cpu_ms_per_req_at_max")])
    if not s["n"]:
        return "ratio of the highest ladder rates, round by round"
    shown = f"{fmt.format(s['median'])} ({fmt.format(s['min'])} to {fmt.format(s['max'])})"
    return (
        "ratio of the highest ladder rates, round by round; per server CPU-second at those "
        f"steps: {shown}"
    )


def _target(name: str, s: dict, op: str, threshold: float, detail: str, fmt: str) -> dict:
    value = s["median"]
    met = None if value != value else (value >= threshold if op == ">=" else value <= threshold)
    shown = f"{fmt.format(value)} ({fmt.format(s['min'])} to {fmt.format(s['max'])})"
    return {"target": name, "value": value, "min": s["min"], "max": s["max"],
            "rounds": s["n"], "threshold": threshold, "met": met,
            "measured": shown if s["n"] > 1 else fmt.format(value), "detail": detail}  # fmt: skip


def price_targets(
    summary: pd.DataFrame,
    stage: str,
    labels: dict | None = None,
    layers: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Issue 18's targets for ``stage``, each with its median over the rounds and the range.

    ``labels``: the stage's labels check (``labels.json``); ``layers``: rows of
    ``python -m loadtest.layers`` (its CSV) with ``all on (as shipped)`` and ``metrics + log +
    id off`` measured in interleaved rounds."""
    points = round_points(summary)
    lad = summary[summary["kind"] == "ladder"]
    out = []
    for profile in [p for p in ("short", "long") if p in set(points["profile"])]:
        bare = _spread(_paired(points, stage, BARE, profile, "max_rps"))
        out.append(_target(
            f"{profile}: {stage} max throughput >= {OF_BARE[profile]:.0%} of the bare reference",
            bare, ">=", OF_BARE[profile], _per_cpu(points, stage, BARE, profile, "{:.0%}"),
            "{:.0%}",
        ))  # fmt: skip
        naive = _spread(_paired(points, stage, BASELINE_STAGE, profile, "max_rps"))
        out.append(_target(
            f"{profile}: {stage} max throughput >= {OVER_NAIVE[profile]:.1f}x naive", naive,
            ">=", OVER_NAIVE[profile], _per_cpu(points, stage, BASELINE_STAGE, profile, "{:.2f}x"),
            "{:.2f}x",
        ))  # fmt: skip
        steps = lad[(lad["profile"] == profile) & lad["stage"].isin([stage, BASELINE_STAGE])]
        if "round" not in steps:
            steps = steps.assign(round=1)
        pivot = steps.pivot_table(index=["round", "users"], columns="stage", values="rps")
        ratio = pd.Series(dtype=float)
        if stage in pivot and BASELINE_STAGE in pivot:
            ratio = (pivot[stage] / pivot[BASELINE_STAGE]).replace(float("inf"), NAN).dropna()
        if len(ratio):
            per_step = ratio.groupby(level="users").median()
            worst = ratio.idxmin()
            s = _spread(ratio.groupby(level="round").min().tolist())
            detail = (
                "per step, median over rounds: "
                + ", ".join(f"{u}: {r:.2f}x" for u, r in per_step.items())
                + f"; lowest single step {ratio.min():.2f}x (round {worst[0]}, "
                f"{plural(int(worst[1]), 'user')})"
            )
            out.append(
                _target(
                    f"{profile}: {stage} >= naive at every ladder step (lowest step of each round)",
                    s,
                    ">=",
                    1.0,
                    detail,
                    "{:.2f}x",
                )
            )
        s = _spread(_paired(points, stage, BASELINE_STAGE, profile, "p50_one_user_ms"))
        mine = points[(points["stage"] == stage) & (points["profile"] == profile)]
        theirs = points[(points["stage"] == BASELINE_STAGE) & (points["profile"] == profile)]
        detail = (
            f"p50 {mine['p50_one_user_ms'].median():.2f} vs "
            f"{theirs['p50_one_user_ms'].median():.2f} ms (medians)"
        )
        out.append(_target(f"{profile}: one user, {stage} p50 <= naive p50", s, "<=", 1.0,
                           detail, "{:.2f}x"))  # fmt: skip
    if layers is not None and len(layers):
        s, detail = _layers_cost(layers)
        out.append(_target("metrics + access log + request ids <= 10% of max throughput", s,
                           "<=", LAYERS_COST, detail, "{:.0%}"))  # fmt: skip
    mine = summary[summary["stage"] == stage]
    failed = int(mine["failures"].sum() + (mine["requests"] == 0).sum())
    out.append(_target(f"{stage}: zero failures", _spread([failed]), "<=", 0,
                       f"{int(mine['requests'].sum())} requests", "{:.0f}"))  # fmt: skip
    growth = points[points["stage"] == stage]["rss_growth"]
    out.append(_target(f"{stage}: RSS flat across the ladder (max <= 1.1x first step)",
                       _spread(growth.tolist()), "<=", 1.1, "max / first step, per round",
                       "{:.2f}x"))  # fmt: skip
    if labels:
        diff = float(labels["max_score_diff"])
        ok = labels["mismatches"] == 0 and diff <= SCORE_TOLERANCE
        out.append({
            "target": f"{stage}: same labels as sklearn, scores within 1e-9, whole test split",
            "value": float(labels["mismatches"]), "min": NAN, "max": NAN, "rounds": 1,
            "threshold": 0, "met": ok,
            "measured": f"{labels['mismatches']} of {labels['texts']} differ; largest score "
                        f"difference {diff:.2g}",
            "detail": f"scorer {labels.get('scorer', '?')}",
        })  # fmt: skip
    return pd.DataFrame(out)


def _layers_cost(rows: pd.DataFrame) -> tuple[dict, str]:
    """The observability layers' share of max throughput, round by round, from a layers CSV:
    ``1 - CPU per request with them off / with them on`` (loadtest.layers.summarise)."""
    from loadtest.layers import SATURATED_PCT

    by_round = rows.pivot_table(index="round", columns="off", values="cpu_us", aggfunc="first")
    busy = rows.pivot_table(index="round", columns="off", values="server_cpu_pct", aggfunc="first")
    on_key, off_key = "", "metrics,access_log,request_id"
    by_round.columns = [c if isinstance(c, str) else "" for c in by_round.columns]
    busy.columns = by_round.columns
    # Every round counts (CPU per request is the figure a busy machine moves least); how many
    # kept both servers at SATURATED_PCT of their core is said, not used to drop rounds.
    saturated = int((busy[[on_key, off_key]].min(axis=1) >= SATURATED_PCT).sum())
    costs = (1 - by_round[off_key] / by_round[on_key]).tolist()
    detail = (
        f"server CPU per request {by_round[on_key].median():.0f} µs all on, "
        f"{by_round[off_key].median():.0f} µs with the three off (medians of {len(by_round)} "
        f"rounds; {saturated} with both servers at >= {SATURATED_PCT} % of their core)"
    )
    return _spread(costs), detail


def markdown(summary: pd.DataFrame, targets: dict[str, pd.DataFrame]) -> str:
    """``rounds.md``: the headline table with ranges, then each candidate's targets."""
    head = headline(summary)

    def cell(r: pd.Series, col: str, fmt: str) -> str:
        if r[col] != r[col]:
            return "-"
        if r["rounds"] < 2:
            return fmt.format(r[col])
        return f"{fmt.format(r[col])} ({fmt.format(r[col + '_min'])}-{fmt.format(r[col + '_max'])})"

    lines = [
        "| server | profile | rounds | max req/s | at users | vs naive | vs bare | p50, one user "
        "(ms) | host load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in head.iterrows():
        lines.append(
            f"| {r['stage']} | {r['profile']} | {r['rounds']} | {cell(r, 'max_rps', '{:,.0f}')} "
            f"| {r['users_at_max']} | {cell(r, 'vs_naive', '{:.2f}x')} "
            f"| {cell(r, 'vs_bare', '{:.0%}')} | {cell(r, 'p50_one_user_ms', '{:.2f}')} "
            f"| {r['host_load_1m']:.1f} |"
        )
    parts = ["# Headline points over interleaved rounds\n",
             "Median (lowest-highest round); ratios are taken round by round.\n",
             "\n".join(lines), ""]  # fmt: skip
    for stage, table in targets.items():
        t = table.assign(met=table["met"].map({True: "yes", False: "**no**", None: "-"}))
        parts += [f"## Targets of the price of production: {stage}\n",
                  fmt_table(t[["target", "measured", "met", "detail"]]), ""]  # fmt: skip
    return "\n".join(parts) + "\n"


def read_labels(run_dir: Path, stage: str, final: str) -> dict | None:
    """The labels check of ``stage`` in the run (``labels.json`` for the final stage)."""
    path = run_dir / ("labels.json" if stage == final else f"labels-{stage}.json")
    return json.loads(path.read_text()) if path.is_file() else None


def write_round_files(run_dir: Path, summary: pd.DataFrame, final: str) -> list[Path]:
    """``rounds.csv``, ``headline.csv``, ``price_targets.csv`` and ``rounds.md`` of a run of
    several rounds (the layers target where the run holds a ``layers-short.csv``)."""
    run_dir = Path(run_dir)
    layers_csv = run_dir / "layers-short.csv"
    layers = pd.read_csv(layers_csv, keep_default_na=False) if layers_csv.is_file() else None
    if layers is not None:
        for col in ("rps", "server_cpu_pct", "cpu_us", "round", "ok", "failed"):
            layers[col] = pd.to_numeric(layers[col])
    # loadtest.layers serves the final stage (loadtest/bench_app.py): its target is the final's.
    targets = {
        stage: price_targets(
            summary, stage, read_labels(run_dir, stage, final), layers if stage == final else None
        )
        for stage in candidates(summary)
    }
    round_points(summary).to_csv(run_dir / "rounds.csv", index=False, float_format="%.5g")
    headline(summary).to_csv(run_dir / "headline.csv", index=False, float_format="%.5g")
    if targets:
        table = pd.concat([t.assign(stage=s) for s, t in targets.items()], ignore_index=True)
        table.to_csv(run_dir / "price_targets.csv", index=False, float_format="%.5g")
    (run_dir / "rounds.md").write_text(markdown(summary, targets), encoding="utf-8")
    return [run_dir / n for n in ("rounds.csv", "headline.csv", "price_targets.csv", "rounds.md")]

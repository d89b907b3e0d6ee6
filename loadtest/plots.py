"""Plots of a benchmark run (matplotlib, Agg canvas, PNG files).

Every function takes the run's table (a DataFrame or the path of its CSV), writes a PNG when
``path`` is given and returns the Figure, so a notebook can both save and show it. Figures are
built on an Agg canvas directly (no pyplot state, no global backend switch).

    from loadtest import plots
    plots.plot_run("benchmarks/results/<run-id>", "benchmarks/plots")   # every plot of a run
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loadtest.ceiling import best_ceiling
from loadtest.config import BARE, FINAL_SKLEARN
from loadtest.report import REFERENCE, layers_table
from loadtest.results import read_table
from loadtest.rounds import collapse_rounds, has_rounds, headline, round_points
from loadtest.steps import plural
from serving.stages import FINAL_STAGE, STAGES

STAGE_ORDER = [*STAGES, FINAL_SKLEARN, BARE, REFERENCE]
STAGE_COLORS = {
    "naive": "#d62728",
    "validated": "#ff7f0e",
    "metrics": "#2ca02c",
    "batched": "#17becf",  # stages 4-6
    "lifecycle": "#bcbd22",
    "hardened": "#8c564b",
    FINAL_STAGE: "#1f77b4",  # the final stage keeps its colour whatever its name
    FINAL_SKLEARN: "#9467bd",
    "lean": "#08306b",  # step 10
    BARE: "#e377c2",
    REFERENCE: "#555555",
}
STAGE_NAMES = {REFERENCE: "FastAPI ceiling (no model)", BARE: "bare batched (no production layers)"}
STAGE_STYLES = {REFERENCE: "s--", BARE: "D--"}  # references, not stages: dashed
PROFILE_TITLES = {"short": "short texts (~110 chars)", "long": "long reviews (~1,300 chars)"}


def _table(data: pd.DataFrame | str | Path) -> pd.DataFrame:
    return data if isinstance(data, pd.DataFrame) else pd.read_csv(data)


def _figure(ncols: int, nrows: int = 1, width: float = 5.5, height: float = 4.0) -> Figure:
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _shared_legend(fig: Figure) -> None:
    """One legend for every panel, under the figure: inside a panel, it covers data."""
    seen: dict[str, object] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        ncol = min(len(seen), max(2, int(fig.get_figwidth() // 1.8)))  # as many as fit
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=ncol,
                   fontsize=8)  # fmt: skip


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def _stages(df: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(df["stage"]))
    return [s for s in STAGE_ORDER if s in present] + [s for s in present if s not in STAGE_ORDER]


def _profiles(df: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(df["profile"]))
    return [p for p in PROFILE_TITLES if p in present] + [
        p for p in present if p not in PROFILE_TITLES
    ]


def _ladder(summary: pd.DataFrame) -> pd.DataFrame:
    lad = summary[summary["kind"] == "ladder"] if "kind" in summary else summary
    if lad.empty:
        raise ValueError("the summary has no ladder steps to plot")
    return lad.sort_values("users")


def _users_axis(ax, users) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted(set(int(u) for u in users))
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("concurrent users (closed loop)")
    ax.grid(True, alpha=0.3)


def _stage_line(ax, part: pd.DataFrame, stage: str, x: str, y: str) -> None:
    s = part[part["stage"] == stage]
    style = STAGE_STYLES.get(stage, "o-")
    label = STAGE_NAMES.get(stage, stage)
    ax.plot(s[x], s[y], style, color=STAGE_COLORS.get(stage), label=label)
    if f"{y}_min" in s and s[f"{y}_min"].notna().any():  # several rounds: their range
        ax.fill_between(s[x], s[f"{y}_min"], s[f"{y}_max"], color=STAGE_COLORS.get(stage),
                        alpha=0.15, lw=0)  # fmt: skip


def _ceilings(ceil: pd.DataFrame | None, profile: str) -> list[tuple[str, float]]:
    """``[(label, texts/s)]``: the model alone, in-process, per scorer and batch size."""
    if ceil is None or not len(ceil):
        return []
    col = "texts_per_s_p50" if "texts_per_s_p50" in ceil else "texts_per_s"
    out = []
    for _, c in ceil[ceil["profile"] == profile].iterrows():
        scorer = f"{c['scorer']}, " if isinstance(c.get("scorer"), str) else ""
        out.append((f"model alone ({scorer}batch {int(c['batch_size'])})", float(c[col])))
    return out


def _ceiling_lines(ax, ceilings: list[tuple[str, float]]) -> None:
    """A dotted line per ceiling; ceilings within 8 % of each other share one label, so their
    labels never print over each other."""
    groups: list[list[tuple[str, float]]] = []
    for label, value in sorted(ceilings, key=lambda c: c[1]):
        ax.axhline(value, ls=":", lw=1, color="grey")
        if groups and value <= groups[-1][0][1] * 1.08:
            groups[-1].append((label, value))
        else:
            groups.append([(label, value)])
    for group in groups:
        names = [label.removeprefix("model alone (").removesuffix(")") for label, _ in group]
        low, high = group[0][1], group[-1][1]
        values = f"{low:,.0f}/s" if len(group) == 1 else f"{low:,.0f}-{high:,.0f}/s"
        text = f"model alone ({'; '.join(names)}): {values}"
        ax.annotate(text, (0.99, high), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(0, 2), fontsize=7, color="grey",
                    ha="right")  # fmt: skip


def _broken_axes(fig: Figure, cell, ceilings: list[tuple[str, float]]):
    """A main axis and, above it, a short one on its own scale for the model-alone ceilings:
    drawn on the main axis they would squash every server into its bottom tenth."""
    top, main = cell.subgridspec(2, 1, height_ratios=[1, 4], hspace=0.05).subplots(sharex=True)
    values = [v for _, v in ceilings]
    top.set_ylim(min(values) * 0.85, max(values) * 1.15)
    _ceiling_lines(top, ceilings)
    top.spines["bottom"].set_visible(False)
    main.spines["top"].set_visible(False)
    top.tick_params(labelbottom=False, bottom=False, labelsize=7)
    marks = dict(marker=[(-1, -0.5), (1, 0.5)], markersize=8, linestyle="none", color="k",
                 mec="k", mew=1, clip_on=False)  # fmt: skip
    top.plot([0, 1], [0, 0], transform=top.transAxes, **marks)  # the break
    main.plot([0, 1], [1, 1], transform=main.transAxes, **marks)
    return top, main


def throughput_vs_users(
    summary: pd.DataFrame | str | Path,
    path: str | Path | None = None,
    ceiling: pd.DataFrame | str | Path | None = None,
) -> Figure:
    """Requests per second against concurrent users, one line per server, one panel per
    profile. The reference server (FastAPI, no model) is the dashed line.

    With ``ceiling`` (ceiling.csv), the model's in-process throughput is drawn as dotted lines:
    on the panel where it fits, on a short axis of its own above a break where it is far
    above every server.
    """
    lad = _ladder(_table(summary))
    ceil = best_ceiling(_table(ceiling)) if ceiling is not None else None
    profiles = _profiles(lad)
    fig = _figure(len(profiles), height=4.6)
    cells = fig.add_gridspec(1, len(profiles))
    for i, profile in enumerate(profiles):
        part = lad[lad["profile"] == profile]
        top = 1.15 * part["rps"].max()
        ceilings = _ceilings(ceil, profile)
        far = [c for c in ceilings if c[1] > 1.6 * top]
        if far:
            upper, ax = _broken_axes(fig, cells[i], far)
            upper.set_title(PROFILE_TITLES.get(profile, profile))
        else:
            ax = fig.add_subplot(cells[i])
            ax.set_title(PROFILE_TITLES.get(profile, profile))
        near = [c for c in ceilings if c not in far]
        _ceiling_lines(ax, near)
        for stage in _stages(part):
            _stage_line(ax, part, stage, "users", "rps")
        _users_axis(ax, part["users"])
        ax.set_ylabel("throughput (requests/s)")
        ax.set_ylim(0, max([top, *(v * 1.1 for _, v in near)]))
    _shared_legend(fig)
    fig.suptitle("Throughput vs load, one server core")
    return _save(fig, path)


def latency_vs_users(summary: pd.DataFrame | str | Path, path: str | Path | None = None) -> Figure:
    """p50 (top row) and p99 (bottom row) latency against users, one line per stage."""
    lad = _ladder(_table(summary))
    profiles = _profiles(lad)
    fig = _figure(len(profiles), 2, height=3.6)
    axes = fig.subplots(2, len(profiles), squeeze=False)
    for col, profile in enumerate(profiles):
        part = lad[lad["profile"] == profile]
        for row, (pct, label) in enumerate((("p50_ms", "p50"), ("p99_ms", "p99"))):
            ax = axes[row][col]
            for stage in _stages(part):
                _stage_line(ax, part, stage, "users", pct)
            _users_axis(ax, part["users"])
            ax.set_yscale("log")
            ax.set_ylabel(f"{label} latency (ms)")
            ax.set_title(f"{label}, {PROFILE_TITLES.get(profile, profile)}")
    _shared_legend(fig)
    fig.suptitle("Latency vs load (client side, exact percentiles)")
    return _save(fig, path)


def latency_vs_throughput(
    summary: pd.DataFrame | str | Path, path: str | Path | None = None
) -> Figure:
    """p99 (solid) and p50 (dotted) latency against achieved throughput: the classic knee."""
    lad = _ladder(_table(summary))
    profiles = _profiles(lad)
    fig = _figure(len(profiles))
    for ax, profile in zip(fig.subplots(1, len(profiles), squeeze=False)[0], profiles, strict=True):
        part = lad[lad["profile"] == profile]
        for stage in _stages(part):
            s = part[part["stage"] == stage].sort_values("users")
            color, name = STAGE_COLORS.get(stage), STAGE_NAMES.get(stage, stage)
            ax.plot(s["rps"], s["p99_ms"], "o-", color=color, label=f"{name} p99")
            ax.plot(s["rps"], s["p50_ms"], ".:", color=color, label=f"{name} p50")
        ax.set_yscale("log")
        ax.set_xlabel("throughput (requests/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(PROFILE_TITLES.get(profile, profile))
        ax.grid(True, alpha=0.3)
    _shared_legend(fig)
    fig.suptitle("Latency vs throughput (each point one ladder step)")
    return _save(fig, path)


def batch_size_distribution(
    batch_sizes: pd.DataFrame | str | Path,
    path: str | Path | None = None,
    stage: str | None = None,
    kind: str = "ladder",
) -> Figure:
    """Share of batches per batch-size bucket: one bar per user count (``kind="ladder"``) or
    per batch wait (``kind="wait_sweep"``), of ``stage`` (default: the final stage)."""
    stage = stage or FINAL_STAGE
    df = _table(batch_sizes)
    df = df[(df["stage"] == stage) & (df["kind"] == kind)]
    if df.empty:
        raise ValueError(f"no batch-size histogram for stage {stage!r} in the {kind} steps")
    by = "wait_ms" if kind == "wait_sweep" else "users"
    profiles = _profiles(df)
    fig = _figure(len(profiles))
    for ax, profile in zip(fig.subplots(1, len(profiles), squeeze=False)[0], profiles, strict=True):
        part = df[(df["profile"] == profile) & np.isfinite(df["le"])]
        # A bucket no step ever filled (above the largest batch size) is left out.
        filled = part.groupby("le")["count"].sum()
        buckets = sorted(filled[filled > 0].index)
        groups = sorted(part[by].unique())
        width = 0.8 / max(len(groups), 1)
        x = np.arange(len(buckets))
        for i, g in enumerate(groups):
            counts = part[part[by] == g].groupby("le")["count"].sum().reindex(buckets).fillna(0)
            total = counts.sum()
            share = counts / total if total else counts
            name = f"{g:g} ms wait" if by == "wait_ms" else plural(int(g), "user")
            ax.bar(x + i * width, share.to_numpy(), width, label=name)
        ax.set_xticks(x + width * (len(groups) - 1) / 2, [f"<={b:g}" for b in buckets])
        ax.set_xlabel("batch size (histogram bucket)")
        ax.set_ylabel("share of batches")
        ax.set_title(PROFILE_TITLES.get(profile, profile))
    _shared_legend(fig)
    fig.suptitle(f"Batch sizes formed by the {stage} stage under load")
    return _save(fig, path)


def wait_sweep(summary: pd.DataFrame | str | Path, path: str | Path | None = None) -> Figure:
    """``INFERENCE_MAX_BATCH_WAIT_MS`` sweep: throughput (bars) and p50 / p99 (lines)."""
    df = _table(summary)
    df = df[df["kind"] == "wait_sweep"].sort_values("wait_ms")
    if df.empty:
        raise ValueError("the summary has no wait_sweep steps")
    groups = list(df.groupby(["profile", "users"], sort=False))
    ncols = min(len(groups), 2)
    nrows = -(-len(groups) // ncols)
    fig = _figure(ncols, nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    for ax, ((profile, users), part) in zip(axes, groups, strict=False):
        x = np.arange(len(part))
        ax.bar(x, part["rps"], color="#9ecae1", label="throughput")
        ax.set_xticks(x, [f"{w:g}" + (" (greedy)" if w == 0 else "") for w in part["wait_ms"]])
        ax.set_xlabel("INFERENCE_MAX_BATCH_WAIT_MS")
        ax.set_ylabel("throughput (requests/s)")
        lat = ax.twinx()
        lat.plot(x, part["p50_ms"], "o-", color="#08519c", label="p50")
        lat.plot(x, part["p99_ms"], "s--", color="#a50f15", label="p99")
        lat.set_ylabel("latency (ms)")
        lat.set_ylim(bottom=0)
        handles = ax.get_legend_handles_labels()[0] + lat.get_legend_handles_labels()[0]
        # Below the axes: inside, it would cover a bar or a point whatever the corner.
        ax.legend(
            handles,
            [h.get_label() for h in handles],
            fontsize=8,
            ncol=3,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
        )
        ax.set_title(f"{PROFILE_TITLES.get(profile, profile)}, {plural(int(users), 'user')}")
    fig.suptitle("Batch wait: latency / throughput trade-off (final stage)")
    return _save(fig, path)


def memory_per_step(summary: pd.DataFrame | str | Path, path: str | Path | None = None) -> Figure:
    """Server RSS after each ladder step: it should stay flat as load grows."""
    lad = _ladder(_table(summary))
    profiles = _profiles(lad)
    fig = _figure(len(profiles))
    for ax, profile in zip(fig.subplots(1, len(profiles), squeeze=False)[0], profiles, strict=True):
        part = lad[lad["profile"] == profile]
        for stage in _stages(part):
            _stage_line(ax, part, stage, "users", "server_rss_mb")
        _users_axis(ax, part["users"])
        ax.set_ylabel("server RSS (MB)")
        ax.set_ylim(bottom=0)
        ax.set_title(PROFILE_TITLES.get(profile, profile))
    _shared_legend(fig)
    fig.suptitle("Server memory across the ladder")
    return _save(fig, path)


def layers(summary: pd.DataFrame | str | Path, path: str | Path | None = None) -> Figure:
    """The final stage at one fixed load with each ``INFERENCE_BENCH_OFF`` value: throughput
    (left) and server CPU time per request (right), all-on first."""
    table = layers_table(_table(summary))
    if table.empty:
        raise ValueError("the summary has no layers steps")
    fig = _figure(2, width=5.2, height=4.2)
    left, right = fig.subplots(1, 2)
    names = table["switched off"].str.replace(",", ",\n")
    y = np.arange(len(table))[::-1]
    colors = ["#1f77b4" if i == 0 else "#9ecae1" for i in range(len(table))]
    panels = (
        (left, "req/s", "throughput (requests/s)"),
        (right, "server CPU us/req", "server CPU per request (µs)"),
    )
    for ax, col, label in panels:
        ax.barh(y, table[col], color=colors)
        for yi, v in zip(y, table[col], strict=True):
            ax.annotate(f"{v:,.0f}", (v, yi), textcoords="offset points", xytext=(3, -3),
                        fontsize=8)  # fmt: skip
        ax.set_yticks(y, names, fontsize=8)
        ax.set_xlabel(label)
        ax.set_xlim(0, table[col].max() * 1.2)
        ax.grid(True, axis="x", alpha=0.3)
    right.set_yticks(y, [""] * len(y))
    first = table.iloc[0]
    fig.suptitle(
        f"What each layer costs: final stage, {first['profile']} texts, "
        f"{plural(int(first['users']), 'user')}, one layer switched off at a time"
    )
    return _save(fig, path)


def headline_rounds(summary: pd.DataFrame | str | Path, path: str | Path | None = None) -> Figure:
    """The headline points of a run of several rounds: per server, the highest ladder rate and
    the one-user p50 on each profile, a bar at the median, a whisker from the lowest to the
    highest round and a dot per round."""
    summary = _table(summary)
    head, points = headline(summary), round_points(summary)
    profiles = _profiles(head)
    fig = _figure(2, len(profiles), width=6.0, height=3.4)
    axes = fig.subplots(len(profiles), 2, squeeze=False)
    panels = (("max_rps", "max throughput (req/s)"), ("p50_one_user_ms", "p50, one user (ms)"))
    for row, profile in enumerate(profiles):
        part = head[head["profile"] == profile]
        stages = _stages(part)
        for col, (key, label) in enumerate(panels):
            ax = axes[row][col]
            for i, stage in enumerate(stages):
                r = part[part["stage"] == stage].iloc[0]
                color = STAGE_COLORS.get(stage, "#999999")
                ax.barh(i, r[key], color=color, alpha=0.6)
                low, high = r[key] - r[f"{key}_min"], r[f"{key}_max"] - r[key]
                ax.errorbar(r[key], i, xerr=[[low], [high]], fmt="none", ecolor="k", capsize=3,
                            lw=1)  # fmt: skip
                dots = points[(points["stage"] == stage) & (points["profile"] == profile)][key]
                ax.plot(dots, [i] * len(dots), "k.", ms=4)
                fmt = "{:,.0f}" if key == "max_rps" else "{:.2f}"
                ax.annotate(fmt.format(r[key]), (r[f"{key}_max"], i), textcoords="offset points",
                            xytext=(4, -3), fontsize=7)  # fmt: skip
            ax.set_yticks(range(len(stages)), [STAGE_NAMES.get(s, s) for s in stages], fontsize=7)
            ax.invert_yaxis()
            ax.set_xlim(0, part[f"{key}_max"].max() * 1.25)
            ax.set_xlabel(label)
            ax.set_title(f"{label}, {PROFILE_TITLES.get(profile, profile)}", fontsize=9)
            ax.grid(True, axis="x", alpha=0.3)
    n = int(head["rounds"].max())
    fig.suptitle(f"Headline points over {n} interleaved rounds: median, range, each round")
    return _save(fig, path)


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Every plot the run's data allows, as PNGs in ``out_dir`` (default ``run_dir/plots``)."""
    run_dir = Path(run_dir)
    made: list[Path] = []
    out = Path(out_dir) if out_dir else run_dir / "plots"
    summary = read_table(run_dir)  # today's stage names, whatever the run called them
    if has_rounds(summary):
        made.append(out / "headline_rounds.png")
        headline_rounds(summary, made[-1])
        summary = collapse_rounds(summary)  # lines at the medians, bands over the rounds
    ceiling = run_dir / "ceiling.csv"
    batches = run_dir / "batch_sizes.csv"

    def attempt(name: str, fn, *args) -> None:
        try:
            fn(*args, out / name)
        except ValueError:  # that part of the benchmark was not in this run
            return
        made.append(out / name)

    has_ladder = (summary["kind"] == "ladder").any()
    if has_ladder:
        made.append(out / "throughput_vs_users.png")
        throughput_vs_users(summary, made[-1], ceiling if ceiling.is_file() else None)
        attempt("latency_vs_users.png", latency_vs_users, summary)
        attempt("latency_vs_throughput.png", latency_vs_throughput, summary)
        attempt("memory_per_step.png", memory_per_step, summary)
    if batches.is_file():
        attempt(
            "batch_size_distribution.png",
            batch_size_distribution,
            read_table(run_dir, "batch_sizes.csv"),
        )
    attempt("wait_sweep.png", wait_sweep, summary)
    attempt("layers.png", layers, summary)
    return made


def headline_cpu(rows: pd.DataFrame | str | Path, path: str | Path | None = None) -> Figure:
    """The rounds of ``python -m loadtest.headline`` (``headline-rounds.csv``): per server, the
    throughput it would reach with one core to itself (``1e6 / server CPU µs per request``) on
    each profile under load, the req/s it was measured at, and the one-user p50; a bar at the
    median, a whisker from the lowest to the highest round, a dot per round."""
    rows = _table(rows)
    rows = rows.assign(one_core_rps=1e6 / rows["cpu_us"])
    top = int(rows["users"].max())
    panels = [
        ("short", top, "one_core_rps", "req/s with one core (1e6 / CPU µs)"),
        ("long", top, "one_core_rps", "req/s with one core (1e6 / CPU µs)"),
        ("short", top, "rps", "req/s measured (shared machine)"),
        ("short", 1, "p50_ms", "p50, one user (ms)"),
    ]
    panels = [p for p in panels if ((rows["profile"] == p[0]) & (rows["users"] == p[1])).any()]
    fig = _figure(len(panels), width=3.6, height=3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    stages = _stages(rows)
    for ax, (profile, users, col, label) in zip(axes, panels, strict=True):
        part = rows[(rows["profile"] == profile) & (rows["users"] == users)]
        for i, stage in enumerate(stages):
            values = part[part["stage"] == stage][col]
            if not len(values):
                continue
            med = values.median()
            ax.barh(i, med, color=STAGE_COLORS.get(stage, "#999999"), alpha=0.6)
            ax.errorbar(med, i, xerr=[[med - values.min()], [values.max() - med]], fmt="none",
                        ecolor="k", capsize=3, lw=1)  # fmt: skip
            ax.plot(values, [i] * len(values), "k.", ms=4)
            fmt = "{:.2f}" if col == "p50_ms" else "{:,.0f}"
            ax.annotate(fmt.format(med), (values.max(), i), textcoords="offset points",
                        xytext=(4, -3), fontsize=7)  # fmt: skip
        ax.set_yticks(range(len(stages)), [STAGE_NAMES.get(s, s) for s in stages], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, part[col].max() * 1.3)
        ax.set_xlabel(label, fontsize=8)
        ax.set_title(f"{PROFILE_TITLES.get(profile, profile)}, {plural(users, 'user')}",
                     fontsize=8)  # fmt: skip
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    n = int(rows["round"].max())
    fig.suptitle(f"The headline over {n} interleaved rounds: median, range, each round")
    return _save(fig, path)

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

STAGE_ORDER = ["naive", "validated", "metrics", "batched"]
STAGE_COLORS = {
    "naive": "#d62728",
    "validated": "#ff7f0e",
    "metrics": "#2ca02c",
    "batched": "#1f77b4",
}
PROFILE_TITLES = {"short": "short texts (~110 chars)", "long": "long reviews (~1,300 chars)"}


def _table(data: pd.DataFrame | str | Path) -> pd.DataFrame:
    return data if isinstance(data, pd.DataFrame) else pd.read_csv(data)


def _figure(ncols: int, nrows: int = 1, width: float = 5.5, height: float = 4.0) -> Figure:
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


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


def throughput_vs_users(
    summary: pd.DataFrame | str | Path,
    path: str | Path | None = None,
    ceiling: pd.DataFrame | str | Path | None = None,
) -> Figure:
    """Requests per second against concurrent users, one line per stage, one panel per profile.

    With ``ceiling`` (ceiling.csv), the model's in-process throughput is drawn as dashed lines.
    """
    lad = _ladder(_table(summary))
    ceil = best_ceiling(_table(ceiling)) if ceiling is not None else None
    profiles = _profiles(lad)
    fig = _figure(len(profiles))
    for ax, profile in zip(fig.subplots(1, len(profiles), squeeze=False)[0], profiles, strict=True):
        part = lad[lad["profile"] == profile]
        for stage in _stages(part):
            s = part[part["stage"] == stage]
            ax.plot(s["users"], s["rps"], "o-", color=STAGE_COLORS.get(stage), label=stage)
        if ceil is not None and len(ceil):
            col = "texts_per_s_p50" if "texts_per_s_p50" in ceil else "texts_per_s"
            for _, c in ceil[ceil["profile"] == profile].iterrows():
                ax.axhline(c[col], ls="--", lw=1, color="grey")
                ax.annotate(
                    f"model alone, batch {int(c['batch_size'])}",
                    (part["users"].min(), c[col]),
                    textcoords="offset points",
                    xytext=(2, 3),
                    fontsize=8,
                    color="grey",
                )
        _users_axis(ax, part["users"])
        ax.set_ylabel("throughput (requests/s)")
        ax.set_ylim(bottom=0)
        ax.set_title(PROFILE_TITLES.get(profile, profile))
        ax.legend()
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
                s = part[part["stage"] == stage]
                ax.plot(s["users"], s[pct], "o-", color=STAGE_COLORS.get(stage), label=stage)
            _users_axis(ax, part["users"])
            ax.set_yscale("log")
            ax.set_ylabel(f"{label} latency (ms)")
            ax.set_title(f"{label}, {PROFILE_TITLES.get(profile, profile)}")
            ax.legend(fontsize=8)
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
            color = STAGE_COLORS.get(stage)
            ax.plot(s["rps"], s["p99_ms"], "o-", color=color, label=f"{stage} p99")
            ax.plot(s["rps"], s["p50_ms"], ".:", color=color, label=f"{stage} p50")
        ax.set_yscale("log")
        ax.set_xlabel("throughput (requests/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(PROFILE_TITLES.get(profile, profile))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Latency vs throughput (each point one ladder step)")
    return _save(fig, path)


def batch_size_distribution(
    batch_sizes: pd.DataFrame | str | Path,
    path: str | Path | None = None,
    stage: str = "batched",
    kind: str = "ladder",
) -> Figure:
    """Share of batches per batch-size bucket: one bar per user count (``kind="ladder"``) or
    per batch wait (``kind="wait_sweep"``)."""
    df = _table(batch_sizes)
    df = df[(df["stage"] == stage) & (df["kind"] == kind)]
    if df.empty:
        raise ValueError(f"no batch-size histogram for stage {stage!r} in the {kind} steps")
    by, unit = ("wait_ms", "ms wait") if kind == "wait_sweep" else ("users", "users")
    profiles = _profiles(df)
    fig = _figure(len(profiles))
    for ax, profile in zip(fig.subplots(1, len(profiles), squeeze=False)[0], profiles, strict=True):
        part = df[(df["profile"] == profile) & np.isfinite(df["le"])]
        buckets = sorted(part["le"].unique())
        groups = sorted(part[by].unique())
        width = 0.8 / max(len(groups), 1)
        x = np.arange(len(buckets))
        for i, g in enumerate(groups):
            counts = part[part[by] == g].groupby("le")["count"].sum().reindex(buckets).fillna(0)
            total = counts.sum()
            share = counts / total if total else counts
            ax.bar(x + i * width, share.to_numpy(), width, label=f"{g:g} {unit}")
        ax.set_xticks(x + width * (len(groups) - 1) / 2, [f"<={b:g}" for b in buckets])
        ax.set_xlabel("batch size (histogram bucket)")
        ax.set_ylabel("share of batches")
        ax.set_title(PROFILE_TITLES.get(profile, profile))
        ax.legend(fontsize=8)
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
        ax.set_xticks(x, [f"{w:g}" for w in part["wait_ms"]])
        ax.set_xlabel("INFERENCE_MAX_BATCH_WAIT_MS")
        ax.set_ylabel("throughput (requests/s)")
        lat = ax.twinx()
        lat.plot(x, part["p50_ms"], "o-", color="#08519c", label="p50")
        lat.plot(x, part["p99_ms"], "s--", color="#a50f15", label="p99")
        lat.set_ylabel("latency (ms)")
        lat.set_ylim(bottom=0)
        handles = ax.get_legend_handles_labels()[0] + lat.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="lower right")
        ax.set_title(f"{PROFILE_TITLES.get(profile, profile)}, {users} users")
    fig.suptitle("Batch wait: latency / throughput trade-off (batched stage)")
    return _save(fig, path)


def memory_per_step(summary: pd.DataFrame | str | Path, path: str | Path | None = None) -> Figure:
    """Server RSS after each ladder step: it should stay flat as load grows."""
    lad = _ladder(_table(summary))
    profiles = _profiles(lad)
    fig = _figure(len(profiles))
    for ax, profile in zip(fig.subplots(1, len(profiles), squeeze=False)[0], profiles, strict=True):
        part = lad[lad["profile"] == profile]
        for stage in _stages(part):
            s = part[part["stage"] == stage]
            ax.plot(
                s["users"], s["server_rss_mb"], "o-", color=STAGE_COLORS.get(stage), label=stage
            )
        _users_axis(ax, part["users"])
        ax.set_ylabel("server RSS (MB)")
        ax.set_ylim(bottom=0)
        ax.set_title(PROFILE_TITLES.get(profile, profile))
        ax.legend(fontsize=8)
    fig.suptitle("Server memory across the ladder")
    return _save(fig, path)


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Every plot the run's data allows, as PNGs in ``out_dir`` (default ``run_dir/plots``)."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "plots"
    summary = pd.read_csv(run_dir / "summary.csv")
    ceiling = run_dir / "ceiling.csv"
    batches = run_dir / "batch_sizes.csv"
    made: list[Path] = []

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
        attempt("batch_size_distribution.png", batch_size_distribution, batches)
    attempt("wait_sweep.png", wait_sweep, summary)
    return made

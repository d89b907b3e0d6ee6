"""Failure drills: a real Prometheus next to a real server, faults injected from outside.

Notebook 08 (``notebooks/08_debugging.ipynb``) drives these pieces; lesson 08 explains them::

    from loadtest.launcher import StageServer
    from monitoring import drills

    with StageServer("fast", env=...) as server, drills.Prometheus(server.url) as prom:
        with drills.Traffic(server.url, rate=100):             # steady, ordinary traffic
            alert = prom.wait_for_alert("InferenceLatencyP99High", timeout=60)
        df = prom.range("job:http_request_duration_seconds:p99_rate10s", start, end)

- :class:`Prometheus` (in :mod:`monitoring.promserver`): ``prometheus`` on a free port, with a
  temporary configuration that scrapes one server every second, the course's rules
  (``monitoring/rules/``) and a temporary data folder; helpers for the HTTP API (instant and
  range queries, alerts).
- injectors (in :mod:`monitoring.faults`), each acting from outside the server as in
  production: :class:`Traffic` (paced requests from a client, well-formed or not),
  :func:`locust_ramp` (more users than the server can serve), :class:`CpuHog` (processes that
  compete for the server's core), :func:`tampered_copy` (a corrupted model artifact to deploy),
  :func:`heavy_batch_body` (the largest request the limits allow).
- :func:`read_log` (the server's JSON log as a DataFrame) and :func:`plot_panels` (Prometheus
  series over time, with the moments that matter marked).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

# The drills' pieces live by job; the notebook reaches them all as ``drills.<name>``.
from monitoring.faults import (
    CpuHog,
    DeployedServer,
    Traffic,
    default_body,
    heavy_batch_body,
    locust_ramp,
    malformed_body,
    tampered_copy,
)
from monitoring.promserver import Prometheus, prometheus_config

__all__ = [
    "CpuHog",
    "DeployedServer",
    "Prometheus",
    "Traffic",
    "default_body",
    "heavy_batch_body",
    "locust_ramp",
    "malformed_body",
    "plot_panels",
    "prometheus_config",
    "read_log",
    "tampered_copy",
]


def read_log(path: Path | str) -> pd.DataFrame:
    """The server's JSON log, one row per line (as in notebook 03), rotated files included
    (``requests.log.2``, ``requests.log.1``, then ``requests.log``: oldest first)."""
    path = Path(path)
    backups = [p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()]
    backups.sort(key=lambda p: -int(p.suffix[1:]))
    frames = [
        pd.read_json(p, lines=True, dtype=False, convert_dates=["timestamp"])
        for p in [*backups, path]
    ]
    log = pd.concat(frames, ignore_index=True)
    for column in ("status", "batch_size", "texts", "text_chars"):
        if column in log:
            log[column] = log[column].astype("Int64")
    return log


def plot_panels(
    prom: Prometheus,
    panels: Sequence[tuple[str, Mapping[str, str] | str]],
    start: float,
    end: float | None = None,
    marks: Mapping[str, float] | None = None,
    title: str | None = None,
):
    """One subplot per panel, stacked on a shared time axis (seconds since ``start``).

    ``panels``: ``(ylabel, expr)`` or ``(ylabel, {legend: expr, ...})``; ``marks``: vertical
    lines ``{text: time.time() value}`` (the injection, the alert firing, the fix).
    Returns the figure.
    """
    import matplotlib.pyplot as plt

    end = time.time() if end is None else end
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.1 * len(panels)), sharex=True)
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (ylabel, exprs) in zip(axes, panels, strict=True):
        exprs = {"": exprs} if isinstance(exprs, str) else exprs
        for legend, expr in exprs.items():
            frame = prom.range(expr, start, end)
            for column in frame:
                name = legend or ("" if column == "value" else column)
                ax.plot(frame.index, frame[column], label=name or None, lw=1.4)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        for i, (text, t) in enumerate((marks or {}).items()):  # named in the top legend only
            label = text if ax is axes[0] else None
            ax.axvline(t - start, color=f"C{i + 3}", ls=(0, (4, 2 + i)), lw=1.2, label=label)
        if any(line.get_label()[:1] != "_" for line in ax.get_lines()):
            ax.legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel("seconds")
    axes[-1].set_xlim(0, end - start)
    if title:
        fig.suptitle(title, y=1.0 + 0.02 * (4 - min(len(panels), 4)))
    fig.tight_layout()
    return fig

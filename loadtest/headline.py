"""The headline, repeated cheaply: each server's CPU time per request under load and its
one-user latency, in interleaved rounds, with all servers up at once.

    python -m loadtest.headline --stages naive fast bare --rounds 5 --out benchmarks/results/price/x

``python -m loadtest.bench --rounds N`` restarts every server each round and pays locust's
start-up for every step; on a busy shared machine its requests per second measure the machine
more than the servers (another process on the server's core shows in ``cpu0_others_pct``). This
tool measures what survives a busy machine best, the **server's CPU time per request** (psutil,
every thread, counters read before and after each step), the way ``loadtest/layers.py`` does:
every server (a real uvicorn process on 127.0.0.1 pinned to CPU 0, started as the benchmark
starts it) is up at once, and each round drives each one in turn, in a rotated order, with
:func:`loadtest.rawhttp.closed_loop` pinned to CPU 1: ``--connections`` (64) connections on each
profile, then one connection on short texts for the one-user latency. ``1e6 / cpu_us`` is the
server's throughput with one core to itself. Writes ``headline-rounds.csv`` (one row per step),
``headline-summary.csv``, ``headline-targets.csv`` and ``headline.md``, and the final stage's
labels check (``labels.json``; ``labels-<stage>.json`` for the others checked). Every server is
stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

import pandas as pd
import psutil

from loadtest.config import BARE, BenchConfig, machine_info
from loadtest.launcher import CLIENT_CPU, StageServer, trim_log
from loadtest.layers import cpu_seconds, predict_requests
from loadtest.rawhttp import closed_loop
from loadtest.rounds import LAYERS_COST, OF_BARE, OVER_NAIVE, SCORE_TOLERANCE, _layers_cost
from loadtest.runner import SERVERS, check_labels
from loadtest.steps import ensure_payload_file
from sentiment_model.throughput import pinned_to_cpu
from serving.stages import BASELINE_STAGE, FINAL_STAGE

NAN = float("nan")


def step(server: StageServer, requests: list[bytes], connections: int, seconds: float) -> dict:
    """One closed-loop step after a short warm-up: req/s, CPU µs per request, p50 and p99."""
    asyncio.run(closed_loop(server.port, requests, 0.5, connections))
    before, started = cpu_seconds(server.pid), time.perf_counter()
    ok, failed, lat = asyncio.run(closed_loop(server.port, requests, seconds, connections))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(server.pid) - before
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else NAN

    return {
        "ok": ok, "failed": failed, "seconds": elapsed, "rps": ok / elapsed,
        "server_cpu_pct": 100 * cpu / elapsed, "cpu_us": 1e6 * cpu / max(1, ok + failed),
        "p50_ms": pct(0.5), "p99_ms": pct(0.99),
        "rss_mb": psutil.Process(server.pid).memory_info().rss / 2**20,
        "host_load_1m": os.getloadavg()[0],
    }  # fmt: skip


def measure(
    stages: list[str],
    out: Path,
    rounds: int = 5,
    seconds: float = 3.0,
    connections: int = 64,
    profiles: tuple[str, ...] = ("short", "long"),
    labels: tuple[str, ...] = (),
    log=print,
) -> pd.DataFrame:
    """Start every server, run the interleaved rounds, check labels; the rows."""
    from loadtest.payloads import profile_texts

    out.mkdir(parents=True, exist_ok=True)
    texts = {p: predict_requests(profile_texts(p)) for p in profiles}
    servers: dict[str, StageServer] = {}
    rows: list[dict] = []
    try:
        for name in stages:
            log(f"starting {name}")
            servers[name] = SERVERS[name].server({}, out / f"server-{name}.log").start()
        with pinned_to_cpu(CLIENT_CPU):
            for r in range(rounds):
                order = stages[r % len(stages) :] + stages[: r % len(stages)]
                for name in order:
                    steps = [(p, connections) for p in profiles] + [("short", 1)]
                    for profile, users in steps:
                        row = step(servers[name], texts[profile], users, seconds)
                        rows.append({"stage": name, "profile": profile, "users": users,
                                     "round": r + 1} | row)  # fmt: skip
                        log(
                            f"round {r + 1}/{rounds} {name:10s} {profile:5s} u{users:<3d} "
                            f"{row['rps']:7.0f} req/s {row['cpu_us']:6.0f} µs CPU/request "
                            f"(server at {row['server_cpu_pct']:3.0f}% of a core) "
                            f"p50 {row['p50_ms']:6.2f} ms  load {row['host_load_1m']:.1f}"
                        )
                pd.DataFrame(rows).to_csv(out / "headline-rounds.csv", index=False,
                                          float_format="%.5g")  # fmt: skip
        payloads = ensure_payload_file(out)
        for name in labels:
            target = out / ("labels.json" if name == FINAL_STAGE else f"labels-{name}.json")
            check_labels(servers[name], BenchConfig(), payloads, target)
        payloads.unlink(missing_ok=True)
    finally:
        for server in servers.values():
            server.stop()
            for path in (server.log_path, server.request_log):  # one line per request: trimmed
                if path is not None:
                    for rotated in path.parent.glob(f"{path.name}.*"):
                        rotated.unlink()
                    trim_log(path)
    return pd.DataFrame(rows)


def _spread(values: list[float]) -> dict:
    values = [v for v in values if v == v]
    if not values:
        return {"median": NAN, "min": NAN, "max": NAN, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}  # fmt: skip


def _paired(rows: pd.DataFrame, a: str, b: str, profile: str, users: int, col: str) -> list:
    part = rows[(rows["profile"] == profile) & (rows["users"] == users)]
    p = part.pivot_table(index="round", columns="stage", values=col)
    if a not in p or b not in p:
        return []
    return (p[a] / p[b]).dropna().tolist()


def summarise(rows: pd.DataFrame, connections: int = 64) -> pd.DataFrame:
    """Per server and step: req/s, CPU µs per request (and one-core req/s), p50, over rounds;
    one-core throughput ratios to naive and bare, round by round."""
    out = []
    for (stage, profile, users), part in rows.groupby(["stage", "profile", "users"], sort=False):
        row = {"stage": stage, "profile": profile, "users": users, "rounds": len(part)}
        for col in ("rps", "cpu_us", "p50_ms", "server_cpu_pct", "host_load_1m"):
            s = _spread(part[col].tolist())
            row |= {col: s["median"], f"{col}_min": s["min"], f"{col}_max": s["max"]}
        row["one_core_rps"] = 1e6 / row["cpu_us"]
        for other, name in ((BASELINE_STAGE, "vs_naive"), (BARE, "vs_bare")):
            # other's CPU per request / this one's = this one's one-core throughput / other's
            s = _spread(_paired(rows, other, stage, profile, users, "cpu_us"))
            row |= {name: s["median"], f"{name}_min": s["min"], f"{name}_max": s["max"]}
            s = _spread(_paired(rows, stage, other, profile, users, "rps"))
            row |= {f"rps_{name}": s["median"], f"rps_{name}_min": s["min"],
                    f"rps_{name}_max": s["max"]}  # fmt: skip
        out.append(row)
    return pd.DataFrame(out)


def _target(name, s, op, threshold, fmt, detail) -> dict:
    v = s["median"]
    met = None if v != v else (v >= threshold if op == ">=" else v <= threshold)
    shown = f"{fmt.format(v)} ({fmt.format(s['min'])} to {fmt.format(s['max'])})"
    return {"target": name, "value": v, "min": s["min"], "max": s["max"], "rounds": s["n"],
            "threshold": threshold, "met": met, "measured": shown, "detail": detail}  # fmt: skip


def targets(rows: pd.DataFrame, stage: str, out: Path, layers: pd.DataFrame | None = None):
    """Issue 18's targets for ``stage`` from the rounds (one-core throughput ratios)."""
    res = []
    for profile in dict.fromkeys(rows["profile"]):
        users = int(rows[rows["profile"] == profile]["users"].max())
        s = _spread(_paired(rows, BARE, stage, profile, users, "cpu_us"))
        r = _spread(_paired(rows, stage, BARE, profile, users, "rps"))
        res.append(_target(
            f"{profile}: {stage} >= {OF_BARE[profile]:.0%} of bare (one-core throughput)",
            s, ">=", OF_BARE[profile], "{:.1%}",
            f"server CPU per request, {users} connections; req/s measured: {r['median']:.0%} "
            f"({r['min']:.0%} to {r['max']:.0%})"))  # fmt: skip
        s = _spread(_paired(rows, BASELINE_STAGE, stage, profile, users, "cpu_us"))
        r = _spread(_paired(rows, stage, BASELINE_STAGE, profile, users, "rps"))
        res.append(_target(
            f"{profile}: {stage} >= {OVER_NAIVE[profile]:.1f}x naive (one-core throughput)",
            s, ">=", OVER_NAIVE[profile], "{:.2f}x",
            f"server CPU per request, {users} connections; req/s measured: {r['median']:.2f}x "
            f"({r['min']:.2f}x to {r['max']:.2f}x)"))  # fmt: skip
    for users in sorted(set(rows["users"])):
        if users == 1:
            s = _spread(_paired(rows, stage, BASELINE_STAGE, "short", 1, "p50_ms"))
            res.append(_target(f"short: one user, {stage} p50 <= naive p50", s, "<=", 1.0,
                               "{:.2f}x", "ratio of the p50s, round by round"))  # fmt: skip
            s = _spread(_paired(rows, stage, BASELINE_STAGE, "short", 1, "rps"))
            res.append(
                _target(
                    f"short: {stage} >= naive at one user (req/s)",
                    s,
                    ">=",
                    1.0,
                    "{:.2f}x",
                    "ratio of req/s at one connection, round by round",
                )
            )
    if layers is not None:
        s, detail = _layers_cost(layers)
        res.append(_target("metrics + access log + request ids <= 10% of max throughput", s,
                           "<=", LAYERS_COST, "{:.1%}", detail))  # fmt: skip
    mine = rows[rows["stage"] == stage]
    res.append(_target(f"{stage}: zero failures", _spread([float(mine["failed"].sum())]), "<=",
                       0, "{:.0f}", f"{int(mine['ok'].sum())} requests answered"))  # fmt: skip
    growth = mine["rss_mb"].max() / mine.sort_values(["round"])["rss_mb"].iloc[0]
    res.append(_target(f"{stage}: RSS flat (max <= 1.1x first step)", _spread([growth]), "<=",
                       1.1, "{:.2f}x", f"{mine['rss_mb'].min():.0f}-{mine['rss_mb'].max():.0f} "
                       "MB over every step"))  # fmt: skip
    path = out / ("labels.json" if stage == FINAL_STAGE else f"labels-{stage}.json")
    if path.is_file():
        lab = json.loads(path.read_text())
        ok = lab["mismatches"] == 0 and lab["max_score_diff"] <= SCORE_TOLERANCE
        res.append({"target": f"{stage}: same labels as sklearn, scores within 1e-9",
                    "value": lab["mismatches"], "min": NAN, "max": NAN, "rounds": 1,
                    "threshold": 0, "met": ok,
                    "measured": f"{lab['mismatches']} of {lab['texts']} differ; largest score "
                                f"difference {lab['max_score_diff']:.2g}",
                    "detail": f"scorer {lab.get('scorer')}"})  # fmt: skip
    return pd.DataFrame(res).assign(stage=stage)


def write(out: Path, rows: pd.DataFrame, stages: list[str]) -> str:
    """The summary, the targets of every stage from the final one on, and headline.md."""
    from loadtest.report import fmt_table

    summary = summarise(rows)
    summary.to_csv(out / "headline-summary.csv", index=False, float_format="%.5g")

    def layers_of(stage: str) -> pd.DataFrame | None:
        """``python -m loadtest.layers --stage STAGE --out OUT``'s rows (``layers-short.csv``:
        the final stage's, written without ``--stage``)."""
        path = out / f"layers-short-{stage}.csv"
        if not path.is_file() and stage == FINAL_STAGE:
            path = out / "layers-short.csv"
        if not path.is_file():
            return None
        layers = pd.read_csv(path, keep_default_na=False)
        for col in ("rps", "server_cpu_pct", "cpu_us", "round", "ok", "failed"):
            layers[col] = pd.to_numeric(layers[col])
        return layers

    order = list(SERVERS)
    firsts = [s for s in stages if s in order and order.index(s) >= order.index(FINAL_STAGE)]
    firsts = [s for s in firsts if s != BARE and not s.endswith("-sklearn")]
    table = pd.concat(
        [targets(rows, s, out, layers_of(s)) for s in firsts],
        ignore_index=True,
    )
    table.to_csv(out / "headline-targets.csv", index=False, float_format="%.5g")

    def rng(r, col, fmt):
        return f"{fmt.format(r[col])} ({fmt.format(r[col + '_min'])}-{fmt.format(r[col + '_max'])})"

    lines = ["| server | profile | connections | req/s | server CPU µs/request | one-core req/s "
             "| one-core vs naive | one-core vs bare | p50 (ms) | server % of its core "
             "| load (1 min) |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for _, r in summary.iterrows():
        lines.append(
            f"| {r['stage']} | {r['profile']} | {r['users']} | {rng(r, 'rps', '{:,.0f}')} "
            f"| {rng(r, 'cpu_us', '{:.0f}')} | {r['one_core_rps']:,.0f} "
            f"| {rng(r, 'vs_naive', '{:.2f}x')} | {rng(r, 'vs_bare', '{:.0%}')} "
            f"| {rng(r, 'p50_ms', '{:.2f}')} | {r['server_cpu_pct']:.0f} "
            f"| {r['host_load_1m']:.1f} |"
        )
    t = table.assign(met=table["met"].map({True: "yes", False: "**no**", None: "-"}))
    n = int(rows["round"].max())
    text = (f"# The headline over {n} interleaved rounds\n\nMedian (lowest-highest round); "
            "ratios round by round; one-core req/s = 1e6 / server CPU µs per request.\n\n"
            + "\n".join(lines) + "\n\n## Targets\n\n"
            + fmt_table(t[["stage", "target", "measured", "met", "detail"]]) + "\n")  # fmt: skip
    (out / "headline.md").write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", nargs="+", default=[BASELINE_STAGE, FINAL_STAGE, BARE],
                   choices=[s for s in SERVERS if s != "reference"])  # fmt: skip
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--labels", nargs="*", default=[], help="stages whose labels are checked")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--summarise", action="store_true", help="only redo the tables of --out")
    a = p.parse_args(argv)
    if a.summarise:
        rows = pd.read_csv(a.out / "headline-rounds.csv")
        print(write(a.out, rows, list(dict.fromkeys(rows["stage"]))))
        return
    if not 1 <= a.rounds <= 10 or not 0.5 <= a.seconds <= 10:
        p.error("keep it bounded: 1-10 rounds of 0.5-10 s")
    a.out.mkdir(parents=True, exist_ok=True)
    info = machine_info(BenchConfig(stages=a.stages, rounds=a.rounds, duration=a.seconds))
    info["tool"] = "python -m loadtest.headline " + " ".join(argv or [])
    (a.out / "machine.json").write_text(json.dumps(info, indent=2))
    rows = measure(a.stages, a.out, a.rounds, a.seconds, a.connections, labels=tuple(a.labels))
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    (a.out / "machine.json").write_text(json.dumps(info, indent=2))
    print(write(a.out, rows, a.stages))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

"""What each layer of the final stage costs per request: the same server with layers switched off.

    python -m loadtest.layers                       # short texts, 64 connections, 3 rounds
    python -m loadtest.layers --profile long --seconds 3 --rounds 5

Starts one final-stage server per configuration (``INFERENCE_BENCH_OFF``, read only by the
benchmark's own app ``loadtest/bench_app.py``: ``metrics``, ``access_log``, ``request_id``,
``batcher``), each a real uvicorn process on 127.0.0.1 pinned to CPU 0, all at once, and
drives them in turn with a small closed-loop HTTP/1.1 client
(:func:`loadtest.rawhttp.closed_loop`: keep-alive, ``--connections`` connections, ``POST
/predict``, real test-split texts) pinned to CPU 1. Rounds are interleaved (every
configuration once per round, in a rotating order), so a neighbour that takes the CPU for a
while disturbs every configuration alike; the table shows the median and the range over the
rounds. With the server on one core and saturated, ``1e6 / req_s`` is the server's CPU time per
request, so the difference between two rows is what the layers switched off between them cost,
in microseconds. Every server is stopped by its PID at the end; logs go to a temporary
directory, never to ``logs/``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from loadtest.launcher import BENCH_APP, CLIENT_CPU, StageServer
from loadtest.rawhttp import closed_loop, predict_body, request_bytes
from sentiment_model.throughput import pinned_to_cpu
from serving.stages import FINAL_STAGE

SATURATED_PCT = 80  # a step counts when both servers compared used >= 80 % of their core
# name -> INFERENCE_BENCH_OFF. The first row is the final stage as shipped.
CONFIGS: dict[str, str] = {
    "all on (as shipped)": "",
    "metrics off": "metrics",
    "access log off": "access_log",
    "request id off": "request_id",
    "metrics + log off": "metrics,access_log",
    "metrics + log + id off": "metrics,access_log,request_id",
    "all off, scored inline": "metrics,access_log,request_id,batcher",
}


def predict_requests(texts: list[str]) -> list[bytes]:
    """One complete HTTP/1.1 ``POST /predict`` request per text, keep-alive."""
    return [request_bytes("/predict", predict_body(text)) for text in texts]


async def _drive(port: int, requests: list[bytes], connections: int, seconds: float) -> dict:
    """Answered 200 (``ok``), anything else (``failed``), and the seconds from the first request
    to the last answer (requests in flight at the deadline are waited for and counted)."""
    started = time.perf_counter()
    ok, failed, _ = await closed_loop(port, requests, seconds, connections)
    return {"ok": ok, "failed": failed, "seconds": time.perf_counter() - started}


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) the process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def drive(
    port: int, texts: list[str], connections: int, seconds: float, warm_s: float, pid: int
) -> dict:
    """Closed loop: ``connections`` clients each send the next request when answered.

    Returns req/s (wall clock: moved by anything else running on the machine) and the server's
    CPU time per request (all its threads: barely moved by neighbours, the robust figure).
    """
    requests = predict_requests(texts)
    asyncio.run(_drive(port, requests, connections, warm_s))
    cpu_before = cpu_seconds(pid)
    result = asyncio.run(_drive(port, requests, connections, seconds))
    cpu = cpu_seconds(pid) - cpu_before
    result["rps"] = result["ok"] / result["seconds"]
    result["server_cpu_pct"] = 100 * cpu / result["seconds"]
    result["cpu_us"] = 1e6 * cpu / max(1, result["ok"] + result["failed"])
    return result


def measure_layers(
    profile: str = "short",
    configs: dict[str, str] | None = None,
    rounds: int = 3,
    seconds: float = 3.0,
    connections: int = 64,
    warm_s: float = 0.5,
    env: dict[str, str] | None = None,
    log=print,
) -> list[dict]:
    """One row per (configuration, round): req/s, failures."""
    from loadtest.payloads import profile_texts

    configs = dict(configs or CONFIGS)
    texts = profile_texts(profile)
    rows: list[dict] = []
    servers: dict[str, StageServer] = {}
    with tempfile.TemporaryDirectory(prefix="layers-") as tmp:
        try:
            for i, (name, off) in enumerate(configs.items()):
                server_env = {
                    "INFERENCE_BENCH_OFF": off,
                    "INFERENCE_LOG_PATH": str(Path(tmp) / f"requests-{i}.log"),
                } | dict(env or {})
                log(f"starting: {name} (INFERENCE_BENCH_OFF={off!r})")
                servers[name] = StageServer(
                    FINAL_STAGE,
                    env=server_env,
                    log_path=Path(tmp) / f"server-{i}.log",
                    app_dir=".",
                    app=BENCH_APP,
                ).start()
            names = list(configs)
            with pinned_to_cpu(CLIENT_CPU):
                for r in range(rounds):
                    order = names[r % len(names) :] + names[: r % len(names)]
                    for name in order:
                        server = servers[name]
                        result = drive(server.port, texts, connections, seconds, warm_s, server.pid)
                        rows.append({"config": name, "off": configs[name], "round": r} | result)
                        log(
                            f"round {r + 1}/{rounds}  {name:24s} {result['rps']:7.0f} req/s "
                            f"{result['cpu_us']:6.0f} µs CPU/request "
                            f"(server at {result['server_cpu_pct']:.0f} % of a core)"
                        )
        finally:
            for server in servers.values():
                server.stop()
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per configuration: req/s and server CPU µs per request (median and range over rounds),
    and what the layers it switches off cost the shipped stage.

    ``cost`` is ``1 - this row's CPU per request / the shipped stage's``: the share of this
    configuration's maximum throughput on one core (``1e6 / µs``) that the shipped stage loses
    to the layers switched off here (the definition of the 15 % target). It is taken round by
    round (rows measured seconds apart), then summarised, so slow drifts cancel out. Rounds in
    which either server was not kept busy (< ``SATURATED_PCT`` of its core) are left out when
    any round remains; the ``rounds`` column says how many were used.
    """
    names = list(dict.fromkeys(row["config"] for row in rows))
    base = names[0]
    by_round: dict[int, dict[str, dict]] = {}
    for row in rows:
        by_round.setdefault(row["round"], {})[row["config"]] = row
    out = []
    for name in names:
        # A server the client could not keep busy (a neighbour took the client's core) forms
        # smaller batches and costs more per request: such steps say nothing about the maximum.
        rounds = [
            r
            for r in by_round.values()
            if min(r[name]["server_cpu_pct"], r[base]["server_cpu_pct"]) >= SATURATED_PCT
        ] or list(by_round.values())
        rps = [r[name]["rps"] for r in rounds]
        cpu = [r[name]["cpu_us"] for r in rounds]
        costs = [1 - r[name]["cpu_us"] / r[base]["cpu_us"] for r in rounds]
        saved = [r[base]["cpu_us"] - r[name]["cpu_us"] for r in rounds]
        out.append(
            {
                "config": name,
                "off": next(row["off"] for row in rows if row["config"] == name),
                "rps_median": statistics.median(rps),
                "rps_min": min(rps),
                "rps_max": max(rps),
                "cpu_us": statistics.median(cpu),
                "cpu_us_min": min(cpu),
                "cpu_us_max": max(cpu),
                "one_core_rps": 1e6 / statistics.median(cpu),
                "layers_us": statistics.median(saved),
                "cost": statistics.median(costs),
                "cost_min": min(costs),
                "cost_max": max(costs),
                "rounds_used": len(rounds),
                "failed": sum(row["failed"] for row in rows if row["config"] == name),
            }
        )
    return out


def markdown_table(summary: list[dict]) -> str:
    """The summary as the lesson's table."""
    lines = [
        "| configuration: `INFERENCE_BENCH_OFF` | req/s measured, median (range) "
        "| server CPU µs / request, median (range) | = req/s on one full core "
        "| the switched-off layers cost, µs | ... share of max throughput, median (range) "
        "| rounds |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        off = f"`{s['off']}`" if isinstance(s["off"], str) and s["off"] else "(empty)"
        lines.append(
            f"| {s['config']}: {off} | {s['rps_median']:,.0f} ({s['rps_min']:,.0f}-"
            f"{s['rps_max']:,.0f}) | {s['cpu_us']:.0f} ({s['cpu_us_min']:.0f}-"
            f"{s['cpu_us_max']:.0f}) | {s['one_core_rps']:,.0f} | {s['layers_us']:.0f} "
            f"| {s['cost']:.0%} ({s['cost_min']:.0%} to {s['cost_max']:.0%}) "
            f"| {s['rounds_used']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m loadtest.layers``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=["short", "long"], default="short")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per step")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument(
        "--configs", nargs="+", choices=list(CONFIGS), help="subset of configurations (first: base)"
    )
    p.add_argument("--out", type=Path, help="also write the rows (CSV) and table (Markdown) here")
    p.add_argument(
        "--stage",
        help="the stage to serve (INFERENCE_BENCH_STAGE of loadtest/bench_app.py; default the "
        "final stage); its files are named layers-<profile>-<stage>.csv/.md",
    )
    p.add_argument(
        "--summarise", type=Path, help="only print the table of a rows CSV written before"
    )
    a = p.parse_args(argv)
    if a.summarise:
        import pandas as pd

        print(markdown_table(summarise(pd.read_csv(a.summarise).to_dict("records"))))
        return
    if not 1 <= a.rounds <= 20 or not 0.5 <= a.seconds <= 30:
        p.error("keep it bounded: 1-20 rounds of 0.5-30 s")
    configs = {name: CONFIGS[name] for name in a.configs} if a.configs else None
    env = {"INFERENCE_BENCH_STAGE": a.stage} if a.stage else None
    rows = measure_layers(a.profile, configs, a.rounds, a.seconds, a.connections, env=env)
    summary = summarise(rows)
    table = markdown_table(summary)
    print(f"\n{a.profile} texts, {a.connections} connections, {a.rounds} rounds x {a.seconds:g} s")
    print(table)
    if a.out:
        import pandas as pd

        a.out.mkdir(parents=True, exist_ok=True)
        name = f"layers-{a.profile}" + (f"-{a.stage}" if a.stage else "")
        pd.DataFrame(rows).to_csv(a.out / f"{name}.csv", index=False)
        (a.out / f"{name}.md").write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""The budget of a short request: where one core's CPU time goes, layer by layer, and whether
the parts add up to the measured total.

    python -m loadtest.budget                           # final stage, 5 rounds, short texts
    python -m loadtest.budget --stages fast lean --rounds 5 --out benchmarks/results/budget

Two measurements, in one run, on the same servers (each a real uvicorn process on 127.0.0.1
pinned to CPU 0, driven by :func:`loadtest.rawhttp.closed_loop` pinned to CPU 1, like
``loadtest/layers.py``):

1. **Switches, interleaved.** Per stage, the benchmark app (``loadtest/bench_app.py``) with
   ``INFERENCE_BENCH_OFF`` set per configuration; every round drives every server once, in a
   rotating order. Each step records the server's CPU time per answered request (psutil, all
   threads) and each thread's share of it (``/proc``, by the thread names py-spy reports). The
   tables give medians and ranges over the rounds.
2. **A whole-process sampling profiler.** After the rounds, ``py-spy record --threads
   --nonblocking`` samples every thread of the profiled servers while the same load runs. Every
   sample is put into one part of the request (HTTP protocol, protocol class, framework
   middleware, our middleware, routing, validation, dependencies, the route, the hand-off,
   scoring, response building, metrics, access log on the loop and in its writer thread,
   request id) by its innermost frame that belongs to a part (:func:`part_of`). A part's cost is
   its share of the samples times the CPU time per request measured while sampling. One more
   recording with ``--gil`` (only the thread holding the GIL is sampled) is written as a flame
   graph (SVG).

The budget adds up when the switched-off layers' savings (1) plus what the profiler finds in
the bare configuration (everything off, scored inline) sum to the measured total of the
configuration as shipped, within 10 %. py-spy needs ptrace rights on the server (root, or
``kernel.yama.ptrace_scope=0``); it is pinned in requirements.txt. Logs go to a temporary
directory, never to ``logs/``; every server is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from loadtest.launcher import BENCH_APP, CLIENT_CPU, StageServer
from loadtest.layers import _drive, cpu_seconds, predict_requests
from sentiment_model.throughput import pinned_to_cpu
from serving.stages import FINAL_STAGE, STAGES

# name -> INFERENCE_BENCH_OFF (loadtest/bench_app.py). The first is the stage as shipped.
CONFIGS: dict[str, str] = {
    "all on": "",
    "metrics off": "metrics",
    "access log off": "access_log",
    "request id off": "request_id",
    "observability off": "metrics,access_log,request_id",
    "bare: all off, inline": "metrics,access_log,request_id,batcher",
}
SWITCHED = {  # the part a configuration switches off (against "all on")
    "metrics off": "metrics",
    "access log off": "access log (loop + writer thread)",
    "request id off": "request id",
}
PROFILED = ("all on", "observability off", "bare: all off, inline")
SATURATED_PCT = 80  # as loadtest/layers.py: a step counts when the server kept its core busy

# The parts, in the order of a request's life. (file fragment, function fragment or "", part);
# the innermost frame that matches any rule decides; other frames (pydantic, json, stdlib) are
# transparent and count for the part that called them.
PARTS = (
    "HTTP protocol (uvicorn httptools, event loop, socket I/O)",
    "protocol class (serving/protocol.py)",
    "framework middleware (Starlette/FastAPI stack)",
    "our middleware (body limit, timeouts, observability shell)",
    "routing (Starlette/FastAPI)",
    "body + validation (JSON checks, pydantic request model)",
    "dependencies (FastAPI: State, Ready, RequestCtx)",
    "route function",
    "hand-off to the model thread and back",
    "scoring (cleaning + direct scorer)",
    "response building",
    "metrics",
    "access log (loop: record)",
    "access log (writer thread)",
    "request id",
    "other",
)
P = dict(enumerate(PARTS))
RULES: tuple[tuple[str, str, str], ...] = (
    ("uuid.py", "", "request id"),
    ("random.py", "", "request id"),
    ("serving/asgi.py", "request_id_from", "request id"),
    ("serving/asgi.py", "new_request_id", "request id"),
    ("prometheus_client/", "", "metrics"),
    ("serving/metrics.py", "", "metrics"),
    ("serving/multiprocess.py", "", "metrics"),
    ("logging/__init__.py", "", "access log (loop: record)"),
    ("serving/logs.py", "", "access log (loop: record)"),
    ("serving/asgi.py", "log_access", "access log (loop: record)"),
    ("serving/asgi.py", "log_request", "access log (loop: record)"),
    ("serving/limits.py", "log_access", "access log (loop: record)"),
    ("sentiment_model/", "", "scoring (cleaning + direct scorer)"),
    ("inference_server.py", "preprocess_and_predict", "scoring (cleaning + direct scorer)"),
    ("serving/batcher.py", "", "hand-off to the model thread and back"),
    ("bench_app.py", "submit", "hand-off to the model thread and back"),
    ("concurrent/futures/", "", "hand-off to the model thread and back"),
    ("asyncio/tasks.py", "wait", "hand-off to the model thread and back"),
    ("asyncio/queues.py", "", "hand-off to the model thread and back"),
    ("serving/schemas.py", "json_response", "response building"),
    ("starlette/responses.py", "", "response building"),
    ("fastapi/routing.py", "serialize_response", "response building"),
    ("serving/schemas.py", "", "body + validation (JSON checks, pydantic request model)"),
    ("serving/jsonbody.py", "", "body + validation (JSON checks, pydantic request model)"),
    ("starlette/requests.py", "", "body + validation (JSON checks, pydantic request model)"),
    ("fastapi/_compat", "", "body + validation (JSON checks, pydantic request model)"),
    ("fastapi/dependencies/utils.py", "request_body_to_args", P[5]),
    ("fastapi/dependencies/utils.py", "_validate_value_with_model_field", P[5]),
    ("fastapi/dependencies/utils.py", "_get_multidict_value", P[5]),
    ("fastapi/dependencies/utils.py", "", "dependencies (FastAPI: State, Ready, RequestCtx)"),
    ("serving/dependencies.py", "", "dependencies (FastAPI: State, Ready, RequestCtx)"),
    ("serving/context.py", "request_context", "dependencies (FastAPI: State, Ready, RequestCtx)"),
    ("serving/state.py", "", "dependencies (FastAPI: State, Ready, RequestCtx)"),
    ("inference_server.py", "predict", "route function"),
    ("fastapi/routing.py", "run_endpoint_function", "route function"),
    ("fastapi/routing.py", "", "routing (Starlette/FastAPI)"),
    ("starlette/routing.py", "", "routing (Starlette/FastAPI)"),
    ("serving/asgi.py", "", "our middleware (body limit, timeouts, observability shell)"),
    ("serving/limits.py", "", "our middleware (body limit, timeouts, observability shell)"),
    ("serving/context.py", "", "our middleware (body limit, timeouts, observability shell)"),
    ("bench_app.py", "", "our middleware (body limit, timeouts, observability shell)"),
    ("starlette/middleware/", "", "framework middleware (Starlette/FastAPI stack)"),
    ("starlette/_exception_handler", "", "framework middleware (Starlette/FastAPI stack)"),
    ("starlette/applications.py", "", "framework middleware (Starlette/FastAPI stack)"),
    ("fastapi/applications.py", "", "framework middleware (Starlette/FastAPI stack)"),
    ("fastapi/telemetry/", "", "framework middleware (Starlette/FastAPI stack)"),
    ("fastapi/middleware/", "", "framework middleware (Starlette/FastAPI stack)"),
    ("serving/protocol.py", "", "protocol class (serving/protocol.py)"),
    ("uvicorn/", "", "HTTP protocol (uvicorn httptools, event loop, socket I/O)"),
    ("asyncio/", "", "HTTP protocol (uvicorn httptools, event loop, socket I/O)"),
)
# Put in front of the server's sys.path (PYTHONPATH) as sitecustomize.py: counts and times the
# collector's runs per generation; SIGUSR1 writes the totals to $BUDGET_GC_FILE.
GC_PROBE = """
import gc, json, os, signal, time
_totals = {"collections": [0, 0, 0], "seconds": [0.0, 0.0, 0.0]}
_started = [0.0]
def _timed(phase, info):
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        g = info["generation"]
        _totals["collections"][g] += 1
        _totals["seconds"][g] += time.perf_counter() - _started[0]
gc.callbacks.append(_timed)
def _dump(signum, frame):
    with open(os.environ["BUDGET_GC_FILE"] + ".tmp", "w") as f:
        json.dump(_totals, f)
    os.replace(os.environ["BUDGET_GC_FILE"] + ".tmp", os.environ["BUDGET_GC_FILE"])
signal.signal(signal.SIGUSR1, _dump)
"""
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):\d+\)$")


def part_of(thread: str, frames: list[str]) -> str:
    """The part one sample belongs to: ``frames`` root first, as py-spy's raw format has them.

    The log writer's thread is all access log; the model thread is scoring, except where it
    only waits, wakes or takes the GIL back (the hand-off). On the event loop the innermost
    frame that matches a rule decides; a sample with no Python frame under the loop's ``run``
    is uvloop's C code (callbacks, socket reads and writes): the HTTP protocol's share.
    """
    if thread.startswith("log-writer"):
        return "access log (writer thread)"
    for frame in reversed(frames):
        m = FRAME.match(frame)
        if not m:
            continue
        file, func = m["file"], m["func"]
        for file_part, func_part, part in RULES:
            if file_part in file and func_part in func:
                if thread.startswith("batcher-model") and part != P[9]:
                    return P[8]  # the model thread outside the model: waking, the GIL
                return part
    if thread.startswith("batcher-model"):
        return P[8]
    if thread == "MainThread":
        return P[0]
    return "other"


def read_raw(path: Path) -> Counter:
    """py-spy's raw (collapsed) output as {(thread name, frames tuple): samples}."""
    counts: Counter = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        head, *frames = stack.split(";")
        # "thread (123): name" or "thread (0x7f...)"
        thread = head.split(": ", 1)[1] if ": " in head else head
        counts[(thread, tuple(frames))] += int(n)
    return counts


def parts_from_profile(counts: Counter) -> dict[str, Counter]:
    """{thread name: samples per part}."""
    out: dict[str, Counter] = {}
    for (thread, frames), n in counts.items():
        name = re.sub(r"_\d+$", "", thread)
        out.setdefault(name, Counter())[part_of(thread, list(frames))] += n
    return out


def parts_us(prof: dict) -> dict[str, float]:
    """µs per request of each part: each thread's measured CPU per request (``/proc``), split
    by the profiler's shares of that thread's samples.

    py-spy counts a thread as active when it is runnable, also while it waits for the core (on
    a busy machine, often); the thread's CPU time says how long it actually ran."""
    out: dict[str, float] = dict.fromkeys(PARTS, 0.0)
    for thread, us in prof["threads_us"].items():
        counts = prof["thread_parts"].get(thread) or {"other": 1}
        n = sum(counts.values())
        for part, k in counts.items():
            out[part] += us * k / n
    return out


def py_spy() -> str:
    """The py-spy binary (requirements.txt pins it), next to this Python or on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.is_file() else shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy not found: pip install -r requirements.txt (it is pinned there)")
    return found


def thread_names(pid: int) -> dict[int, str]:
    """{native thread id: Python thread name} of a running server, from ``py-spy dump``."""
    out = subprocess.run(
        [py_spy(), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=30
    ).stdout
    names = {}
    for m in re.finditer(r'^Thread (0x[0-9A-Fa-f]+|\d+) \(\w+\): "([^"]*)"', out, re.M):
        tid = int(m[1], 16) if m[1].startswith("0x") else int(m[1])
        names[tid] = re.sub(r"_\d+$", "", m[2])
    return names


def thread_cpu(pid: int, names: dict[int, str]) -> dict[str, float]:
    """CPU seconds so far per thread name (unnamed threads together as "other")."""
    out: dict[str, float] = {}
    for t in psutil.Process(pid).threads():
        name = names.get(t.id, "other")
        out[name] = out.get(name, 0.0) + t.user_time + t.system_time
    return out


def gc_totals(server: StageServer) -> dict | None:
    """The collector's totals so far in the server (None without the probe)."""
    path = Path(server.env.get("BUDGET_GC_FILE", ""))
    if not server.env.get("BUDGET_GC_FILE"):
        return None
    path.unlink(missing_ok=True)
    os.kill(server.pid, signal.SIGUSR1)
    for _ in range(100):
        if path.is_file():
            return json.loads(path.read_text())
        time.sleep(0.01)
    return None


def step(server: StageServer, requests: list[bytes], seconds: float, connections: int, names):
    """One measured closed-loop step (after a short warm-up): req/s, CPU µs per request, the
    share of a core each thread used."""
    asyncio.run(_drive(server.port, requests, connections, 0.5))
    gc0 = gc_totals(server)
    cpu0, threads0 = cpu_seconds(server.pid), thread_cpu(server.pid, names)
    result = asyncio.run(_drive(server.port, requests, connections, seconds))
    cpu, threads1 = cpu_seconds(server.pid) - cpu0, thread_cpu(server.pid, names)
    gc1 = gc_totals(server)
    answered = max(1, result["ok"] + result["failed"])
    if gc0 and gc1:
        for g in range(3):
            n = gc1["collections"][g] - gc0["collections"][g]
            result[f"gc{g}_per_1000_requests"] = 1000 * n / answered
            result[f"gc{g}_us"] = 1e6 * (gc1["seconds"][g] - gc0["seconds"][g]) / answered
    result["rps"] = result["ok"] / result["seconds"]
    result["server_cpu_pct"] = 100 * cpu / result["seconds"]
    result["cpu_us"] = 1e6 * cpu / answered
    for name, t in threads1.items():
        result[f"thread_us:{name}"] = 1e6 * (t - threads0.get(name, 0.0)) / answered
    return result


def record(server, requests, seconds, connections, out: Path, rate: int, extra: list[str], names):
    """py-spy samples the server while the load runs; returns the step's figures."""
    cmd = [py_spy(), "record", "--pid", str(server.pid), "--threads", "--nonblocking"]
    cmd += ["--rate", str(rate), "--duration", str(int(seconds) + 1), "-o", str(out), *extra]
    asyncio.run(_drive(server.port, requests, connections, 0.5))
    spy = subprocess.Popen(["taskset", "-c", str(CLIENT_CPU), *cmd], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)  # fmt: skip
    time.sleep(0.5)  # py-spy attaches
    cpu0, threads0 = cpu_seconds(server.pid), thread_cpu(server.pid, names)
    result = asyncio.run(_drive(server.port, requests, connections, seconds))
    cpu, threads1 = cpu_seconds(server.pid) - cpu0, thread_cpu(server.pid, names)
    answered = max(1, result["ok"] + result["failed"])
    result["threads_us"] = {
        name: 1e6 * (t - threads0.get(name, 0.0)) / answered for name, t in threads1.items()
    }
    said = spy.communicate(timeout=60)[0]
    m = re.search(r"Samples: (\d+) Errors: (\d+)", said)
    result["samples"], result["sample_errors"] = (int(m[1]), int(m[2])) if m else (0, 0)
    result["cpu_us"] = 1e6 * cpu / answered
    result["rps"] = result["ok"] / result["seconds"]
    return result


def run(
    stages: list[str],
    configs: dict[str, str],
    rounds: int,
    seconds: float,
    connections: int,
    profile_seconds: float,
    rate: int,
    out: Path,
    later_configs: list[str] | None = None,
    log=print,
) -> dict:
    """Every (stage, configuration) server, interleaved rounds, then the profiles. The stages
    after the first run ``later_configs`` only (default: all)."""
    later_configs = list(later_configs or configs)
    from loadtest.payloads import profile_texts

    requests = predict_requests(profile_texts("short"))
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    profiles: dict = {}
    servers: dict[tuple[str, str], StageServer] = {}
    names: dict[tuple[str, str], dict[int, str]] = {}
    load = {"before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="budget-") as tmp:
        (Path(tmp) / "probe").mkdir()
        (Path(tmp) / "probe" / "sitecustomize.py").write_text(GC_PROBE)
        try:
            for n, stage in enumerate(stages):
                mine = configs if n == 0 else {c: configs[c] for c in later_configs}
                for i, (config, off) in enumerate(mine.items()):
                    log(f"starting {stage}: {config} (INFERENCE_BENCH_OFF={off!r})")
                    env = {
                        "INFERENCE_BENCH_OFF": off,
                        "INFERENCE_LOG_PATH": str(Path(tmp) / f"{stage}-{i}.requests.log"),
                        "PYTHONPATH": str(Path(tmp) / "probe"),
                        "BUDGET_GC_FILE": str(Path(tmp) / f"{stage}-{i}.gc.json"),
                    }
                    server = StageServer(
                        stage,
                        env=env | {"INFERENCE_BENCH_STAGE": stage},
                        log_path=Path(tmp) / f"{stage}-{i}.log",
                        app_dir=".",
                        app=BENCH_APP,
                    ).start()
                    servers[(stage, config)] = server
                    names[(stage, config)] = thread_names(server.pid)
            keys = list(servers)
            with pinned_to_cpu(CLIENT_CPU):
                for r in range(rounds):
                    for stage, config in keys[r % len(keys) :] + keys[: r % len(keys)]:
                        key = (stage, config)
                        res = step(servers[key], requests, seconds, connections, names[key])
                        rows.append({"stage": stage, "config": config, "round": r} | res)
                        log(
                            f"round {r + 1}/{rounds} {stage:5s} {config:22s} {res['rps']:6.0f} "
                            f"req/s {res['cpu_us']:5.0f} µs CPU/request "
                            f"({res['server_cpu_pct']:.0f} % of a core)"
                        )
                load["after_rounds"] = os.getloadavg()
                for stage, config in keys:
                    if config not in PROFILED or profile_seconds <= 0:
                        continue
                    slug = f"{stage}-{re.sub(r'[^a-z]+', '-', config).strip('-')}"
                    raw = out / f"pyspy-{slug}.txt"
                    key = (stage, config)
                    res = record(servers[key], requests, profile_seconds, connections, raw,
                                 rate, ["--format", "raw"], names[key])  # fmt: skip
                    thread_parts = parts_from_profile(read_raw(raw))
                    profiles[f"{stage}/{config}"] = res | {
                        "thread_parts": {t: dict(c) for t, c in thread_parts.items()}
                    }
                    log(f"profiled {stage} {config}: {res['samples']} samples, "
                        f"{res['cpu_us']:.0f} µs CPU/request")  # fmt: skip
                    if config == "all on":
                        svg = out / f"flamegraph-{stage}-gil.svg"
                        record(servers[key], requests, profile_seconds, connections, svg,
                               rate, ["--gil"], names[key])  # fmt: skip
        finally:
            for server in servers.values():
                server.stop()
    load["after"] = os.getloadavg()
    return {
        "rows": rows,
        "profiles": profiles,
        "load_average": load,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "settings": {
            "stages": stages,
            "configs": configs,
            "rounds": rounds,
            "seconds": seconds,
            "connections": connections,
            "profile_seconds": profile_seconds,
            "rate": rate,
        },
    }


def _median_range(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(result: dict) -> dict:
    """Per stage: each configuration's CPU µs per request (median, range over the rounds), the
    switches' savings, the profiler's parts and the sum check."""
    rows = result["rows"]
    out: dict = {}
    for stage in result["settings"]["stages"]:
        mine = [r for r in rows if r["stage"] == stage]
        by_round: dict[int, dict[str, dict]] = {}
        for r in mine:
            by_round.setdefault(r["round"], {})[r["config"]] = r
        configs = list(dict.fromkeys(r["config"] for r in mine))
        base = configs[0]
        busy = [
            rr
            for rr in by_round.values()
            if all(rr[c]["server_cpu_pct"] >= SATURATED_PCT for c in configs if c in rr)
        ] or list(by_round.values())
        table = {}
        for c in configs:
            threads = sorted({k for rr in busy for k in rr[c] if k.startswith("thread_us:")})
            table[c] = {
                "rps": _median_range([rr[c]["rps"] for rr in busy]),
                "cpu_us": _median_range([rr[c]["cpu_us"] for rr in busy]),
                "saved_us": _median_range([rr[base]["cpu_us"] - rr[c]["cpu_us"] for rr in busy]),
                "threads_us": {
                    k.split(":", 1)[1]: statistics.median(rr[c].get(k, 0.0) for rr in busy)
                    for k in threads
                },
                "gc_us": {
                    f"gen{g}": statistics.median(rr[c].get(f"gc{g}_us", 0.0) for rr in busy)
                    for g in range(3)
                },
                "gc_per_1000_requests": {
                    f"gen{g}": statistics.median(
                        rr[c].get(f"gc{g}_per_1000_requests", 0.0) for rr in busy
                    )
                    for g in range(3)
                },
                "rounds_used": len(busy),
            }
        stage_out: dict = {"configs": table}
        base_profile = f"{stage}/observability off"
        needed = [*SWITCHED, "observability off"]
        if (
            base == "all on"
            and base_profile in result["profiles"]
            and all(c in table for c in needed)
        ):
            stage_out["budget"] = budget(table, result["profiles"], stage)
        out[stage] = stage_out
    return out


def budget(table: dict, profiles: dict, stage: str) -> dict:
    """The parts of the shipped configuration's CPU per request.

    Observability layers: what switching each off saves (interleaved medians of the rounds'
    differences). Everything else: the ``observability off`` configuration's median CPU per
    request (the same server, batcher on), split by the profiler (:func:`parts_us`, scaled to
    that median). Their sum against the shipped configuration's median: the check.
    """
    prof = profiles[f"{stage}/observability off"]
    base_us = table["observability off"]["cpu_us"]["median"]
    split = parts_us(prof)
    sampled = sum(split.values())
    parts = [
        {
            "part": part,
            "us": base_us * us / sampled,
            "how": f"observability off ({base_us:.0f} µs), profiler: {us / sampled:.1%}",
        }
        for part, us in split.items()
        if us > 0
    ]
    for config, part in SWITCHED.items():
        parts.append(
            {
                "part": part,
                "us": table[config]["saved_us"]["median"],
                "how": f"switch: all on minus {config} (median of the rounds' differences)",
            }
        )
    total = table["all on"]["cpu_us"]["median"]
    summed = sum(p["us"] for p in parts)
    return {"parts": parts, "sum_us": summed, "total_us": total, "gap": summed / total - 1}


def profile_table(profiles: dict) -> list[dict]:
    """Each profiled configuration's parts in µs per request (:func:`parts_us`)."""
    rows = []
    for key, prof in profiles.items():
        split = parts_us(prof)
        total = sum(split.values()) or 1.0
        for part in PARTS:
            rows.append(
                {"profiled": key, "part": part, "us": split[part], "share": split[part] / total}
            )
    return rows


def markdown(summary: dict, result: dict) -> str:
    """The tables of the README."""
    lines = []
    for stage, s in summary.items():
        lines += [f"### Stage `{stage}`: configurations (medians, ranges over the rounds)", ""]
        lines += [
            "| configuration | req/s | server CPU µs / request | saved vs all on, µs "
            "| main thread µs | model thread µs | log writer µs "
            "| collector µs (gen 0/1/2) | collections per 1,000 requests (gen 0/1/2) | rounds |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c, t in s["configs"].items():
            th = t["threads_us"]

            def mr(d, fmt="{:,.0f}"):
                return f"{fmt.format(d['median'])} ({fmt.format(d['min'])}-{fmt.format(d['max'])})"

            lines.append(
                f"| {c} | {mr(t['rps'])} | {mr(t['cpu_us'])} | {t['saved_us']['median']:.0f} "
                f"({t['saved_us']['min']:.0f} to {t['saved_us']['max']:.0f}) "
                f"| {th.get('MainThread', 0):.0f} | {th.get('batcher-model', 0):.0f} "
                f"| {th.get('log-writer', 0):.0f} "
                f"| {'/'.join(f'{v:.1f}' for v in t['gc_us'].values())} "
                f"| {'/'.join(f'{v:.1f}' for v in t['gc_per_1000_requests'].values())} "
                f"| {t['rounds_used']} |"
            )
        if "budget" in s:
            b = s["budget"]
            lines += ["", f"### Stage `{stage}`: the budget of a short request", ""]
            lines += ["| part | µs / request | how it was measured |", "|---|---:|---|"]
            for p in b["parts"]:
                lines.append(f"| {p['part']} | {p['us']:.1f} | {p['how']} |")
            lines.append(f"| **sum of the parts** | **{b['sum_us']:.0f}** | |")
            lines.append(f"| **measured total, all on** | **{b['total_us']:.0f}** | median |")
            lines.append(f"| gap | {b['gap']:+.1%} | sum / total - 1 |")
        lines.append("")
    lines += ["### The profiler's view (py-spy, every thread, µs = share x CPU/request)", ""]
    keys = list(result["profiles"])
    lines.append("| part | " + " | ".join(keys) + " |")
    lines.append("|---|" + "---:|" * len(keys))
    rows = profile_table(result["profiles"])
    for part in PARTS:
        cells = []
        for k in keys:
            r = next(x for x in rows if x["profiled"] == k and x["part"] == part)
            cells.append(f"{r['us']:.1f} ({r['share']:.0%})" if r["us"] else "-")
        if any(c != "-" for c in cells):
            lines.append(f"| {part} | " + " | ".join(cells) + " |")
    cells = [f"{result['profiles'][k]['cpu_us']:.0f}" for k in keys]
    lines.append("| **CPU µs / request while sampled** | " + " | ".join(cells) + " |")
    la = result["load_average"]
    lines += ["", f"Load average (1, 5, 15 min): before {la['before']}, after {la['after']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m loadtest.budget``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", nargs="+", choices=list(STAGES), default=[FINAL_STAGE])
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), help="default: all")
    p.add_argument(
        "--later-configs",
        nargs="+",
        choices=list(CONFIGS),
        help="configurations of the stages after the first (default: --configs)",
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per step")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--profile-seconds", type=float, default=6.0, help="0: no profiles")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/budget"))
    p.add_argument("--summarise", action="store_true", help="only re-read OUT/budget.json")
    a = p.parse_args(argv)
    if a.summarise:
        result = json.loads((a.out / "budget.json").read_text())
    else:
        if not 1 <= a.rounds <= 20 or not 0.5 <= a.seconds <= 30:
            p.error("keep it bounded: 1-20 rounds of 0.5-30 s")
        configs = {c: CONFIGS[c] for c in a.configs} if a.configs else dict(CONFIGS)
        result = run(
            a.stages, configs, a.rounds, a.seconds, a.connections,
            a.profile_seconds, a.rate, a.out, a.later_configs,
        )  # fmt: skip
        (a.out / "budget.json").write_text(json.dumps(result, indent=1) + "\n")
    summary = summarise(result)
    result["summary"] = summary
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    import pandas as pd

    pd.DataFrame(result["rows"]).to_csv(a.out / "rounds.csv", index=False)
    pd.DataFrame(profile_table(result["profiles"])).to_csv(a.out / "profile_parts.csv", index=False)
    text = markdown(summary, result)
    (a.out / "budget.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

"""Soak: normal traffic with hostile clients mixed in, for a bounded time.

Normal traffic is open-loop (``--rate`` requests per second, latency counted from the moment
each request was due, so a stalled server cannot hide its queue), mostly ``/predict`` with
one ``/predict/batch`` of 8 in ten. Mixed in, all the time:

* slow clients: ``--slow`` connections that send half a request head and then one byte every
  10 s (the header timeout closes them; they reconnect);
* stalled uploads: ``--stalled`` connections that send 10 bytes of a 1,000-byte body and stop;
* oversized heads: a complete 64 KB head every 2 s, a 2 MB head that never ends every 10 s;
* hostile bodies, two a second: NaN / Infinity / 1e999, lone surrogates, a 1 MB flood of
  90,000 unknown keys, 100,000-deep nesting, a 2 MB body;
* costly bodies, each sender sending its next as soon as the last is answered: ``--expanding``
  senders of batches of 64 texts of 5,000 U+FDFA (within the character limit, 90,000
  characters each once the vectorizer's NFKD has expanded them), and ``--nested`` senders of
  1 MB bodies of 580 arrays nested 900 deep.

``--only expanding`` (or ``nested``, or a wire attacker below; repeatable) runs the normal
traffic with that attacker alone, to measure what each costs the normal requests.

Wire attackers (``--wire``, all on by default; ``--wire none`` for the older soak):

* trailer flood: one connection at a time sends a chunked body followed by a trailer field that
  never ends, 64 KB a write, up to ``--trailer-mb`` in all (the server should cut each at 431);
* stuck upgrade: every 2 s a WebSocket upgrade whose head has a 9 KB line; the time until the
  server has answered and closed it is recorded;
* slow reader: a connection that pipelines ``GET /metrics`` and never reads the answers (the
  server's writes back up); at the end, with one still open, the time SIGTERM takes is measured;
* slowloris: ``--slowloris`` sockets (default twice the connection cap) that send one byte and
  reconnect ``--slowloris-wait`` s after the server closes them, with newcomers (a new connection
  for each request, 5 a second) measured apart from the normal pool, which connected first.

Reports the normal requests' p50 / p99 / max, the server's RSS every 5 s, every status seen,
and the 500s (seen by the clients and counted by the server). 127.0.0.1 only; the server is
started and stopped by PID, on CPU 0, and the clients run on CPU 1 when there are two.

    python -m loadtest.soak --seconds 180 --out benchmarks/results/soak
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from loadtest.launcher import CLIENT_CPU, COURSE_LAUNCHER, StageServer
from loadtest.rawhttp import Connection, predict_body, request_bytes
from sentiment_model.throughput import pinned_to_cpu
from serving.settings import Settings
from serving.stages import FINAL_STAGE

TEXTS = [
    "A warm, funny film with a clever script and two lovely performances.",
    "Dull, overlong and badly acted; I nearly walked out halfway through.",
    "The plot is thin but the photography is stunning and the music soars.",
    "Not the worst thing I have seen this year, but close to it.",
]


WIRE_ATTACKERS = ("trailer", "upgrade", "slow-reader", "slowloris")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hostile_bodies() -> list[tuple[str, bytes, bytes]]:
    """(name, path, raw request) for each hostile body."""
    flood = json.dumps({f"k{i:05d}": 1 for i in range(90_000)}, separators=(",", ":")).encode()
    deep = b"[" * 100_000 + b"]" * 100_000
    return [
        ("nan", b"", request_bytes("/predict", b'{"text": NaN}')),
        ("infinity", b"", request_bytes("/predict/batch", b'{"texts": ["a", -Infinity]}')),
        ("1e999", b"", request_bytes("/predict", b'{"text": "x", "n": 1e999}')),
        ("surrogate", b"", request_bytes("/predict", b'{"\\ud800": "\\udfff"}')),
        ("key flood", b"", request_bytes("/predict", flood)),
        ("deep nesting", b"", request_bytes("/predict", deep)),
        ("2 MB body", b"", request_bytes("/predict", b'{"text": "' + b"x" * 2_000_000 + b'"}')),
    ]


def expanding_batch() -> bytes:
    """A /predict/batch of 64 texts of 5,000 U+FDFA: 960 KB as UTF-8, within every raw limit,
    and 18 times longer (90,000 characters a text) as the model reads it."""
    body = json.dumps({"texts": ["\ufdfa" * 5_000] * 64}, ensure_ascii=False).encode()
    return request_bytes("/predict/batch", body)


def nested_flood() -> bytes:
    """A 1 MB /predict/batch body of 580 arrays nested 900 deep (each within json's recursion
    limit, so it is parsed: half a million lists)."""
    unit = b"[" * 900 + b"]" * 900
    return request_bytes("/predict/batch", b"[" + b",".join([unit] * 580) + b"]")


COSTLY_BODIES = {
    "expanding": ("expanding batch", expanding_batch),
    "nested": ("nested", nested_flood),
}


class Soak:
    def __init__(self, server: StageServer, args: argparse.Namespace) -> None:
        self.server = server
        self.port = server.port
        self.args = args
        self.deadline = time.monotonic() + args.seconds
        self.latencies: list[float] = []
        self.normal_status: Counter[int] = Counter()
        self.hostile_status: Counter[str] = Counter()
        self.rss: list[tuple[float, float]] = []
        self.started = time.monotonic()
        self.upgrade_close_s: list[float] = []  # stuck upgrades: time until closed
        self.newcomer_latencies: list[float] = []
        self.newcomer_status: Counter[int] = Counter()
        self.trailer_sent = 0  # bytes of trailer flood sent

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    async def normal(self) -> None:
        pool: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(32):
            pool.put_nowait(Connection(self.port))
        interval = 1 / self.args.rate
        due = time.perf_counter()
        tasks = set()
        rng = random.Random(0)

        async def one(due: float, raw: bytes) -> None:
            conn = await pool.get()
            try:
                status, _ = await conn.send(raw, timeout=30)
            finally:
                pool.put_nowait(conn)
            self.normal_status[status] += 1
            if status == 200:
                self.latencies.append((time.perf_counter() - due) * 1000)

        while self.running():
            if rng.random() < 0.1:
                body = json.dumps({"texts": rng.choices(TEXTS, k=8)}).encode()
                raw = request_bytes("/predict/batch", body)
            else:
                raw = request_bytes("/predict", predict_body(rng.choice(TEXTS)))
            task = asyncio.create_task(one(due, raw))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += interval
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await asyncio.gather(*tasks)
        while not pool.empty():
            await pool.get_nowait().close()

    async def slow_client(self) -> None:
        while self.running():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                while self.running() and not reader.at_eof():
                    writer.write(b"a")
                    await writer.drain()
                    with contextlib.suppress(asyncio.TimeoutError):
                        data = await asyncio.wait_for(reader.read(1024), 10)
                        if data:
                            self.hostile_status[f"slow head -> {data[9:12].decode()}"] += 1
                            break
                        break
                writer.close()
            except OSError:
                self.hostile_status["slow head -> connection error"] += 1
                await asyncio.sleep(1)

    async def stalled_upload(self) -> None:
        while self.running():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
                writer.write(b'{"text": "')
                remaining = self.deadline - time.monotonic()
                data = await asyncio.wait_for(reader.read(1024), max(0.1, remaining))
                label = data[9:12].decode() if data else "closed"
                self.hostile_status[f"stalled body -> {label}"] += 1
                writer.close()
            except asyncio.TimeoutError:
                writer.close()
            except OSError:
                self.hostile_status["stalled body -> connection error"] += 1
                await asyncio.sleep(1)

    async def big_heads(self) -> None:
        tick = 0
        while self.running():
            tick += 1
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                if tick % 5:
                    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
                    writer.write(b"a" * 65536 + b"\r\n\r\n")
                    name = "64 KB head"
                else:
                    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
                    name = "endless head"
                    for _ in range(32):  # up to 2 MB
                        writer.write(b"a" * 65536)
                        await writer.drain()
                data = await asyncio.wait_for(reader.read(1024), 10)
                self.hostile_status[f"{name} -> {data[9:12].decode() or 'closed'}"] += 1
                writer.close()
            await asyncio.sleep(2)

    async def bad_bodies(self) -> None:
        bodies = hostile_bodies()
        conn = Connection(self.port)
        index = 0
        while self.running():
            name, _, raw = bodies[index % len(bodies)]
            index += 1
            status, body = await conn.send(raw, timeout=30)
            self.hostile_status[f"{name} -> {status}"] += 1
            if len(body) > 4000:
                self.hostile_status[f"{name} -> answer over 4 KB"] += 1
            await asyncio.sleep(0.5)
        await conn.close()

    async def trailer_flood(self) -> None:
        """Chunked bodies each followed by a trailer field that never ends."""
        head = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n17\r\n" + b'{"text": "a fine film"}'
        )
        budget = self.args.trailer_mb * 1_000_000
        piece = b"a" * 65536
        while self.running() and self.trailer_sent < budget:
            label = "closed"
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(head + b"\r\n0\r\nX-Flood: ")
                while self.running() and self.trailer_sent < budget and not reader.at_eof():
                    writer.write(piece)
                    self.trailer_sent += len(piece)
                    await writer.drain()
                    with contextlib.suppress(asyncio.TimeoutError):
                        data = await asyncio.wait_for(reader.read(1024), 0.001)
                        label = data[9:12].decode() or "closed"
                        break
                writer.close()
            except OSError:
                label = "connection error"
            self.hostile_status[f"trailer flood -> {label}"] += 1

    async def stuck_upgrade(self) -> None:
        """WebSocket upgrades with a 9 KB header line (uvicorn's WebSocket path never answered
        them); records how long the server takes to answer and close each."""
        raw = (
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"X-Long: " + b"l" * 9000 + b"\r\n\r\n"
        )
        while self.running():
            label = "closed"
            try:
                started = time.perf_counter()
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(raw)
                data = await asyncio.wait_for(reader.read(), 30)  # until the server closes
                self.upgrade_close_s.append(time.perf_counter() - started)
                label = data[9:12].decode() or "closed"
                writer.close()
            except asyncio.TimeoutError:
                label = "still open after 30 s"
                writer.close()
            except OSError:
                label = "connection error"
            self.hostile_status[f"stuck upgrade -> {label}"] += 1
            await asyncio.sleep(2)

    async def slow_reader(self) -> None:
        """Pipelines requests and never reads; reconnects when the server gives up on it."""
        while self.running():
            try:
                _, writer = await slow_reader_connection(self.port)
                while self.running() and not writer.is_closing():
                    await asyncio.sleep(0.5)
                if writer.is_closing():
                    self.hostile_status["slow reader -> closed by server"] += 1
                writer.close()
            except OSError:
                self.hostile_status["slow reader -> connection error"] += 1
                await asyncio.sleep(1)

    async def slowloris(self) -> None:
        """One socket: connect, send one byte, wait for the server to close it, wait, again."""
        while self.running():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"G")
                while self.running():
                    with contextlib.suppress(asyncio.TimeoutError):
                        data = await asyncio.wait_for(reader.read(1024), 1)
                        label = data[9:12].decode() if data else "closed"
                        self.hostile_status[f"slowloris -> {label}"] += 1
                        break
                writer.close()
            except OSError:
                self.hostile_status["slowloris -> connection error"] += 1
            await asyncio.sleep(min(self.args.slowloris_wait, self.deadline - time.monotonic()))

    async def newcomers(self) -> None:
        """Working clients that open a new connection for each request (5 a second)."""
        raw = request_bytes("/predict", predict_body(TEXTS[0]))
        tasks = set()

        async def one() -> None:
            started = time.perf_counter()
            conn = Connection(self.port)
            status, _ = await conn.send(raw, timeout=30)
            await conn.close()
            self.newcomer_status[status] += 1
            if status == 200:
                self.newcomer_latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.sleep(2)  # the slowloris sockets first
        while self.running():
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(0.2)
        await asyncio.gather(*tasks)

    def wire_attackers(self) -> list:
        """The coroutines of the wire attackers chosen with ``--wire``."""
        chosen = self.args.wire
        tasks = []
        if "trailer" in chosen:
            tasks.append(self.trailer_flood())
        if "upgrade" in chosen:
            tasks.append(self.stuck_upgrade())
        if "slow-reader" in chosen:
            tasks.append(self.slow_reader())
        if "slowloris" in chosen:
            tasks += [self.slowloris() for _ in range(self.args.slowloris)]
            tasks.append(self.newcomers())
        return tasks

    async def costly_sender(self, kind: str) -> None:
        """One client sending ``COSTLY_BODIES[kind]`` back to back, each once the last is
        answered (a closed loop: the attacker's rate is whatever the server allows)."""
        name, build = COSTLY_BODIES[kind]
        raw = build()
        conn = Connection(self.port)
        while self.running():
            status, _ = await conn.send(raw, timeout=30)
            self.hostile_status[f"{name} -> {status}"] += 1
            if status == 0:
                await asyncio.sleep(0.1)  # connection refused or reset: do not spin
        await conn.close()

    def costly_senders(self) -> list:
        """The ``--expanding`` and ``--nested`` senders (only those named by ``--only``)."""
        counts = {"expanding": self.args.expanding, "nested": self.args.nested}
        chosen = [k for k in self.args.only if k in counts] if self.args.only else list(counts)
        return [self.costly_sender(kind) for kind in chosen for _ in range(counts[kind])]

    async def sampler(self) -> None:
        while self.running():
            elapsed = time.monotonic() - self.started
            self.rss.append((round(elapsed, 1), round(rss_mb(self.server.pid), 1)))
            await asyncio.sleep(5)

    async def run(self) -> None:
        if self.args.control:  # normal traffic alone: what the machine gives without attackers
            await asyncio.gather(self.normal(), self.sampler())
            return
        if self.args.only:  # one kind of attacker alone: what it costs the normal requests
            await asyncio.gather(
                self.normal(), self.sampler(), *self.costly_senders(), *self.wire_attackers()
            )
            return
        await asyncio.gather(
            self.normal(),
            self.sampler(),
            self.big_heads(),
            self.bad_bodies(),
            *(self.slow_client() for _ in range(self.args.slow)),
            *(self.stalled_upload() for _ in range(self.args.stalled)),
            *self.wire_attackers(),
            *self.costly_senders(),
        )


async def slow_reader_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection with a small receive buffer that pipelines 20,000 ``GET /metrics`` (several
    KB of answer each) and reads none of the answers."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 20_000)
    return reader, writer


def shutdown_with_slow_reader(server: StageServer) -> dict:
    """SIGTERM with a slow reader's connection open: seconds until the process has exited."""

    async def measure() -> float:
        _, writer = await slow_reader_connection(server.port)
        await asyncio.sleep(3)  # its answers back up
        started = time.perf_counter()
        server.proc.send_signal(signal.SIGTERM)
        while server.proc.poll() is None and time.perf_counter() - started < 120:
            await asyncio.sleep(0.05)
        writer.close()
        return time.perf_counter() - started

    seconds = asyncio.run(measure())
    return {"seconds": round(seconds, 2), "exit_code": server.proc.poll()}


def server_500s(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("http_requests_total{") and 'status="500"' in line
    )


def server_side_latency(log_path: Path) -> dict[str, dict[str, float]]:
    """Median and max server-side latency per (status, error) from the server's JSON log: which
    answers cost the event loop its time."""
    groups: dict[str, list[float]] = {}
    for path in sorted(log_path.parent.glob(log_path.name + "*")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("event") == "request":
                key = f"{row.get('status')} {row.get('error', '')[:40]}".strip()
                groups.setdefault(key, []).append(row["latency_ms"])
    return {
        key: {"n": len(v), "median": round(statistics.median(v), 2), "max": round(max(v), 2)}
        for key, v in sorted(groups.items(), key=lambda kv: -len(kv[1]))
    }


def wire_summary(soak: Soak, args: argparse.Namespace, shutdown: dict | None) -> dict:
    """The wire attackers' figures: what each one cost the server, or the normal clients."""
    if not args.wire or args.control:
        return {}
    out: dict = {"attackers": sorted(args.wire)}
    if "trailer" in args.wire:
        out["trailer_flood_mb_sent"] = round(soak.trailer_sent / 1e6, 1)
    if soak.upgrade_close_s:
        closes = sorted(soak.upgrade_close_s)
        out["stuck_upgrade_close_s"] = {
            "n": len(closes),
            "median": round(statistics.median(closes), 3),
            "max": round(closes[-1], 3),
        }
    if shutdown is not None:
        out["shutdown_with_slow_reader"] = shutdown
    if "slowloris" in args.wire:
        total = sum(soak.newcomer_status.values())
        lat = sorted(soak.newcomer_latencies)
        out["slowloris"] = {
            "sockets": args.slowloris,
            "reconnect_wait_s": args.slowloris_wait,
            "newcomers": total,
            "newcomers_served_pct": round(100 * len(lat) / total, 1) if total else None,
            "newcomer_status": dict(soak.newcomer_status),
            "newcomer_p99_ms": round(lat[int(len(lat) * 0.99) - 1], 2) if lat else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Soak the final stage with hostile clients.")
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--rate", type=float, default=200, help="normal requests per second")
    parser.add_argument("--slow", type=int, default=60, help="slow-header connections")
    parser.add_argument("--stalled", type=int, default=20, help="stalled-upload connections")
    parser.add_argument(
        "--wire",
        type=lambda v: set() if v == "none" else set(v.split(",")),
        default=set(WIRE_ATTACKERS),
        help=f"wire attackers, comma-separated, or none (default: {','.join(WIRE_ATTACKERS)})",
    )
    parser.add_argument("--trailer-mb", type=float, default=100, help="trailer flood budget")
    parser.add_argument(
        "--slowloris", type=int, default=None, help="slowloris sockets (default: twice the cap)"
    )
    parser.add_argument(
        "--slowloris-wait", type=float, default=1.0, help="s before a closed one reconnects"
    )
    parser.add_argument(
        "--expanding", type=int, default=1, help="senders of batches of expanding text"
    )
    parser.add_argument("--nested", type=int, default=1, help="senders of 1 MB nested bodies")
    parser.add_argument(
        "--only",
        action="append",
        choices=[*sorted(COSTLY_BODIES), *WIRE_ATTACKERS],
        help="normal traffic and only this attacker (repeatable)",
    )
    parser.add_argument("--plain", action="store_true", help="plain uvicorn, no protocol class")
    parser.add_argument("--control", action="store_true", help="normal traffic only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    unknown = args.wire - set(WIRE_ATTACKERS)
    if unknown:
        parser.error(f"unknown --wire attacker(s): {', '.join(sorted(unknown))}")
    if args.only:  # --only names the wire attackers too; no other one runs
        args.wire = {name for name in args.only if name in WIRE_ATTACKERS}
    if args.slowloris is None:
        args.slowloris = 2 * Settings().max_connections
    # What `tasks.py serve` runs (the launcher: the protocol class, WebSockets off), or plain
    # uvicorn for the comparison column of the lesson's attack table.
    launcher = ("-m", "uvicorn") if args.plain else COURSE_LAUNCHER
    log_dir = tempfile.mkdtemp(prefix="soak-")  # the server's JSON log: not the student's logs/
    env = {"INFERENCE_LOG_PATH": str(Path(log_dir) / "requests.log")}
    server = StageServer(FINAL_STAGE, env=env, launcher=launcher)
    load_before = os.getloadavg()
    try:
        server.start()  # pinned to CPU 0 (taskset), from this process's full CPU set
        with pinned_to_cpu(CLIENT_CPU):  # then only the load generation goes to CPU 1
            soak = Soak(server, args)
            asyncio.run(soak.run())
        count_500 = server_500s(server.url)
        limits = [
            line
            for line in httpx.get(server.url + "/metrics", timeout=10).text.splitlines()
            if line.startswith(("inference_limit_events_total{", "inference_dropped_texts"))
        ]
        rss_end = round(rss_mb(server.pid), 1)
        shutdown = shutdown_with_slow_reader(server) if "slow-reader" in args.wire else None
    finally:
        server.stop()
    by_error = server_side_latency(Path(log_dir) / "requests.log")
    shutil.rmtree(log_dir, ignore_errors=True)
    lat = sorted(soak.latencies)
    rss = [mb for _, mb in soak.rss]
    summary = {
        "command": "uvicorn inference_server:app" if args.plain else "python -m serving.serve",
        "seconds": args.seconds,
        "hostile_clients": not args.control,
        "normal_rate_per_s": args.rate,
        "normal_requests": sum(soak.normal_status.values()),
        "normal_status": dict(soak.normal_status),
        "normal_success_rate": round(
            soak.normal_status.get(200, 0) / max(1, sum(soak.normal_status.values())), 4
        ),
        "attackers": soak.args.only or "all",
        "normal_latency_ms": {
            "p50": round(statistics.median(lat), 2),
            "p99": round(lat[int(len(lat) * 0.99) - 1], 2),
            "max": round(lat[-1], 2),
        },
        "rss_mb": {"first": rss[0], "last": rss[-1], "max": max(rss), "timeline": soak.rss},
        "rss_mb_at_end": rss_end,
        "wire": wire_summary(soak, args, shutdown),
        "server_500s": count_500,
        "client_500s": soak.normal_status.get(500, 0)
        + sum(n for k, n in soak.hostile_status.items() if k.endswith("-> 500")),
        "hostile": dict(sorted(soak.hostile_status.items())),
        "server_limit_metrics": limits,
        "server_latency_ms_by_answer": by_error,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        name = "control" if args.control else "-".join(["soak", *(args.only or [])])
        (args.out / f"{name}-{stamp}.json").write_text(text + "\n")


if __name__ == "__main__":
    main()

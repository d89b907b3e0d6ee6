"""What the protocol class costs: the final stage with uvicorn's httptools protocol and with
``serving.protocol:LimitedHttpToolsProtocol``, under the same short closed-loop load.

Both servers run at once (started first, each pinned to CPU 0; then this client pins only its
load to CPU 1, when there are two); the load alternates between them in short rounds, so
machine noise lands on both alike. Bounded: about ``2 * rounds * seconds`` seconds; 127.0.0.1
only; the servers are stopped by PID.

    python -m loadtest.protocol_overhead --rounds 6 --seconds 5 --connections 32
    python -m loadtest.protocol_overhead --micro   # the HTTP layer alone, in-process

``--micro`` feeds the same request to both protocol classes in one process, with a no-op ASGI
app and a fake transport, and reports microseconds per request: the protocol's own cost,
without the network, the model or the machine's other load in between.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from loadtest.launcher import CLIENT_CPU, StageServer
from loadtest.rawhttp import closed_loop, predict_body, request_bytes
from sentiment_model.throughput import pinned_to_cpu
from serving.serve import PROTOCOL
from serving.stages import FINAL_STAGE

TEXT = "A warm, funny film with a clever script and two lovely performances."


REQUEST = (
    b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: bench\r\nAccept: */*\r\n"
    b"Content-Type: application/json\r\nContent-Length: 80\r\n\r\n"
    + b'{"text": "'
    + b"a" * 68
    + b'"}'
)


class _Transport:
    """Enough of an asyncio transport for a protocol to talk to."""

    def __init__(self) -> None:
        self.closing = False

    def write(self, data: bytes) -> None:
        pass

    def get_extra_info(self, name: str, default=None):
        return {"sockname": ("127.0.0.1", 1), "peername": ("127.0.0.1", 2)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _noop_app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


async def _per_request_us(protocol_class, requests: int) -> float:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    config = Config(app=_noop_app, lifespan="off", log_config=None, access_log=False)
    config.load()
    state = ServerState()
    protocol = protocol_class(config, state, {}, _loop=asyncio.get_running_loop())
    protocol.connection_made(_Transport())
    started = time.perf_counter()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        while state.tasks:
            await asyncio.sleep(0)
    return (time.perf_counter() - started) / requests * 1e6


def micro(rounds: int = 12, requests: int = 5000) -> dict:
    """Microseconds per request of each protocol class, alternating rounds (median)."""
    import uvloop
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from serving.protocol import LimitedHttpToolsProtocol

    classes = {"httptools": HttpToolsProtocol, "protocol class": LimitedHttpToolsProtocol}
    times: dict[str, list[float]] = {name: [] for name in classes}

    async def run() -> None:
        for _ in range(rounds):
            for name, cls in classes.items():
                times[name].append(await _per_request_us(cls, requests))

    uvloop.run(run())
    result = {name: round(statistics.median(t), 2) for name, t in times.items()}
    result["extra_us_per_request"] = round(result["protocol class"] - result["httptools"], 2)
    return {"micro_us_per_request": result, "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--micro", action="store_true", help="the HTTP layer alone, in-process")
    args = parser.parse_args()
    if args.micro:
        print(json.dumps(micro(), indent=2))
        return
    raw = request_bytes("/predict", predict_body(TEXT))
    variants = {
        "httptools": ("-m", "uvicorn", "--http", "httptools"),
        "protocol class": ("-m", "uvicorn", "--http", PROTOCOL),
    }
    log_dir = Path(tempfile.mkdtemp(prefix="overhead-"))  # not the student's logs/
    servers = {
        name: StageServer(
            FINAL_STAGE, env={"INFERENCE_LOG_PATH": str(log_dir / f"{i}.log")}, launcher=launcher
        )
        for i, (name, launcher) in enumerate(variants.items())
    }
    rates: dict[str, list[float]] = {name: [] for name in servers}
    p99s: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for server in servers.values():  # pinned to CPU 0 (taskset), from our full CPU set
            server.start()
        with pinned_to_cpu(CLIENT_CPU):  # then only the load generation goes to CPU 1
            for server in servers.values():  # warm-up
                asyncio.run(closed_loop(server.port, raw, 1.0, args.connections))
            for _ in range(args.rounds):
                for name, server in servers.items():
                    ok, other, latencies = asyncio.run(
                        closed_loop(server.port, raw, args.seconds, args.connections)
                    )
                    rates[name].append(ok / args.seconds)
                    p99s[name].append(statistics.quantiles(latencies, n=100)[98])
                    assert other == 0, f"{name}: {other} requests not answered 200"
    finally:
        for server in servers.values():
            server.stop()
    result = {
        name: {
            "req_per_s_median": round(statistics.median(rates[name]), 1),
            "req_per_s_rounds": [round(r, 1) for r in rates[name]],
            "p99_ms_median": round(statistics.median(p99s[name]), 2),
        }
        for name in servers
    }
    result["ratio_protocol_to_httptools"] = round(
        result["protocol class"]["req_per_s_median"] / result["httptools"]["req_per_s_median"], 3
    )
    # The machine's noise moves both alike within a round: the paired ratio is the fairer one.
    paired = [p / h for p, h in zip(rates["protocol class"], rates["httptools"], strict=True)]
    result["paired_round_ratios"] = [round(r, 3) for r in paired]
    result["paired_ratio_median"] = round(statistics.median(paired), 3)
    result["load_average"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

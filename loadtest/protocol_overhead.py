"""What the protocol class costs: the final stage with uvicorn's httptools protocol and with
``serving.protocol:LimitedHttpToolsProtocol``, under the same short closed-loop load.

Both servers run at once (server on CPU 0, this client on CPU 1 when there are two); the load
alternates between them in short rounds, so machine noise lands on both alike. Bounded: about
``2 * rounds * seconds`` seconds; 127.0.0.1 only; the servers are stopped by PID.

    python -m loadtest.protocol_overhead --rounds 6 --seconds 5 --connections 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics

from loadtest.launcher import StageServer
from loadtest.rawhttp import closed_loop, predict_body, request_bytes

PROTOCOL = "serving.protocol:LimitedHttpToolsProtocol"
TEXT = "A warm, funny film with a clever script and two lovely performances."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {1})
    raw = request_bytes("/predict", predict_body(TEXT))
    variants = {
        "httptools": ("-m", "uvicorn", "--http", "httptools"),
        "protocol class": ("-m", "uvicorn", "--http", PROTOCOL),
    }
    servers = {
        name: StageServer("batched", launcher=launcher) for name, launcher in variants.items()
    }
    rates: dict[str, list[float]] = {name: [] for name in servers}
    p99s: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for server in servers.values():
            server.start()
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
    result["load_average"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""A minimal keep-alive HTTP/1.1 client on asyncio streams, for load that must also misbehave.

locust and httpx cannot send half a header or hold a body open; this can, and it is cheap
enough to drive a few thousand requests per second from one core. 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence


def request_bytes(path: str, body: bytes, extra: bytes = b"") -> bytes:
    """A complete POST with a JSON body."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep_alive) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length, keep_alive = 0, True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and b"close" in value.lower():
            keep_alive = False
    body = await reader.readexactly(length) if length else b""
    return status, body, keep_alive


class Connection:
    """One keep-alive connection that reconnects when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, raw: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
        """Send one request, return (status, body); status 0 when the connection failed."""
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.writer.write(raw)
            status, body, keep_alive = await asyncio.wait_for(read_response(self.reader), timeout)
            if not keep_alive:
                await self.close()
            return status, body
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            await self.close()
            return 0, b""

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def closed_loop(
    port: int, raw: bytes | Sequence[bytes], seconds: float, connections: int
) -> tuple[int, int, list[float]]:
    """``connections`` clients, each sending its next request as soon as it is answered.

    ``raw`` is one request, sent again and again, or a sequence of requests that each client
    cycles through, the clients starting at offsets spread over the sequence (so they do not
    send the same request at the same time). No request starts after ``seconds``; those in
    flight then are still answered and counted. Returns (answered 200, other, latencies in ms).
    """
    requests = [raw] if isinstance(raw, (bytes, bytearray)) else list(raw)
    if not requests:
        raise ValueError("closed_loop needs at least one request")
    step = max(1, len(requests) // connections)
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    other = 0

    async def client(offset: int) -> None:
        nonlocal other
        conn = Connection(port)
        i = offset
        while time.monotonic() < deadline:
            started = time.perf_counter()
            status, _ = await conn.send(requests[i % len(requests)])
            i += 1
            if status == 200:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                other += 1
        await conn.close()

    await asyncio.gather(*(client(c * step) for c in range(connections)))
    return len(latencies), other, latencies


def predict_body(text: str) -> bytes:
    return json.dumps({"text": text}).encode()

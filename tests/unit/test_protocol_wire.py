"""serving/protocol.py in-process, fed by a fake transport: the exact way bytes are split into
reads is under the test's control, which a socket cannot promise.

Each test runs a small ASGI app on a fresh event loop; nothing touches the network.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import weakref
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from serving import limits
from serving.protocol import MAX_BODY_CHUNKS, LimitedHttpToolsProtocol

LIMIT = 1024  # the smallest head limit the settings allow: small heads, fast tests


class FakeTransport(asyncio.Transport):
    """Collects what the protocol writes; closes as a socket would (connection_lost later)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.written = bytearray()
        self.closing = False
        self.aborted = False
        self.protocol: Any = None
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: bytes) -> None:  # type: ignore[override]
        if self.closing:  # as uvloop's: its handle is gone before connection_lost is called
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: Any) -> None:  # an upgrade would swap the protocol
        self.protocol = protocol


async def echo_app(scope: dict, receive: Any, send: Any) -> None:
    """200 with the body's length and the number of header fields the app was given."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = f"{size} {len(scope['headers'])}".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Harness:
    """One server state (the connection set) and any number of connections to it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, **attrs: Any) -> None:
        self.loop = loop
        self.config = Config(app=echo_app, lifespan="off", log_level="warning", ws="auto")
        self.config.load()
        self.state = ServerState()
        self.attrs = {"max_header_bytes": LIMIT, "max_connections": 16} | attrs

    def connect(self) -> tuple[LimitedHttpToolsProtocol, FakeTransport]:
        protocol = LimitedHttpToolsProtocol(
            config=self.config, server_state=self.state, app_state={}, _loop=self.loop
        )
        for name, value in self.attrs.items():
            setattr(protocol, name, value)
        transport = FakeTransport(self.loop)
        transport.protocol = protocol
        protocol.connection_made(transport)
        return protocol, transport


def run(coro: Any) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def settle(transport: FakeTransport, answers: int, rounds: int = 2000) -> list[int]:
    """Let the loop run until ``answers`` statuses were written (or the connection closed)."""
    for _ in range(rounds):
        if len(statuses(transport)) >= answers or transport.closing:
            break
        await asyncio.sleep(0)
    for _ in range(20):  # a close scheduled by the last answer
        await asyncio.sleep(0)
    return statuses(transport)


def statuses(transport: FakeTransport) -> list[int]:
    return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", bytes(transport.written))]


def get(path: str = "/health", pad: int = 0) -> bytes:
    extra = b"X-Pad: " + b"p" * pad + b"\r\n" if pad else b""
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"\r\n"


def post(body: bytes, pad: int = 0) -> bytes:
    head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    extra = b"X-Pad: " + b"p" * pad + b"\r\n" if pad else b""
    return head.encode() + extra + b"\r\n" + body


def head_of_size(size: int) -> bytes:
    """A GET whose head (first byte to blank line) is exactly ``size`` bytes."""
    base = get(pad=1)
    return get(pad=1 + size - len(base))


def feed(pieces: list[bytes], answers: int, **attrs: Any) -> tuple[list[int], FakeTransport]:
    async def go() -> tuple[list[int], FakeTransport]:
        protocol, transport = Harness(asyncio.get_running_loop(), **attrs).connect()
        for piece in pieces:
            if transport.closing:
                break
            protocol.data_received(piece)
            await asyncio.sleep(0)
        return await settle(transport, answers), transport

    return run(go())


# Issue 22: the head limit counts one request's head, however the bytes arrive -----------------


def test_head_of_size_is_exact():
    assert len(head_of_size(LIMIT)) == LIMIT and head_of_size(LIMIT).endswith(b"\r\n\r\n")


@pytest.mark.parametrize("size,status", [(LIMIT, 200), (LIMIT + 1, 431)])
def test_a_head_at_the_limit_split_byte_by_byte(size, status):
    raw = head_of_size(size)
    pieces = [raw[i : i + 1] for i in range(len(raw))]
    assert feed(pieces, 1)[0] == [status]
    assert feed([raw], 1)[0] == [status]  # the same in one read


@pytest.mark.parametrize("size,status", [(LIMIT, 200), (LIMIT + 1, 431)])
def test_a_head_at_the_limit_split_anywhere_in_two(size, status):
    raw = head_of_size(size)
    for cut in range(1, len(raw), 7):
        assert feed([raw[:cut], raw[cut:]], 1)[0] == [status], cut


def test_pipelined_requests_split_around_a_boundary():
    """Heads near the limit, pipelined: every cut in a window around the second request's first
    byte; the read after the cut holds more than a limit's worth and ends inside a later head."""
    one = head_of_size(LIMIT - 10)
    raw = one * 4
    end = len(one) * 2 + len(one) // 2
    for cut in range(len(one) - 40, len(one) + 40):
        assert feed([raw[:cut], raw[cut:end], raw[end:]], 4)[0] == [200] * 4, cut


def test_pipelined_posts_with_bodies_split_around_a_boundary():
    one = post(b'{"text": "' + b"b" * 3000 + b'"}')  # body bytes larger than the head limit
    raw = one * 4
    end = len(one) * 2 + 20  # inside the third head
    for cut in range(len(one) - 30, len(one) + 30):
        assert feed([raw[:cut], raw[cut:end], raw[end:]], 4)[0] == [200] * 4, cut


@pytest.mark.parametrize(
    "request_bytes", [get(pad=300), post(b'{"text": "a fine film"}', pad=280)], ids=["get", "post"]
)
def test_a_300_request_burst_in_three_pieces(request_bytes):
    """Issue 22's reproduction (about 340-byte requests, the default 32 KB limit): a 40 KB read
    that begins and ends mid-request."""
    raw = request_bytes * 300
    first = len(request_bytes) * 5 + len(request_bytes) // 2
    middle = first + 40_000
    pieces = [raw[:first], raw[first:middle], raw[middle:]]
    assert feed(pieces, 300, max_header_bytes=32_768)[0] == [200] * 300


def test_an_endless_head_is_refused_early():
    """Reads that lie wholly inside one head are counted: refused after about one limit."""
    pieces = [b"GET /health HTTP/1.1\r\nX-Big: "] + [b"a" * 100] * 100
    answers, transport = feed(pieces, 1)
    assert answers == [431] and transport.closing


# Hardening round 3 (issue 16): trailers, chunks, upgrades, the cap, slow readers ---------------


def chunked(chunks: list[bytes], trailer: bytes = b"") -> bytes:
    """A chunked POST: ``chunks`` then the last chunk and the ``trailer`` fields."""
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return head + body + b"0\r\n" + trailer + b"\r\n"


def trailer_of_size(size: int) -> bytes:
    """Trailer fields whose section (first byte to blank line) is exactly ``size`` bytes."""
    fields = b"".join(b"T%03d: %s\r\n" % (i, b"v" * 90) for i in range(size // 100 - 1))
    rest = size - len(fields) - 2 - len(b"Tz: \r\n")
    return fields + b"Tz: " + b"w" * rest + b"\r\n"


def test_trailer_fields_are_never_added_to_the_headers():
    answers, transport = feed([chunked([b'{"a": 1}'], b"T1: a\r\nT2: b\r\n")], 1)
    assert answers == [200]
    assert bytes(transport.written).endswith(b"\r\n\r\n8 2")  # host and transfer-encoding only


@pytest.mark.parametrize("size,status", [(LIMIT, 200), (LIMIT + 1, 431)])
def test_a_trailer_at_the_limit_split_byte_by_byte(size, status):
    trailer = trailer_of_size(size)
    assert len(trailer) + 2 == size
    raw = chunked([b"{}"], trailer)
    assert feed([raw], 1)[0] == [status]
    assert feed([raw[i : i + 1] for i in range(len(raw))], 1)[0] == [status]


def test_an_endless_trailer_is_refused_early():
    raw = chunked([b"{}"])[:-2] + b"T: "  # the last chunk, then a field that never ends
    pieces = [raw] + [b"a" * 100] * 100
    answers, transport = feed(pieces, 1)
    assert answers == [431] and transport.closing
    assert len(transport.written) < 1000


def test_a_body_in_too_many_chunks_gets_413():
    many = chunked([b"x"] * (MAX_BODY_CHUNKS + 1))
    assert feed([many], 1)[0] == [413]
    assert feed([chunked([b"x"] * MAX_BODY_CHUNKS)], 1)[0] == [200]


def upgrade(pad: int = 9000) -> bytes:
    return (
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"X-Long: " + b"l" * pad + b"\r\n\r\n"
    )


def test_an_upgrade_is_answered_as_plain_http_and_closed():
    """uvicorn handed it to the WebSocket protocol, which never answered a head with a line over
    8 KB; here the app answers it and the connection closes."""

    async def go() -> None:
        harness = Harness(asyncio.get_running_loop(), max_header_bytes=32_768)
        protocol, transport = harness.connect()
        protocol.data_received(upgrade() + b"\x81\x05hello")
        assert await settle(transport, 1) == [200]
        assert transport.closing and transport.protocol is protocol
        await asyncio.sleep(0)
        assert not harness.state.connections

    run(go())


def test_no_connection_state_outlives_its_connection():
    """uvicorn's connection set forgot a connection only in its own connection_lost, which never
    ran after an upgrade: each attempt left its protocol object (about 28 KB) behind."""
    gone: list[weakref.ref] = []

    async def go() -> None:
        harness = Harness(asyncio.get_running_loop(), max_header_bytes=32_768)
        for raw in (upgrade(), get(), upgrade(10), b"GET /health HTTP/1.1\r\n"):
            protocol, transport = harness.connect()
            protocol.data_received(raw)
            await settle(transport, 1)
            transport.close()
            for _ in range(5):
                await asyncio.sleep(0)
            assert protocol not in harness.state.connections
            assert protocol not in limits.wire_readers
            assert protocol.read_timer is None and protocol.drain_timer is None
            gone.append(weakref.ref(protocol))
            transport.protocol = None
            del protocol, transport
        assert not harness.state.connections and not harness.state.tasks

    run(go())
    gc.collect()
    assert [ref() for ref in gone] == [None] * len(gone)


def test_at_the_cap_the_oldest_idle_connection_makes_room():
    """A slowloris fills the cap with connections that never finish a head; a working client
    still gets in, and the oldest waiting connection goes."""

    async def go() -> None:
        harness = Harness(asyncio.get_running_loop(), max_connections=5)
        keep_alive, kept = harness.connect()  # a working client between two requests
        keep_alive.data_received(get())
        assert await settle(kept, 1) == [200]
        idle = [harness.connect() for _ in range(4)]
        idle[1][0].data_received(b"G")  # half a head is no better than nothing
        worker, transport = harness.connect()
        assert not transport.closing
        worker.data_received(get())
        assert await settle(transport, 1) == [200]
        assert idle[0][1].closing and not idle[1][1].closing  # the oldest went
        late = harness.connect()  # next: the half-sent head, which is told why
        assert idle[1][1].closing and statuses(idle[1][1]) == [503]
        assert b"retry-after: 1\r\n" in bytes(idle[1][1].written)
        assert not late[1].closing and not kept.closing

    run(go())


def test_at_the_cap_with_every_connection_busy_the_new_one_gets_503_retry_after():
    async def go() -> None:
        harness = Harness(asyncio.get_running_loop(), max_connections=2)
        for protocol, _ in [harness.connect() for _ in range(2)]:
            protocol.data_received(post(b"12345")[:-2])  # the body is on its way
        _, transport = harness.connect()
        assert statuses(transport) == [503] and transport.closing
        assert b"retry-after: 1\r\n" in bytes(transport.written)

    run(go())


def test_a_client_that_does_not_read_is_closed_after_the_write_timeout():
    async def go() -> None:
        harness = Harness(asyncio.get_running_loop(), write_timeout_s=0.01)
        protocol, transport = harness.connect()
        protocol.data_received(get())
        protocol.pause_writing()  # what the transport says when its buffer is full
        for _ in range(100):
            if transport.aborted:
                break
            await asyncio.sleep(0.01)
        assert transport.aborted

    run(go())


def test_shutdown_closes_by_force_what_is_still_open_at_the_drain_deadline(monkeypatch):
    monkeypatch.setattr("serving.protocol.DRAIN_GRACE_S", 0.0)

    async def go() -> None:
        harness = Harness(asyncio.get_running_loop(), drain_timeout_s=0.01)
        stuck, stuck_transport = harness.connect()
        stuck.data_received(get())
        stuck.pause_writing()  # its answer cannot be written
        await asyncio.sleep(0)
        stuck.shutdown()
        for _ in range(100):
            if stuck_transport.aborted:
                break
            await asyncio.sleep(0.01)
        assert stuck_transport.aborted

    run(go())


@pytest.mark.parametrize(
    "refused,status",
    [(head_of_size(LIMIT + 1), 431), (chunked([b"x"] * (MAX_BODY_CHUNKS + 1)), 413)],
    ids=["head", "chunks"],
)
def test_a_refusal_behind_pipelined_requests_comes_after_their_answers(refused, status):
    """HTTP/1.1 answers in order: the refusal waits for the answers the client is still owed."""
    answers, transport = feed([get() + get() + refused + get()], 3)
    assert answers == [200, 200, status] and transport.closing


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_client_gone_before_its_answer_is_not_a_500():
    """The peer resets while its request is queued to run: uvloop closes the transport at once
    and calls connection_lost one turn later; an answer written in between raised, and uvicorn
    logged the request as a 500 (seen in the soak with the slow reader)."""

    errors = Collect()
    logger = logging.getLogger("uvicorn.error")  # its records do not reach caplog

    async def go() -> None:
        harness = Harness(asyncio.get_running_loop())  # configures uvicorn's logging
        logger.addHandler(errors)
        protocol, transport = harness.connect()
        protocol.data_received(get())
        transport.close()  # the reset, before the app's task has run
        for _ in range(20):
            await asyncio.sleep(0)
        assert not protocol.connections

    try:
        run(go())
    finally:
        logger.removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]

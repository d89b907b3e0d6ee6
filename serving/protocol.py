"""uvicorn's httptools protocol with the limits only a connection can enforce.

Run it with ``uvicorn inference_server:app --http serving.protocol:LimitedHttpToolsProtocol``
(or ``uvicorn.Config(http=LimitedHttpToolsProtocol)``). On top of uvicorn's protocol:

* ``MAX_HEADER_BYTES``: a request head (its bytes from the first to the blank line) larger than
  this gets 431 and the connection closes, also when it never ends (httptools alone buffers it
  without limit). Only one request's head counts, however the bytes arrive: pipelined requests
  in one read, body bytes and other requests' heads never add to it. A chunked body's trailer
  section is held to the same limit, and its fields are dropped (ASGI has no request trailers;
  uvicorn appended them to the request's header list without bound);
* ``MAX_BODY_CHUNKS``: a chunked body in more chunks than this gets 413 (each chunk costs
  Python callbacks: a body in 1-byte chunks held the event loop for 0.25-0.45 s);
* ``HEADER_TIMEOUT_S``: a connection must deliver a complete head within this time (a silent
  one is closed, a half-sent head gets 408);
* ``BODY_TIMEOUT_S``: the body must arrive within this time after the head (408); on shutdown
  the remaining wait is cut to ``DRAIN_TIMEOUT_S``;
* ``MAX_CONNECTIONS``: at the cap, the connection that has waited longest for a request head
  (none of its requests in progress) is closed to make room: a client that has not sent a whole
  head cannot keep a working client out (slowloris). Only when none is waiting does the new
  connection get 503 (with ``Retry-After``);
* WebSocket and other upgrades are refused: the request is answered as plain HTTP by the app
  (the app has no WebSocket route), then the connection closes; uvicorn's upgrade path left a
  stalled connection and its protocol object behind for good;
* a client that does not read its answers: a write paused for longer than the body timeout
  closes the connection, and every connection still open ``DRAIN_TIMEOUT_S`` (plus a second to
  flush the last answers) after shutdown began is closed by force and counted, so the
  ``shutdown`` line can say so;
* every answer written here (and uvicorn's own 400 for a request it cannot parse) is logged and
  counted through the app's :class:`serving.limits.WireObserver`.

Read timers are armed only when a head or body is still incomplete after a read, so a request
that arrives whole (the benchmark's case) costs no timer at all; the write timer only when the
transport pauses writing, the drain timer only at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from serving import limits
from serving.settings import Settings

IDLE, HEAD, BODY = 0, 1, 2
# A real client streams a body in chunks of kilobytes; 4,096 chunks carry a 1 MB body in 256-byte
# chunks and cost a few milliseconds of callbacks, where a million 1-byte chunks cost 0.3 s.
MAX_BODY_CHUNKS = 4096
DRAIN_GRACE_S = 1.0  # after the drain timeout: time to flush the answers written at its end
REQUEST_LINE_EXTRA = len(b"  HTTP/1.1\r\n") + len(b"\r\n")  # around method and URL; blank line
RETRY_AFTER = b"retry-after: 1\r\n"
WIRE_EXTENSIONS = {limits.WIRE_TIMEOUTS: {}}  # read-only marker shared by every request
_defaults: Settings | None = None


def _settings() -> Any:
    """The app's settings when it registered an observer, else the environment's."""
    global _defaults
    if limits.observer is not None:
        return limits.observer.settings
    if _defaults is None:
        _defaults = Settings()
    return _defaults


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` plus head, trailer and chunk limits, read and write timeouts, a
    connection cap that evicts slowloris connections, refused upgrades and a drain deadline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings()
        self.max_header_bytes: int = settings.max_header_bytes
        self.header_timeout_s: float = settings.header_timeout_s
        self.body_timeout_s: float = settings.body_timeout_s
        self.drain_timeout_s: float = settings.drain_timeout_s
        self.max_connections: int = settings.max_connections
        self.write_timeout_s: float = settings.body_timeout_s  # same budget as sending a body
        self.phase = IDLE
        # Bytes of the unfinished head (or trailer section) so far: the parser callbacks' count
        # for the read it began in, then every byte of each read that lies wholly inside it.
        self.head_bytes = 0
        self.began_here = False  # the current head began in the read being parsed
        self.read_size = 0  # size of the read being parsed
        self.read_timer: asyncio.TimerHandle | None = None
        self.read_deadline = 0.0
        self.refusal: tuple[int, str, str] | None = None  # why a callback stopped the parser
        # Chunked bodies: chunks so far, and whether the last parser event was a chunk header
        # (then the next bytes are chunk data, or the trailer section after the last chunk).
        self.chunks = 0
        self.after_chunk_header = False
        self.body_progress = False  # chunk data or a chunk boundary in the read being parsed
        self.trailer_bytes = 0  # the trailer section, counted like a head
        self.trailer_fields = 0  # exact size of the trailer fields seen
        self.began_here_trailer = False  # the last chunk header came in the read being parsed
        self.ignore_input = False  # after a refused upgrade (not HTTP) or a refusal: dropped
        self.deferred: tuple[int, str] | None = None  # a refusal waiting for earlier answers
        # Slowloris: since when this connection has waited for a complete request head with no
        # request in progress (None: busy, or an idle keep-alive connection, which the
        # keep-alive timeout closes and whose client would see a reset if evicted).
        self.waiting_since: float | None = None
        self.write_timer: asyncio.TimerHandle | None = None
        self.drain_timer: asyncio.TimerHandle | None = None
        self.lost = False

    # Connection -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_QuietTransport(transport))  # type: ignore[arg-type]
        if len(self.connections) > self.max_connections and not self._make_room():
            self._answer(503, "too many open connections, retry later", "connection_refused")
            return
        limits.wire_readers.add(self)  # a signal shortens the body read (ReadTimeouts)
        self.waiting_since = self.loop.time()
        self._arm(self.header_timeout_s)  # a connection that never says anything

    def _make_room(self) -> bool:
        """At the cap: close the connection that has waited longest for a request head with no
        request in progress (a slowloris socket). False when there is none."""
        waiting = [
            (since, other)
            for other in self.connections  # scanned only at the cap: a few hundred at most
            if (since := getattr(other, "waiting_since", None)) is not None
            and not other.transport.is_closing()
        ]
        # No minimum wait before eviction: with one, the attacker's own reconnects compete with
        # working clients for the connections old enough to go (in the e2e slowloris test a
        # 1 s minimum let 0 of 40 working clients in). The price: in a burst of more than the
        # cap, a client accepted first may go before its first bytes are read.
        if not waiting:
            return False
        min(waiting, key=lambda pair: pair[0])[1]._evict()
        return True

    def _evict(self) -> None:
        self.waiting_since = None
        if self.phase == HEAD:  # half a head: say why
            self._answer(503, "connection closed to make room, retry later", "connection_evicted")
        else:  # nothing asked yet: close quietly
            self._disarm()
            _observer_closed("connection_evicted", "closed at the connection cap to make room")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.waiting_since = None
        self._disarm()
        for timer in (self.write_timer, self.drain_timer):
            if timer is not None:
                timer.cancel()
        self.write_timer = self.drain_timer = None
        limits.wire_readers.discard(self)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The client never got a (whole) answer: the app's line must not claim one.
            cycle.scope["state"].setdefault(limits.WIRE_STATUS, limits.ABORTED)
        super().connection_lost(exc)

    def shutdown(self) -> None:
        super().shutdown()
        self.shorten(self.drain_timeout_s)  # also for stages 1-3, which have no signal hook
        # Whatever still holds the connection by then (a client that does not read its answers,
        # an answer that cannot be flushed) must not hold the process: closed by force.
        if not self.lost and self.drain_timer is None:
            self.drain_timer = self.loop.call_later(
                self.drain_timeout_s + DRAIN_GRACE_S, self._drain_expired
            )

    def _drain_expired(self) -> None:
        self.drain_timer = None
        if self.lost:
            return
        if limits.observer is not None:
            limits.observer.forced_close("the connection was still open at the drain deadline")
        self._abort()

    def pause_writing(self) -> None:
        """The client does not read fast enough: it has the write timeout to catch up."""
        super().pause_writing()
        if self.write_timer is None:
            self.write_timer = self.loop.call_later(self.write_timeout_s, self._write_expired)

    def resume_writing(self) -> None:
        """The client caught up."""
        super().resume_writing()
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None

    def _write_expired(self) -> None:
        self.write_timer = None
        if self.lost:
            return
        detail = f"answers not read by the client within {self.write_timeout_s:g} s"
        _observer_closed("write_timeout", detail)
        self._abort()

    def _abort(self) -> None:
        """Close now, dropping unsent bytes (the client is not reading them)."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.scope["state"].setdefault(limits.WIRE_STATUS, limits.ABORTED)
        self.transport.abort()

    def shorten(self, seconds: float) -> None:
        """A body still being read must arrive within ``seconds`` from now (shutdown)."""
        late = self.read_timer is not None and self.read_deadline - self.loop.time() > seconds
        if self.phase == BODY and late:
            self._disarm()
            self._arm(seconds)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self.ignore_input or self.deferred is not None:
            return  # not HTTP any more (an upgrade), or refused: earlier answers still due
        in_head = self.phase == HEAD
        in_trailer = self.phase == BODY and self.after_chunk_header
        self.read_size = len(data)
        self.began_here = self.began_here_trailer = self.body_progress = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse_upgrade()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        if self.phase == HEAD:
            if in_head and not self.began_here:  # the whole read lies inside this head
                self.head_bytes += len(data)
            if self.head_bytes > self.max_header_bytes:
                self._answer(*self._too_large("head"))
                return
            if self.read_timer is None:
                self._arm(self.header_timeout_s)
        elif self.phase == BODY:
            if in_trailer and self.after_chunk_header and not self.body_progress:
                self.trailer_bytes += len(data)  # the whole read lies inside the trailer section
                if self.trailer_bytes > self.max_header_bytes:
                    self._refuse_in_body(*self._too_large("trailer"))
                    return
            if self.read_timer is None:
                self._arm(self.body_timeout_s)

    # Parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.waiting_since is None and (self.cycle is None or self.cycle.response_complete):
            self.waiting_since = self.loop.time()  # a keep-alive connection begins a new head
        super().on_message_begin()
        self.phase = HEAD
        self.head_bytes = 0
        self.began_here = True
        self.chunks = self.trailer_bytes = self.trailer_fields = 0
        self.after_chunk_header = False

    def on_url(self, url: bytes) -> None:
        if self.began_here:
            self.head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 4  # name: value CRLF
        if self.phase == HEAD:
            if self.began_here:
                self.head_bytes += size
            super().on_header(name, value)
            return
        # A trailer field (after the last chunk): counted like a head, never kept. The section
        # runs from its first byte to its blank line, so the exact size adds that line's CRLF.
        self.trailer_fields += size
        if self.began_here_trailer:
            self.trailer_bytes += size
        if max(self.trailer_fields + 2, self.trailer_bytes) > self.max_header_bytes:
            self.refusal = self._too_large("trailer")
            raise _RefusedError

    def on_headers_complete(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None
        # A head that began and ended in one read no larger than the limit cannot be too large:
        # add it up only otherwise (the same bytes a client sent, unless it padded whitespace).
        if not self.began_here or self.read_size > self.max_header_bytes:
            size = len(self.parser.get_method()) + len(self.url) + REQUEST_LINE_EXTRA
            size += sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.max_header_bytes:
                self.refusal = self._too_large("head")
                raise _RefusedError  # stops the parser; data_received answers 431
        self.phase = BODY
        self.waiting_since = None
        self.scope["extensions"] = WIRE_EXTENSIONS  # the ASGI timer can stand down
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        self.chunks += 1
        self.after_chunk_header = self.body_progress = True
        self.began_here_trailer = True  # if this is the last chunk, its trailer begins here
        self.trailer_bytes = 0
        if self.chunks > MAX_BODY_CHUNKS + 1:  # the empty last chunk is not counted
            detail = f"request body arrived in more than {MAX_BODY_CHUNKS} chunks"
            self.refusal = (413, detail, "too_many_chunks")
            raise _RefusedError

    def on_chunk_complete(self) -> None:
        self.after_chunk_header = False
        self.body_progress = True

    def on_body(self, body: bytes) -> None:
        self.after_chunk_header = False
        self.body_progress = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.phase = IDLE
        self.after_chunk_header = False
        self.body_progress = True
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        done = self.cycle is None or self.cycle.response_complete  # the newest one, so all
        if self.deferred is not None and done and not self.transport.is_closing():
            status, detail = self.deferred
            self._write(status, detail)  # the earlier answers are out: now the refusal
            self.transport.close()
            return
        if not self.pipeline and not self.lost and self.phase == HEAD:
            self.waiting_since = self.loop.time()  # its next head had begun meanwhile

    def _should_upgrade_to_ws(self) -> bool:
        return False  # the app has no WebSocket route: an upgrade request is plain HTTP

    # Timers and answers ---------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self.read_deadline = self.loop.time() + seconds
        self.read_timer = self.loop.call_at(self.read_deadline, self._expire)

    def _disarm(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def _expire(self) -> None:
        self.read_timer = None
        if self.transport.is_closing():
            return
        if self.phase == IDLE:  # connected, never sent a byte
            _observer_closed("header_timeout", f"no request within {self.header_timeout_s:g} s")
            self.transport.close()
        elif self.phase == HEAD:
            detail = f"request head not received within {self.header_timeout_s:g} s"
            self._answer(408, detail, "header_timeout")
        else:
            detail = f"request body not received within {self.body_timeout_s:g} s"
            cycle = self.cycle
            if cycle is not None and not cycle.response_started:
                cycle.scope["state"][limits.WIRE_STATUS] = 408  # the app's line says 408
                self._write(408, detail)
            if limits.observer is not None:
                limits.observer.event("body_timeout")
            self.transport.close()

    def _too_large(self, part: str) -> tuple[int, str, str]:
        """The 431 for a request ``part`` (head or trailer) over the head limit."""
        detail = f"request {part} is larger than the limit of {self.max_header_bytes} bytes"
        return 431, detail, "header_too_large"

    def _bad_request(self) -> None:
        refusal, self.refusal = self.refusal, None
        if refusal is not None:  # a callback stopped the parser on purpose
            if self.phase == HEAD:
                self._answer(*refusal)
            else:
                self._refuse_in_body(*refusal)
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # Bytes after the body (Content-Length shorter than the body): the client gets this
            # 400, not the app's answer, and the app's line says so.
            cycle.scope["state"][limits.WIRE_STATUS] = 400
            if limits.observer is not None:
                limits.observer.event("bad_request")
            self._write(400, "invalid HTTP request")
            self.transport.close()
            return
        self._answer(400, "invalid HTTP request", "bad_request")

    def _refuse_in_body(self, status: int, detail: str, event: str) -> None:
        """Refuse a request the app already has (its body is being read): the app's line says
        ``status``, and the client gets it unless the app has begun its own answer."""
        self._disarm()
        if self.pipeline:  # queued behind earlier answers: the app never sees it
            cycle, _ = self.pipeline[0]  # the newest (uvicorn appends on the left)
            self.pipeline[0] = (cycle, _refusal_app(status, detail))  # answered in its turn
            self.ignore_input = True
            if limits.observer is not None:
                method, path = cycle.scope["method"], cycle.scope["path"]
                limits.observer.response(status, method, path, event, detail)
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.scope["state"][limits.WIRE_STATUS] = status
            self._write(status, detail)
        if limits.observer is not None:
            limits.observer.event(event)
        self.transport.close()

    def _refuse_upgrade(self) -> None:
        """An upgrade (WebSocket, CONNECT): the app answers the request as plain HTTP, then the
        connection closes; what the client sends meanwhile is not HTTP and is dropped."""
        self.ignore_input = True
        self._disarm()
        if self.cycle is not None:
            self.cycle.keep_alive = False
        if limits.observer is not None:
            limits.observer.event("upgrade_refused")

    def _answer(self, status: int, detail: str, event: str) -> None:
        """Write an answer the app never sees, log and count it, close the connection. Behind
        pipelined requests still being answered, it waits for their answers (HTTP/1.1 answers
        in order); nothing more is read meanwhile."""
        self._disarm()
        if limits.observer is not None:
            url = bytes(getattr(self, "url", b"") or b"")
            method = "OTHER"  # httptools says DELETE when the method itself was not understood
            if url and self.parser is not None:
                with contextlib.suppress(Exception):
                    method = self.parser.get_method().decode("latin-1")
            path = url[:200].decode("latin-1")
            limits.observer.response(status, method, path, event, detail)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not self.transport.is_closing():
            self.deferred = (status, detail)
            self.flow.pause_reading()
            return
        self._write(status, detail)
        self.transport.close()

    def _write(self, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n"
        retry = RETRY_AFTER if status == 503 else b""  # the cap: worth another try soon
        self.transport.write(STATUS_LINE[status] + head % len(body) + retry + b"\r\n" + body)


class _QuietTransport:
    """The connection's transport, except that a write after the peer has gone is dropped.

    uvloop closes a transport at once when the peer resets, and tells the protocol (which tells
    uvicorn's request cycle) one loop turn later; an answer written in between raised, and the
    request was logged as a 500 the client never saw. asyncio's own transports drop such writes.
    """

    __slots__ = ("_transport",)

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        """Write, unless the transport is already closed or closing."""
        if not self._transport.is_closing():
            self._transport.write(data)

    def is_closing(self) -> bool:
        """As the transport's (asked on every request: no ``__getattr__`` on that path)."""
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _refusal_app(status: int, detail: str) -> Any:
    """An ASGI app that only answers ``status`` (for a pipelined request refused in its body)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return refuse


class _RefusedError(Exception):
    """Raised inside a parser callback to stop parsing (``refusal`` says why)."""


def _observer_closed(event: str, detail: str) -> None:
    if limits.observer is not None:
        limits.observer.closed(event, detail)

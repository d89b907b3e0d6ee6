"""uvicorn's httptools protocol with the limits only a connection can enforce.

Run it with ``uvicorn inference_server:app --http serving.protocol:LimitedHttpToolsProtocol``
(or ``uvicorn.Config(http=LimitedHttpToolsProtocol)``). On top of uvicorn's protocol:

* ``MAX_HEADER_BYTES``: a request head (request line + headers) larger than this gets 431 and
  the connection closes, also when it never ends (httptools alone buffers it without limit);
* ``HEADER_TIMEOUT_S``: a connection must deliver a complete head within this time (a silent
  one is closed, a half-sent head gets 408);
* ``BODY_TIMEOUT_S``: the body must arrive within this time after the head (408); on shutdown
  the remaining wait is cut to ``DRAIN_TIMEOUT_S``;
* ``MAX_CONNECTIONS``: beyond it a new connection gets 503 and is closed at once;
* every answer written here (and uvicorn's own 400 for a request it cannot parse) is logged and
  counted through the app's :class:`serving.limits.WireObserver`.

Timers are armed only when a head or body is still incomplete after a read, so a request that
arrives whole (the benchmark's case) costs no timer at all.
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
    """``HttpToolsProtocol`` plus header size limit, read timeouts and a connection cap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings()
        self.max_header_bytes: int = settings.max_header_bytes
        self.header_timeout_s: float = settings.header_timeout_s
        self.body_timeout_s: float = settings.body_timeout_s
        self.drain_timeout_s: float = settings.drain_timeout_s
        self.max_connections: int = settings.max_connections
        self.phase = IDLE
        self.head_bytes = 0  # bytes of an unfinished head, after the read that began it
        self.read_timer: asyncio.TimerHandle | None = None
        self.read_deadline = 0.0
        self.head_too_large = False
        self.chunk_bytes = 0  # size of the read being parsed

    # Connection -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._answer(503, "too many open connections, retry later", "connection_refused")
            return
        limits.wire_readers.add(self)  # a signal shortens the body read (ReadTimeouts)
        self._arm(self.header_timeout_s)  # a connection that never says anything

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        limits.wire_readers.discard(self)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The client never got a (whole) answer: the app's line must not claim one.
            cycle.scope["state"].setdefault(limits.WIRE_STATUS, limits.ABORTED)
        super().connection_lost(exc)

    def shutdown(self) -> None:
        super().shutdown()
        self.shorten(self.drain_timeout_s)  # also for stages 1-3, which have no signal hook

    def shorten(self, seconds: float) -> None:
        """A body still being read must arrive within ``seconds`` from now (shutdown)."""
        late = self.read_timer is not None and self.read_deadline - self.loop.time() > seconds
        if self.phase == BODY and late:
            self._disarm()
            self._arm(seconds)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        counted = self.phase == HEAD
        self.chunk_bytes = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        if self.phase == HEAD:
            if counted:
                self.head_bytes += len(data)
                if self.head_bytes > self.max_header_bytes:
                    self._head_too_large()
                    return
            if self.read_timer is None:
                self._arm(self.header_timeout_s)
        elif self.phase == BODY and self.read_timer is None:
            self._arm(self.body_timeout_s)

    # Parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.phase = HEAD
        self.head_bytes = 0

    def on_headers_complete(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None
        self.phase = BODY
        # A head that arrived in one small read cannot be too large: add it up only otherwise.
        if self.head_bytes or self.chunk_bytes > self.max_header_bytes:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.max_header_bytes:
                self.head_too_large = True
                raise _HeadTooLargeError  # stops the parser; data_received answers 431
        self.scope["extensions"] = WIRE_EXTENSIONS  # the ASGI timer can stand down
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.phase = IDLE
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

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

    def _head_too_large(self) -> None:
        detail = f"request head is larger than the limit of {self.max_header_bytes} bytes"
        self._answer(431, detail, "header_too_large")

    def _bad_request(self) -> None:
        if self.head_too_large:
            self._head_too_large()
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

    def _answer(self, status: int, detail: str, event: str) -> None:
        """Write an answer the app never sees, log and count it, close the connection."""
        self._disarm()
        if limits.observer is not None:
            url = bytes(getattr(self, "url", b"") or b"")
            method = "OTHER"  # httptools says DELETE when the method itself was not understood
            if url and self.parser is not None:
                with contextlib.suppress(Exception):
                    method = self.parser.get_method().decode("latin-1")
            path = url[:200].decode("latin-1")
            limits.observer.response(status, method, path, event, detail)
        self._write(status, detail)
        self.transport.close()

    def _write(self, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n"
        self.transport.write(STATUS_LINE[status] + head % len(body) + b"\r\n" + body)


class _HeadTooLargeError(Exception):
    """Raised inside the parser callback to stop parsing an oversized head."""


def _observer_closed(event: str, detail: str) -> None:
    if limits.observer is not None:
        limits.observer.closed(event, detail)

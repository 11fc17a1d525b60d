"""aserve's own HTTP/1.1 server: an ``asyncio.Protocol`` on the httptools (llhttp) parser.

    server = Http1Server(app, limits, ssl=None)
    await server.start(sock)           # listening from here
    await server.stop(deadline)        # stop accepting, finish what is in flight, close

It is what uvicorn's httptools protocol is, less ASGI: a request reaches the app as an
:class:`~aserve.http.HttpRequest` whose body is read straight from the connection's buffer,
and the answer goes out as one ``write`` of status line, headers and body. Measured on these
machines with a trivial handler awaiting a future resolved from a worker thread (as a batch
does): ~15 µs of server CPU per request against uvicorn's ~31 µs (shared/MEASUREMENTS.md).

What a server facing the internet needs, and uvicorn was patched for before:

* framing is llhttp's strict mode: a request with both ``Content-Length`` and
  ``Transfer-Encoding``, two ``Content-Length`` headers, an unknown transfer coding, a bare
  LF or a malformed header is 400 and the connection closes (no request smuggling);
* headers larger than :data:`MAX_HEADER_BYTES` are 431; a request's headers must arrive
  within ``--rest_api_header_timeout_seconds`` of the connection opening or of the
  request's first byte (slowloris); an idle keep-alive connection closes after
  ``--rest_api_keepalive_seconds`` (both checked by one sweep over the connections, an eighth
  of the shorter timeout apart, rather than by a timer per request);
* a connection over ``--max_connections`` is answered 503 and closed as it opens;
* pipelined requests are answered one at a time, in order; reading pauses while one is
  queued, so a client cannot make the server buffer more than one request ahead;
* the handler starts when the headers are complete, so a refusal (overload, auth) can be
  sent before a large body is read; an answer sent before the body was read closes the
  connection rather than reading and dropping the body;
* ``Expect: 100-continue`` is answered when the handler first reads the body;
* a client that goes away cancels its request: queued, it never runs;
* the socket's write buffer is respected: the next request waits until a slow reader has
  taken the last answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import http
import ssl as _ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

import httptools

if TYPE_CHECKING:
    import socket

    from aserve.http import ConnectionLimits, HttpApp, HttpResponse

MAX_HEADER_BYTES: Final = 64 * 1024
STARTS_PER_TURN: Final = 64  # requests started per turn of the event loop, at most
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_PHRASES: Final = {s.value: f"{s.value} {s.phrase}".encode() for s in http.HTTPStatus}


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 " + _PHRASES.get(status, str(status).encode()) + b"\r\n"


def _plain(status: int, message: str, *extra: bytes) -> bytes:
    """A complete ``Connection: close`` answer the connection gives itself (no app)."""
    body = b'{"error": "' + message.encode() + b'"}\n'
    return b"".join(
        (
            _status_line(status),
            b"content-type: application/json\r\nconnection: close\r\n",
            *extra,
            b"content-length: ",
            str(len(body)).encode(),
            b"\r\n\r\n",
            body,
        )
    )


_REFUSED: Final = _plain(503, "Too many connections (--max_connections)", b"retry-after: 1\r\n")
_HEADERS_TOO_LARGE: Final = _plain(431, f"Request headers exceed {MAX_HEADER_BYTES} bytes")


class _Clock:
    """The ``Date`` header, formatted once a second."""

    __slots__ = ("_second", "_header")

    def __init__(self) -> None:
        self._second = -1
        self._header = b""

    def header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._header = b"date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._header


class Http1Server:
    """Serves one :class:`~aserve.http.HttpApp` on a bound socket."""

    def __init__(
        self, app: HttpApp, limits: ConnectionLimits, ssl: _ssl.SSLContext | None = None
    ) -> None:
        self.app = app
        self.limits = limits
        self.connections: set[_Connection] = set()
        self.clock = _Clock()
        self.turns = _Turns(STARTS_PER_TURN)
        self._ssl = ssl
        self._server: asyncio.Server | None = None
        self._stopping = False
        self._closed = asyncio.Event()
        self._closed.set()
        self._tick = _tick(limits)
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), sock=sock, ssl=self._ssl, backlog=4096
        )

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def stop(self, deadline: float) -> None:
        """Refuse new connections now; close idle connections, and busy ones after their
        current answer (``Connection: close``); close what is left at ``deadline``."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.shutdown()
        remaining = deadline - asyncio.get_running_loop().time()
        if self.connections:
            self._closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), max(remaining, 0.0))
        for connection in list(self.connections):
            connection.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def opened(self, connection: _Connection) -> None:
        self.connections.add(connection)
        if self._sweeper is None and self._tick:
            self._sweeper = asyncio.get_running_loop().call_later(self._tick, self._sweep)

    def _sweep(self) -> None:
        """Close every connection past its header or keep-alive deadline; again in a tick
        while there are connections. One sweep instead of a timer per request: arming and
        cancelling two timers per request cost ~6 µs of loop time; a deadline fires up to a
        tick late (an eighth of the shorter timeout, at most 1 s)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for connection in list(self.connections):
            connection.expire(now)
        self._sweeper = loop.call_later(self._tick, self._sweep) if self.connections else None

    def closed(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._closed.set()


def _tick(limits: ConnectionLimits) -> float:
    """How often the connections' deadlines are checked (0: never, no timeouts are set)."""
    timeouts = [t for t in (limits.header_timeout_s, limits.keepalive_s) if t > 0]
    return min(max(min(timeouts) / 8, 0.01), 1.0) if timeouts else 0.0


class _Turns:
    """At most ``per_turn`` requests start per turn of the event loop; the rest start in
    later turns, in arrival order.

    Under a flood, a turn would otherwise start a request on every connection at once
    (2,000 connections: a turn of ~0.2 s), and the answers the worker threads hand back,
    and the places they free, would wait for the end of that turn, so that workers idle
    while the loop refuses. Bounded turns keep answers flowing; refusals take what is left.
    """

    def __init__(self, per_turn: int) -> None:
        self.per_turn = per_turn
        self._started = 0
        self._waiting: collections.deque[Callable[[], None]] = collections.deque()
        self._armed = False

    def start(self, begin: Callable[[], None]) -> None:
        if self._started < self.per_turn:
            self._started += 1
            if not self._armed:
                self._arm()
            begin()
        else:
            self._waiting.append(begin)

    def _arm(self) -> None:
        self._armed = True
        asyncio.get_running_loop().call_soon(self._turn)  # runs in the next turn

    def _turn(self) -> None:
        self._armed, self._started = False, 0
        waiting = self._waiting
        while waiting and self._started < self.per_turn:
            self._started += 1
            waiting.popleft()()
        if self._started:
            self._arm()


class _Exchange:
    """One request on a connection: what the parser has delivered of it so far."""

    __slots__ = (
        "method",
        "url",
        "headers",
        "keep_alive",
        "chunks",
        "size",
        "complete",
        "too_large",
        "expect_continue",
        "reader",
    )

    def __init__(self) -> None:
        self.method = ""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False
        self.too_large = False
        self.expect_continue = False
        self.reader: asyncio.Future[None] | None = None  # a handler waiting for the body

    def wake(self) -> None:
        if self.reader is not None and not self.reader.done():
            self.reader.set_result(None)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs them one at a time, writes answers."""

    def __init__(self, server: Http1Server) -> None:
        self._server = server
        self._app = server.app
        self._limits = server.limits
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._parsing: _Exchange | None = None  # the request the parser is in
        self._queue: collections.deque[_Exchange] = collections.deque()  # headers complete
        self._current: _Exchange | None = None  # the request being answered
        self._task: asyncio.Task[None] | None = None
        self._header_bytes = 0
        # loop times (0: none) checked by the server's sweep (Http1Server._sweep)
        self._header_deadline = 0.0  # the headers of the request begun must be in by then
        self._idle_deadline = 0.0  # an idle keep-alive connection closes then
        self._closing = False  # close once the current answer is out
        self._paused = False
        self._writable: asyncio.Future[None] | None = None
        self._rejected = b""  # a refusal to send once the current answer is out

    # -- the connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        cap = self._limits.max_connections
        if (cap and len(self._server.connections) >= cap) or self._server.stopping:
            transport.write(_REFUSED)
            transport.close()
            return
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        self._server.opened(self)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:  # refused as it opened
            return
        self._clear_deadlines()
        self._closing = True
        for exchange in (self._current, self._parsing, *self._queue):
            if exchange is not None:
                exchange.wake()  # a handler reading the body finds the client gone
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the client has gone: stop its request where it is
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._server.closed(self)

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def shutdown(self) -> None:
        """Close when idle; a request in flight gets its answer first (``Connection: close``)."""
        self._closing = True
        if self._current is None and not self._queue and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._parsing is None and not self._header_deadline:
            self._arm_header_deadline()  # bytes of a new request: its headers must follow soon
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # no upgrade is served (h2c, websockets): answer the request as plain HTTP/1.1,
            # then close, since whatever follows the headers is not HTTP/1.1
            if self._parsing is not None:
                self._parsing.keep_alive = False
                self.on_message_complete()
        except httptools.HttpParserError as e:
            if isinstance(e.__cause__ or e.__context__, _HeadersTooLarge):
                self._reject(_HEADERS_TOO_LARGE)
            else:
                self._reject(_plain(400, f"Malformed HTTP request: {_reason(e)}"))

    # -- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._parsing = _Exchange()
        self._header_bytes = 0
        self._idle_deadline = 0.0
        if not self._header_deadline:
            self._arm_header_deadline()

    def on_url(self, url: bytes) -> None:
        exchange = self._parsing
        assert exchange is not None
        exchange.url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self._parsing
        assert exchange is not None
        name = name.lower()
        exchange.headers.append((name, value))
        self._count_header_bytes(len(name) + len(value) + 4)
        if name == b"expect" and value.lower() == b"100-continue":
            exchange.expect_continue = True

    def on_headers_complete(self) -> None:
        exchange = self._parsing
        assert exchange is not None
        self._header_deadline = 0.0
        exchange.method = self._parser.get_method().decode("ascii")
        exchange.keep_alive = self._parser.should_keep_alive()
        if self._current is None:
            self._run(exchange)  # starts when the loop next runs: after this chunk's body
        else:
            self._queue.append(exchange)  # pipelined: answered after the current one

    def on_body(self, body: bytes) -> None:
        exchange = self._parsing
        assert exchange is not None
        exchange.size += len(body)
        if exchange.too_large:
            return
        if exchange.size > self._app.options.max_body_bytes:
            exchange.too_large, exchange.chunks = True, []
            exchange.wake()
            return
        exchange.chunks.append(body)

    def on_message_complete(self) -> None:
        exchange = self._parsing
        assert exchange is not None
        self._parsing = None
        exchange.complete = True
        exchange.wake()
        if self._queue and not self._paused and self._transport is not None:
            self._paused = True  # one request ahead is enough: the rest waits in the socket
            self._transport.pause_reading()

    # -- requests ---------------------------------------------------------------------------

    def _run(self, exchange: _Exchange) -> None:
        self._current = exchange
        self._server.turns.start(lambda: self._begin(exchange))

    def _begin(self, exchange: _Exchange) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # the client left while the request waited for its turn
        self._task = self._loop.create_task(self._answer(exchange))

    async def _answer(self, exchange: _Exchange) -> None:
        path = exchange.url.split(b"?", 1)[0].split(b"#", 1)[0].decode("latin-1")
        response = await self._app.serve(
            exchange.method,
            path,
            exchange.headers,
            self._peer,
            lambda limit: self._read_body(exchange, limit),
            exchange.complete,
        )
        transport = self._transport
        if response is None or transport is None or transport.is_closing():
            return  # the client has gone
        close = self._closing or not exchange.keep_alive or not exchange.complete
        head = self._head(response, exchange.method, close)
        body = response.body if exchange.method != "HEAD" else b""
        if len(body) < 65536:
            transport.write(head + body)  # one send(2): on loopback a send is ~40% of a request
        else:
            transport.writelines((head, body))
        if self._writable is not None:
            await self._writable  # a slow reader: take the next request when this one is out
        self._next(close)

    def _head(self, response: HttpResponse, method: str, close: bool) -> bytes:
        parts = [_status_line(response.status), self._server.clock.header()]
        for name, value in response.headers:
            if name == b"connection":
                close = close or value.lower() == b"close"
                continue
            parts += (name, b": ", value, b"\r\n")
        if close:
            parts.append(b"connection: close\r\n")
        parts += (b"content-length: ", str(len(response.body)).encode(), b"\r\n\r\n")
        if close:
            self._closing = True
        return b"".join(parts)

    def _next(self, close: bool) -> None:
        self._current = self._task = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if close:
            if self._rejected:
                transport.write(self._rejected)
            transport.close()
            return
        if self._queue:
            self._run(self._queue.popleft())
        elif self._parsing is None and self._limits.keepalive_s > 0:
            self._idle_deadline = self._loop.time() + self._limits.keepalive_s
        if self._paused and not self._queue:
            self._paused = False
            transport.resume_reading()

    async def _read_body(self, exchange: _Exchange, limit: int) -> bytes | None:
        """The whole body; None if it is larger than ``limit`` bytes. Raises CancelledError
        if the client goes away first."""
        if not exchange.complete and not exchange.too_large:
            if exchange.expect_continue and not exchange.size and self._transport is not None:
                exchange.expect_continue = False
                self._transport.write(_CONTINUE)
            while not exchange.complete and not exchange.too_large:
                if self._transport is None or self._transport.is_closing():
                    raise asyncio.CancelledError
                exchange.reader = self._loop.create_future()
                await exchange.reader
                exchange.reader = None
        if exchange.too_large or exchange.size > limit:
            return None
        chunks = exchange.chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- limits -----------------------------------------------------------------------------

    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _HeadersTooLarge

    def _reject(self, answer: bytes) -> None:
        """Answer a request the parser refused, and close: its framing cannot be trusted."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._parsing = None
        self._queue.clear()
        self._clear_deadlines()
        self._closing = True
        current = self._current
        if current is not None and not current.complete and self._task is not None:
            # the refused request itself (llhttp checks the framing after the headers): its
            # handler would wait for a body that is not coming
            self._task.cancel()
            self._current = self._task = None
        if self._current is not None:  # an earlier request is being answered: then this
            self._rejected = answer
            transport.pause_reading()
            return
        transport.write(answer)
        transport.close()

    def _arm_header_deadline(self) -> None:
        timeout = self._limits.header_timeout_s
        if timeout > 0:
            self._header_deadline = self._loop.time() + timeout

    def expire(self, now: float) -> None:
        """Close the connection if its headers are late, or it has been idle too long."""
        transport = self._transport
        if self._header_deadline and now >= self._header_deadline:
            self._header_deadline = 0.0
            if self._current is None and transport is not None:
                transport.close()
        elif self._idle_deadline and now >= self._idle_deadline:
            self._idle_deadline = 0.0
            if transport is not None:
                transport.close()

    def _clear_deadlines(self) -> None:
        self._header_deadline = self._idle_deadline = 0.0


class _HeadersTooLarge(Exception):
    """Raised from a parser callback: llhttp stops and reports it as a callback error."""


def _reason(error: httptools.HttpParserError) -> str:
    return str(error).replace('"', "'").replace("\\", "/")

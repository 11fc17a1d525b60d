"""The fallback HTTP transport (``--rest_server=uvicorn``): uvicorn with the httptools parser,
serving :class:`~aserve.http.HttpApp` through a plain ASGI adapter.

uvicorn is mature and widely deployed; aserve's own HTTP/1.1 server (:mod:`aserve.http1`)
costs half its CPU per request. Both give the app the same request and send the same
answer; uvicorn's protocol is extended here with what aserve's own has:

* a connection over ``--max_connections`` is answered 503 and closed as it opens;
* a request's headers must arrive within ``--rest_api_header_timeout_seconds`` of the
  connection opening or of the request's first byte (slowloris, idle connections);
* when a client goes away, its request is cancelled: queued, it never runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as _ssl
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aserve.http import ConnectionLimits, HttpApp, TlsOptions

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_REFUSED: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: 54\r\n\r\n"
    b'{"error": "Too many connections (--max_connections)"}\n'
)


class AsgiAdapter:
    """The app as an ASGI application."""

    def __init__(self, app: HttpApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; websockets are not served
        client = scope.get("client")
        raw = scope.get("raw_path")  # TF Serving routes on the still-percent-encoded path
        response = await self._app.serve(
            scope["method"],
            raw.decode("latin-1") if raw else scope["path"],
            scope["headers"],
            f"{client[0]}:{client[1]}" if client else "",
            lambda limit: _read_body(receive, limit),
        )
        if response is None:
            return
        headers = [(b"content-length", str(len(response.body)).encode()), *response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


class UvicornServer:
    """uvicorn serving the app on a bound socket."""

    def __init__(self, app: HttpApp, limits: ConnectionLimits, tls: TlsOptions | None) -> None:
        ssl: dict[str, Any] = {}
        if tls is not None:
            ssl = {"ssl_certfile": tls.certfile, "ssl_keyfile": tls.keyfile}
            if tls.client_ca_file:
                ssl |= {"ssl_ca_certs": tls.client_ca_file, "ssl_cert_reqs": _ssl.CERT_REQUIRED}
        protocol = type("Protocol", (_Protocol,), {"limits": limits})
        config = uvicorn.Config(
            AsgiAdapter(app),
            http=protocol,
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_keep_alive=limits.keepalive_s,  # type: ignore[arg-type]
            **ssl,
        )
        self._server = _Uvicorn(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self, sock: socket.socket) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raises what stopped it

    async def stop(self, deadline: float) -> None:
        for server in self._server.servers:
            server.close()  # at once: uvicorn itself notices should_exit only every 0.1 s
        for connection in list(self._server.server_state.connections):
            connection.shutdown()
        remaining = deadline - asyncio.get_running_loop().time()
        self._server.config.timeout_graceful_shutdown = max(remaining, 0.0)  # type: ignore[assignment]
        self._server.should_exit = True
        if self._task is not None:
            await self._task


class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with aserve's connection limits."""

    limits: ConnectionLimits = ConnectionLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        cap = self.limits.max_connections
        if cap and len(self.connections) >= cap:
            transport.write(_REFUSED)
            transport.close()
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:  # refused in connection_made
            return
        self._cancel_header_timer()
        unanswered = self.cycle is not None and not self.cycle.response_complete
        super().connection_lost(exc)
        if unanswered and self._task is not None and not self._task.done():
            self._task.cancel()  # the client has gone: stop its request where it is

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # uvicorn's own, keeping the task (uvicorn >= 0.54 starts each request here)
        task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        self._task = task

    def _arm_header_timer(self) -> None:
        timeout = self.limits.header_timeout_s
        if timeout > 0:
            self._header_timer = self.loop.call_later(timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: aserve owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

"""The HTTP front end: one listener serving the routes of every HTTP protocol.

    app = HttpApp(service, routes=[Route("/v1/", rest_api.handle, prefix=True)], options=...)
    front_end = HttpFrontEnd(app, sock)
    await front_end.start()
    ...
    await front_end.stop(deadline)          # stop accepting, drain until the deadline

For every request the app opens the request's record (request id from ``x-request-id`` or
a new one, the peer), finds its route (an exact path, else a path prefix, compared without
case as TF Serving does), awaits its handler, renders a :class:`~aserve.errors.ServingError`
as ``{"error": "<message>"}`` with its HTTP status, adds the CORS headers when enabled,
hands the finished record to the service's observers and answers. ``OPTIONS`` is a CORS
preflight on every path (TF Serving answers it regardless of the CORS flag). Protocol
modules (TF Serving's REST API, the metrics page) only translate their requests.

The listener is uvicorn with the httptools parser on the running loop, and the app is plain
ASGI: measured on uvicorn, a trivial endpoint answers ~16,700 requests/s through
Starlette's request/response layer and ~26,500 as plain ASGI (~22 µs a request), and
Starlette's router took ~4% of the loop under load; routes here are a dict and a short list.
uvicorn rather than the design card's hypercorn, because on these 2-core machines a trivial
endpoint answers ~4,500 requests/s on hypercorn and ~16,700 on uvicorn+httptools.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl as _ssl
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aserve import tensors
from aserve.errors import Code, ServingError, http_status_of, invalid_argument
from aserve.records import RequestRecord
from aserve.service import Service
from aserve.tensors import costs

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON: Final = b"application/json"
TEXT: Final = b"text/plain; charset=utf-8"
_ORIGIN: Final = re.compile(r"https?://.*")
_CORS_HEADERS: Final = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"Content-Type"),
]


@dataclass(frozen=True, slots=True)
class HttpOptions:
    max_body_bytes: int = 64 * 1024 * 1024  # --rest_api_max_body_bytes
    cors: bool = False  # --rest_api_enable_cors_support


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0  # --rest_api_header_timeout_seconds
    keepalive_s: float = 75.0  # --rest_api_keepalive_seconds
    max_connections: int = 0  # --max_connections; 0: no cap


class HttpResponse:
    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(
        self,
        body: bytes,
        *,
        status: int = 200,
        content_type: bytes = JSON,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers

    @classmethod
    def error(cls, error: ServingError) -> HttpResponse:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers]
        return cls(tensors.error_json(error.message), status=http_status_of(error), headers=headers)


class HttpRequest:
    """One request as handlers see it: method, raw path, headers, body, and its record."""

    __slots__ = (
        "method",
        "path",
        "record",
        "body_read",
        "_scope",
        "_receive",
        "_service",
        "_limit",
    )

    def __init__(self, scope: Scope, receive: Receive, record: RequestRecord, app: HttpApp) -> None:
        self.method: str = scope["method"]
        raw = scope.get("raw_path")  # TF Serving routes on the still-percent-encoded path
        self.path: str = raw.decode("latin-1") if raw else scope["path"]
        self.record = record
        self.body_read = False
        self._scope = scope
        self._receive = receive
        self._service = app.service
        self._limit = app.options.max_body_bytes

    def header(self, name: bytes) -> bytes:
        """The value of header ``name`` (lower case), b"" if absent."""
        return _header(self._scope, name)

    async def body(self) -> bytes:
        """The whole body, gunzipped if sent with ``Content-Encoding: gzip``; 413 if too large."""
        self.body_read = True
        declared = self.header(b"content-length")
        if declared.isdigit() and int(declared) > self._limit:
            raise self._too_large()
        chunks, size = [], 0
        while True:
            message = await self._receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        self.record.bytes_in = len(body)
        if self.header(b"content-encoding").lower() == b"gzip":
            cost = len(body) * costs.GUNZIP_US_PER_BYTE
            body = await self._service.transcode(cost, self._gunzip, body)
        return body

    def _gunzip(self, body: bytes) -> bytes:
        """Inflate at most the body limit: a gzip bomb stops there (413), having cost that."""
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = decompressor.decompress(body, self._limit + 1)
        except zlib.error as e:
            raise invalid_argument(f"Failed to decompress gzip request body: {e}") from None
        if len(data) > self._limit or decompressor.unconsumed_tail:
            raise self._too_large("Decompressed request body")
        return data

    def _too_large(self, what: str = "Request body") -> ServingError:
        return ServingError(
            Code.RESOURCE_EXHAUSTED,
            f"{what} exceeds the limit of {self._limit} bytes (--rest_api_max_body_bytes)",
            http=413,
            refused="too_large",
        )


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    handler: Handler
    prefix: bool = False  # match every path that starts with ``path`` (without case)
    access: str = "predict"  # who may call it: aserve.auth.ACCESS_LEVELS


class HttpApp:
    """The ASGI application: records, routes, authorizes, renders errors, adds headers."""

    def __init__(self, service: Service, routes: Sequence[Route], options: HttpOptions) -> None:
        self.service = service
        self.options = options
        self._exact = {r.path: r for r in routes if not r.prefix}
        self._prefixes = [(r.path.lower(), r) for r in routes if r.prefix]
        self._extra_headers = _CORS_HEADERS if options.cors else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; websockets are not served
        service = self.service
        client = scope.get("client")
        record = service.begin(
            "rest",
            request_id=_header(scope, b"x-request-id").decode("latin-1"),
            peer=f"{client[0]}:{client[1]}" if client else "",
        )
        request = HttpRequest(scope, receive, record, self)
        try:
            response = await self._respond(request)
        except BaseException as e:
            error = service.failed(record, e)
            if error.code is Code.CANCELLED:  # the client has gone: nobody to answer
                record.http_status = http_status_of(error)
                service.finish(record)
                return
            response = HttpResponse.error(error)
            if error.refused and not request.body_read:
                # refused unread: close rather than read a body only to drop it (a flood of
                # retried 100 KB requests otherwise keeps the loop busy reading them)
                response.headers = [*response.headers, (b"connection", b"close")]
        record.http_status = response.status
        record.bytes_out = len(response.body)
        service.finish(record)  # before answering: a client may read the metrics right after
        await self._send(send, response, record.request_id)

    async def _respond(self, request: HttpRequest) -> HttpResponse:
        if request.method == "OPTIONS":
            request.record.api = "preflight"
            origin = request.header(b"origin").decode("latin-1")
            status = 200 if _ORIGIN.fullmatch(origin) else 400
            return HttpResponse(b"", status=status, content_type=b"")
        route = self._route(request.path)
        self.service.authorize(request.record, route.access, request.header(b"authorization"))
        return await route.handler(request)

    def _route(self, path: str) -> Route:
        route = self._exact.get(path)
        if route is not None:
            return route
        lowered = path.lower()
        for prefix, route in self._prefixes:
            if lowered.startswith(prefix):
                return route
        return _UNKNOWN

    async def _send(self, send: Send, response: HttpResponse, request_id: str) -> None:
        headers = [
            (b"content-length", str(len(response.body)).encode()),
            (b"x-request-id", request_id.encode("latin-1", "replace")),
            *self._extra_headers,
            *response.headers,
        ]
        if response.content_type:
            headers.append((b"content-type", response.content_type))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


async def _not_found(request: HttpRequest) -> HttpResponse:
    raise ServingError(Code.NOT_FOUND, f"Not found: {request.method} {request.path}")


_UNKNOWN: Final = Route("", _not_found)


@dataclass(frozen=True, slots=True)
class TlsOptions:
    certfile: str
    keyfile: str
    client_ca_file: str = ""  # clients must present a certificate signed by it (mTLS)


class HttpFrontEnd:
    """The REST listener: uvicorn (httptools parser) serving one app on a bound socket.

    The socket is bound when built (so a taken port fails start-up at once) and listens only
    from :meth:`start`: before that, connections are refused, not queued.
    """

    def __init__(
        self,
        app: HttpApp,
        sock: socket.socket,
        *,
        tls: TlsOptions | None = None,
        limits: ConnectionLimits = ConnectionLimits(),
    ) -> None:
        ssl: dict[str, Any] = {}
        if tls is not None:
            ssl = {"ssl_certfile": tls.certfile, "ssl_keyfile": tls.keyfile}
            if tls.client_ca_file:
                ssl |= {"ssl_ca_certs": tls.client_ca_file, "ssl_cert_reqs": _ssl.CERT_REQUIRED}
        protocol = type("Protocol", (_Protocol,), {"limits": limits})
        config = uvicorn.Config(
            app,
            http=protocol,
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_keep_alive=limits.keepalive_s,  # type: ignore[arg-type]
            **ssl,
        )
        self._server = _Uvicorn(config)
        self._socket = sock
        self._task: asyncio.Task[None] | None = None
        host, self.port = sock.getsockname()[:2]
        self.endpoint = f"REST{'S' if tls else ''} on {host}:{self.port}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raises what stopped it

    async def stop(self, deadline: float) -> None:
        """Refuse new connections now; close keep-alive connections after their current
        response (``Connection: close``); let requests in flight finish until ``deadline``
        (loop time)."""
        for server in self._server.servers:
            server.close()  # at once: uvicorn itself notices should_exit only every 0.1 s
        for connection in list(self._server.server_state.connections):
            connection.shutdown()
        remaining = deadline - asyncio.get_running_loop().time()
        self._server.config.timeout_graceful_shutdown = max(remaining, 0.0)  # type: ignore[assignment]
        self._server.should_exit = True
        if self._task is not None:
            await self._task


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``, not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by connections
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


_REFUSED: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: 54\r\n\r\n"
    b'{"error": "Too many connections (--max_connections)"}\n'
)


class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with what a server facing the internet needs more:

    * a connection over ``--max_connections`` is answered 503 and closed as it opens;
    * a request's headers must arrive within ``--rest_api_header_timeout_seconds`` of the
      connection opening or of the request's first byte (slowloris, idle connections);
    * when a client goes away, its request is cancelled: queued, it never runs.
    """

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


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return b""

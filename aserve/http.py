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

Transports only carry bytes: aserve's own HTTP/1.1 server (:mod:`aserve.http1`, the
default) or uvicorn (:mod:`aserve.asgi`, ``--rest_server=uvicorn``) hand the app a request's
method, raw path, headers and a body reader, and write the answer it returns. Routes here
are a dict and a short list (Starlette's router took ~4% of the loop under load, and its
Request/Response layer ~20 µs a request). Why aserve's own server and not the design
card's hypercorn: a trivial endpoint answers ~4,500 requests/s on hypercorn, ~16,700 on
uvicorn+httptools with Starlette and ~32,800 on uvicorn as plain ASGI on these 2-core
machines, and aserve's own protocol costs half of uvicorn's CPU per request (README,
"Front ends").
"""

from __future__ import annotations

import re
import socket
import ssl as _ssl
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from aserve import tensors
from aserve.errors import Code, ServingError, http_status_of, invalid_argument
from aserve.http1 import Http1Server
from aserve.ids import ServableRequest
from aserve.records import RequestRecord
from aserve.service import ADMIT_BEFORE_DECODING_BYTES, Service
from aserve.tensors import costs

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


BodyReader = Callable[[int], Awaitable[bytes | None]]  # the whole body; None if over the limit


class HttpRequest:
    """One request as handlers see it: method, raw path, headers, body, and its record."""

    __slots__ = (
        "method",
        "path",
        "headers",
        "record",
        "body_read",
        "body_arrived",
        "_read",
        "_service",
        "_limit",
    )

    def __init__(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
        read: BodyReader,
        record: RequestRecord,
        app: HttpApp,
        body_arrived: bool = False,
    ) -> None:
        self.method = method
        self.path = path  # still percent-encoded: TF Serving routes on the raw path
        self.headers = headers  # names in lower case
        self.record = record
        self.body_read = False
        self.body_arrived = body_arrived  # the whole body is in memory already
        self._read = read
        self._service = app.service
        self._limit = app.options.max_body_bytes

    def header(self, name: bytes) -> bytes:
        """The value of header ``name`` (lower case), b"" if absent."""
        for key, value in self.headers:
            if key == name:
                return value
        return b""

    def admit(self, spec: ServableRequest) -> None:
        """Hold a place in the queue of the model ``spec`` names before the body is read and
        parsed, or refuse the request now (503) if there is none; a small body already here
        is parsed first, and its place taken after (see ADMIT_BEFORE_DECODING_BYTES)."""
        size = self._declared_size()
        if not self.body_arrived or size is None or size > ADMIT_BEFORE_DECODING_BYTES:
            self._service.admit(self.record, spec)

    def _declared_size(self) -> int | None:
        """The body's ``Content-Length``; None when it is not given (chunked)."""
        declared = self.header(b"content-length")
        return int(declared) if declared.isdigit() else None

    async def body(self) -> bytes:
        """The whole body, gunzipped if sent with ``Content-Encoding: gzip``; 413 if too large."""
        self.body_read = True
        declared = self._declared_size()
        if declared is not None and declared > self._limit:
            raise self._too_large()
        body = await self._read(self._limit)
        if body is None:
            raise self._too_large()
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
    """What every HTTP request goes through, whatever the transport: records, routes,
    authorizes, renders errors, adds headers."""

    def __init__(self, service: Service, routes: Sequence[Route], options: HttpOptions) -> None:
        self.service = service
        self.options = options
        self._exact = {r.path: r for r in routes if not r.prefix}
        self._prefixes = [(r.path.lower(), r) for r in routes if r.prefix]
        self._extra_headers = _CORS_HEADERS if options.cors else []

    async def serve(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
        peer: str,
        read: BodyReader,
        body_arrived: bool = False,
    ) -> HttpResponse | None:
        """The answer to one request, its headers complete (``content-length`` is the
        transport's to add); None if the client has gone."""
        service = self.service
        record = service.begin("rest", request_id=_header(headers, b"x-request-id"), peer=peer)
        request = HttpRequest(method, path, headers, read, record, self, body_arrived)
        try:
            response = await self._respond(request)
        except BaseException as e:
            error = service.failed(record, e)
            if error.code is Code.CANCELLED:  # the client has gone: nobody to answer
                record.http_status = http_status_of(error)
                service.finish(record)
                return None
            response = HttpResponse.error(error)
            if error.refused and not request.body_read:
                # refused unread: close rather than read a body only to drop it (a flood of
                # retried 100 KB requests otherwise keeps the loop busy reading them)
                response.headers = [*response.headers, (b"connection", b"close")]
        record.http_status = response.status
        record.bytes_out = len(response.body)
        service.finish(record)  # before answering: a client may read the metrics right after
        response.headers = [
            (b"x-request-id", record.request_id.encode("latin-1", "replace")),
            *self._extra_headers,
            *response.headers,
        ]
        if response.content_type:
            response.headers.append((b"content-type", response.content_type))
        return response

    def _respond(self, request: HttpRequest) -> Awaitable[HttpResponse]:
        """The handler's coroutine (handed back, not awaited: one frame less to resume)."""
        if request.method == "OPTIONS":
            return _preflight(request)
        route = self._route(request.path)
        self.service.authorize(request.record, route.access, request.header(b"authorization"))
        return route.handler(request)

    def _route(self, path: str) -> Route:
        route = self._exact.get(path)
        if route is not None:
            return route
        lowered = path.lower()
        for prefix, route in self._prefixes:
            if lowered.startswith(prefix):
                return route
        return _UNKNOWN


async def _preflight(request: HttpRequest) -> HttpResponse:
    request.record.api = "preflight"
    origin = request.header(b"origin").decode("latin-1")
    status = 200 if _ORIGIN.fullmatch(origin) else 400
    return HttpResponse(b"", status=status, content_type=b"")


async def _not_found(request: HttpRequest) -> HttpResponse:
    raise ServingError(Code.NOT_FOUND, f"Not found: {request.method} {request.path}")


_UNKNOWN: Final = Route("", _not_found)


@dataclass(frozen=True, slots=True)
class TlsOptions:
    certfile: str
    keyfile: str
    client_ca_file: str = ""  # clients must present a certificate signed by it (mTLS)

    def context(self) -> _ssl.SSLContext:
        context = _ssl.create_default_context(_ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile, self.keyfile)
        if self.client_ca_file:
            context.load_verify_locations(self.client_ca_file)
            context.verify_mode = _ssl.CERT_REQUIRED
        return context


class HttpFrontEnd:
    """The REST listener: one app on a bound socket, served by aserve's own HTTP/1.1 server
    (``--rest_server=aserve``) or by uvicorn (``--rest_server=uvicorn``).

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
        server: str = "aserve",
    ) -> None:
        if server == "uvicorn":
            from aserve.asgi import UvicornServer

            self._server: Transport = UvicornServer(app, limits, tls)
        else:
            self._server = Http1Server(app, limits, ssl=None if tls is None else tls.context())
        self._socket = sock
        host, self.port = sock.getsockname()[:2]
        self.endpoint = f"REST{'S' if tls else ''} on {host}:{self.port} ({server})"

    async def start(self) -> None:
        await self._server.start(self._socket)

    async def stop(self, deadline: float) -> None:
        """Refuse new connections now; close keep-alive connections after their current
        response (``Connection: close``); let requests in flight finish until ``deadline``
        (loop time)."""
        await self._server.stop(deadline)


class Transport(Protocol):
    async def start(self, sock: socket.socket) -> None: ...

    async def stop(self, deadline: float) -> None: ...


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


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return ""

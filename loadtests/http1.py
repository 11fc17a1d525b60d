"""A minimal keep-alive HTTP/1.1 client for load generation: one request in flight per
connection, the request bytes built once.

It exists because the load generator shares two cores with the server: an
``asyncio.Protocol`` that writes a pre-built request and parses only the status line,
the headers it needs and the body (``Content-Length`` or chunked) costs a fraction of
what a general-purpose client does.

    connection = await Connection.open(endpoint, build_post(endpoint, body))
    response = await connection.exchange()   # Response(status=200, body=b'...')
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from loadtests.targets import Endpoint


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    close: bool = False


def build_post(
    endpoint: Endpoint,
    body: bytes,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """The complete request bytes for a keep-alive POST of ``body`` (``headers``: more)."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"POST {endpoint.path} HTTP/1.1\r\n"
        f"Host: {endpoint.authority}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        "\r\n"
    )
    return head.encode("latin-1") + body


def parse_response(buffer: bytes | bytearray) -> tuple[Response, int] | None:
    """One complete response at the start of ``buffer`` and the bytes it used, or None
    while it is incomplete. Raises ValueError on a malformed status line or framing."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    status_line, *lines = bytes(buffer[:end]).split(b"\r\n")
    status = _status(status_line)
    headers = dict(_header(line) for line in lines)
    close = headers.get(b"connection", b"").lower() == b"close"
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        chunked = _dechunk(buffer, end + 4)
        if chunked is None:
            return None
        body, used = chunked
        return Response(status, body, close), used
    length = int(headers.get(b"content-length", b"0"))
    if len(buffer) < end + 4 + length:
        return None
    return Response(status, bytes(buffer[end + 4 : end + 4 + length]), close), end + 4 + length


def _status(line: bytes) -> int:
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"bad status line {line[:100]!r}")
    return int(parts[1])


def _header(line: bytes) -> tuple[bytes, bytes]:
    name, _, value = line.partition(b":")
    return name.strip().lower(), value.strip()


def _dechunk(buffer: bytes | bytearray, start: int) -> tuple[bytes, int] | None:
    body = bytearray()
    while True:
        eol = buffer.find(b"\r\n", start)
        if eol < 0:
            return None
        size = int(bytes(buffer[start:eol]).split(b";")[0], 16)
        if len(buffer) < eol + 2 + size + 2:
            return None
        if size == 0:  # no trailers expected: the last chunk ends with an empty line
            return bytes(body), eol + 4
        body += buffer[eol + 2 : eol + 2 + size]
        start = eol + 2 + size + 2


class Connection(asyncio.Protocol):
    """One keep-alive connection; :meth:`exchange` sends the pre-built request and waits
    for its response. Not for concurrent use: one exchange at a time."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self.closed = False

    @classmethod
    async def open(cls, endpoint: Endpoint, request: bytes) -> Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            lambda: cls(request), endpoint.host, endpoint.port
        )
        return connection

    async def exchange(self) -> Response:
        """Send the request; the response, or ConnectionError if the connection breaks."""
        if self.closed or self._transport is None:
            raise ConnectionError("connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(self._request)
        return await self._waiter

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            parsed = parse_response(self._buffer)
        except ValueError as e:
            self.close()
            waiter.set_exception(ConnectionError(f"bad response: {e}"))
            return
        if parsed is not None:
            response, used = parsed
            del self._buffer[:used]
            if response.close:
                self.close()
            waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(
                ConnectionError(f"connection lost: {exc or 'closed by peer'}")
            )

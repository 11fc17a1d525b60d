"""HTTP/1.1 framing on the wire, byte by byte, against both REST transports: aserve's own
server (the default) and uvicorn (``--rest_server=uvicorn``), each a real server process."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from support import AserveProcess

EXAMPLE = ("--model_name=m", "--model_base_path=examples/models/half_plus_two")
BODY = b'{"instances": [1.0, 2.0]}'
ANSWER = {"predictions": [2.5, 3.0]}


@pytest.fixture(scope="module", params=["aserve", "uvicorn"])
def server(request: pytest.FixtureRequest) -> Iterator[AserveProcess]:
    args = (*EXAMPLE, f"--rest_server={request.param}", "--rest_api_header_timeout_seconds=2")
    with AserveProcess(*args) as s:
        s.wait_until_listening()
        yield s


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def get(path: str, *extra: str, version: str = "1.1") -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/{version}", "Host: x", *extra]) + "\r\n\r\n").encode()


class Wire:
    """A raw connection that reads whole responses (Content-Length framed)."""

    def __init__(self, server: AserveProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def closed(self) -> bool:
        """True once the server has closed the connection (after what was buffered)."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return True

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed; buffered {self.buffer!r}")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def wire(server: AserveProcess) -> Iterator[Wire]:
    connection = Wire(server)
    yield connection
    connection.close()


def test_pipelined_requests_are_answered_in_order(wire: Wire) -> None:
    wire.send(
        get("/v1/models/m")
        + post("/v1/models/m:predict", BODY)
        + get("/v1/models/nope")
        + post("/v1/models/m:predict", b'{"instances": [4.0]}')
    )
    statuses = [wire.response() for _ in range(4)]
    assert [s for s, _, _ in statuses] == [200, 200, 404, 200]
    assert json.loads(statuses[1][2]) == ANSWER
    assert json.loads(statuses[3][2]) == {"predictions": [4.0]}


def test_a_request_sent_byte_by_byte_is_answered(wire: Wire) -> None:
    for byte in post("/v1/models/m:predict", BODY):
        wire.send(bytes([byte]))
    status, _, body = wire.response()
    assert (status, json.loads(body)) == (200, ANSWER)


def test_chunked_bodies_and_keep_alive(wire: Wire) -> None:
    chunked = (
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)
    )
    for _ in range(3):
        wire.send(chunked)
        status, headers, body = wire.response()
        assert (status, json.loads(body)) == (200, ANSWER)
        assert headers.get("connection", "") != "close"


def test_expect_100_continue_is_answered_before_the_body(wire: Wire) -> None:
    head = post("/v1/models/m:predict", b"", "Expect: 100-continue")
    wire.send(head.replace(b"Content-Length: 0", b"Content-Length: %d" % len(BODY)))
    status, _, _ = wire.response()
    assert status == 100
    wire.send(BODY)
    status, _, body = wire.response()
    assert (status, json.loads(body)) == (200, ANSWER)


def test_http_1_0_closes_after_the_answer(wire: Wire) -> None:
    wire.send(get("/v1/models/m", version="1.0"))
    status, _, _ = wire.response()
    assert status == 200
    assert wire.closed()


@pytest.mark.parametrize(
    "smuggled",
    [
        # both framings: which one the next hop believes decides where the next request starts
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/models/m HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Content-Length: 40\r\n\r\nabc",
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
        b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
        b"GET /v1/models/m HTTP/1.1\nHost: x\n\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS to a plain port
    ],
    ids=["cl-and-te", "two-cl", "te-obfuscated", "space-before-colon", "bare-lf", "tls"],
)
def test_ambiguous_framing_is_400_and_closes(wire: Wire, smuggled: bytes) -> None:
    wire.send(smuggled)
    status, _, body = wire.response()
    assert status == 400, body
    assert wire.closed()  # nothing after it is read as a request


def test_oversized_headers_are_refused(server: AserveProcess, wire: Wire) -> None:
    wire.send(get("/v1/models/m", "X-Big: " + "a" * 200_000))  # limit: 64 KiB
    try:
        status, _, _ = wire.response()
    except ConnectionError:
        status = 0
    if "--rest_server=uvicorn" in server.process.args:
        assert status == 200  # uvicorn has no limit on header size (README, "Front ends")
    else:
        assert status == 431
        assert wire.closed()


def test_headers_sent_too_slowly_are_cut_off(wire: Wire) -> None:
    wire.send(b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    wire.sock.settimeout(10)
    assert wire.closed()
    assert 1.5 < time.monotonic() - started < 8


def test_a_client_leaving_mid_body_harms_nobody(server: AserveProcess) -> None:
    for _ in range(20):
        leaving = Wire(server)
        leaving.send(post("/v1/models/m:predict", b"x" * 1000)[:-500])
        leaving.close()
    wire = Wire(server)
    wire.send(post("/v1/models/m:predict", BODY))
    status, _, body = wire.response()
    assert (status, json.loads(body)) == (200, ANSWER)
    wire.close()

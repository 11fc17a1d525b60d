"""Do large valid requests stall everyone else? One big request beside a stream of tiny ones.

    python -m loadtests.bigbody --url http://127.0.0.1:8501 --target 127.0.0.1:8500 --pid PID

Against a server serving half_plus_two as ``half_plus_two``: 4 clients send one-example REST
requests all along; meanwhile, one at a time, a big request is sent, and the report gives how
long it took, the longest any tiny request waited while it ran (the stall), and the server's
peak RSS:

* a valid 64 MiB JSON body (``{"instances": [1.0, 1.0, ...]}``, ~16.8M floats);
* a gRPC string tensor of 20 million entries in ``tensor_content``;
* a 100 MB gRPC message (25M floats in ``tensor_content``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loadtests import http1
from loadtests.targets import rest_endpoint


@dataclass(frozen=True)
class BigResult:
    what: str
    answer: str
    seconds: float
    tiny_stall_ms: float  # the longest tiny request while the big one ran
    tiny_p50_ms: float  # tiny requests' median in the same window
    peak_rss_mb: float

    def row(self) -> str:
        cells = [
            self.what,
            self.answer,
            f"{self.seconds:.2f}",
            f"{self.tiny_stall_ms:,.0f}",
            f"{self.tiny_p50_ms:.2f}",
            f"{self.peak_rss_mb:,.0f}",
        ]
        return "| " + " | ".join(cells) + " |"


HEADER = (
    "| big request | answer | its time s | longest tiny request meanwhile ms "
    "| tiny p50 ms | peak RSS MiB |\n|---|---|---|---|---|---|"
)


class _Tiny(threading.Thread):
    """Closed-loop tiny REST requests; latencies with their start times."""

    def __init__(self, url: str, clients: int = 4) -> None:
        super().__init__(daemon=True)
        self.url, self.clients = url, clients
        self.samples: list[tuple[float, float]] = []  # (start, latency s)
        self.stop = threading.Event()

    def run(self) -> None:
        import uvloop

        uvloop.run(self._main())

    async def _main(self) -> None:
        endpoint = rest_endpoint(self.url)
        request = http1.build_post(endpoint, b'{"instances": [1.0]}')

        async def client() -> None:
            connection = await http1.Connection.open(endpoint, request)
            while not self.stop.is_set():
                start = time.perf_counter()
                await connection.exchange()
                self.samples.append((start, time.perf_counter() - start))

        await asyncio.gather(*(client() for _ in range(self.clients)))


class _PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            kib = next(
                (int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:")), 0
            )
            self.peak = max(self.peak, kib / 1024)
            time.sleep(0.05)


def _rest_big(url: str) -> str:
    import urllib.request

    count = (64 * 1024 * 1024 - 20) // 4  # "1.0," per value
    body = b'{"instances": [' + b"1.0," * (count - 1) + b"1.0]}"
    request = urllib.request.Request(f"{url}/v1/models/half_plus_two:predict", data=body)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"


def _grpc_big(target: str, tensor: object) -> str:
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tensor)  # type: ignore[arg-type]
    options = [
        ("grpc.max_send_message_length", 2**31 - 1),
        ("grpc.max_receive_message_length", 2**31 - 1),
    ]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            stub.Predict(request, timeout=300)
            return "OK"
        except grpc.RpcError as e:
            return e.code().name


def _strings() -> object:
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    count = 20_000_000
    content = b"\x01" * count + b"a" * count  # varint lengths, then the bytes
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=count)]
    )
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_shape=shape, tensor_content=content
    )


def _floats() -> object:
    import numpy as np
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    count = 25_000_000
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=count)]
    )
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=shape,
        tensor_content=np.ones(count, np.float32).tobytes(),
    )


def measure(what: str, send: Callable[[], str], url: str, pid: int) -> BigResult:
    tiny = _Tiny(f"{url}/v1/models/half_plus_two:predict")
    rss = _PeakRss(pid)
    tiny.start()
    if pid:
        rss.start()
    time.sleep(1.0)
    start = time.perf_counter()
    answer = send()
    end = time.perf_counter()
    time.sleep(0.5)
    tiny.stop.set()
    rss.stop.set()
    during = sorted(lat for t0, lat in tiny.samples if t0 + lat >= start and t0 <= end)
    return BigResult(
        what=what,
        answer=answer,
        seconds=end - start,
        tiny_stall_ms=(during[-1] * 1000) if during else math.inf,
        tiny_p50_ms=during[len(during) // 2] * 1000 if during else math.nan,
        peak_rss_mb=rss.peak if pid else math.nan,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8501")
    parser.add_argument("--target", default="127.0.0.1:8500")
    parser.add_argument("--pid", type=int, default=0)
    args = parser.parse_args(argv)
    cases: list[tuple[str, Callable[[], str]]] = [
        ("REST, a valid 64 MiB JSON body", lambda: _rest_big(args.url)),
        ("gRPC, 20M strings in tensor_content", lambda: _grpc_big(args.target, _strings())),
        ("gRPC, a 100 MB message (25M floats)", lambda: _grpc_big(args.target, _floats())),
    ]
    print(HEADER)
    for what, send in cases:
        print(measure(what, send, args.url, args.pid).row(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

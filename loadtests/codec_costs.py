"""What aserve's codec steps cost per byte, in process: the rates in aserve/tensors/costs.py.

    python -m loadtests.codec_costs

Times each step the service may move off the event loop (REST JSON decode and encode, gRPC
parse/decode and encode, gzip, metadata JSON) on a few sizes, and the round trip of a codec
thread hop, and prints µs per byte next to the rate aserve uses.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable

import numpy as np
import uvloop

from aserve import tensors
from aserve.pool import WorkerPool
from aserve.signatures import TensorSpec
from aserve.tensors import costs


def _per_call(call: Callable[[], object], budget_s: float = 0.5) -> float:
    """µs per call: the best of a few batches within ``budget_s``."""
    call()
    best, end = float("inf"), time.perf_counter() + budget_s
    while time.perf_counter() < end:
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best * 1e6


def rows() -> list[tuple[str, int, float, float]]:
    from tensorflow_serving.apis import predict_pb2

    out = []
    spec = {"x": TensorSpec("x", "x:0", 1)}
    for n in (1_000, 100_000):
        rows_ = max(n // 28, 1)
        values = np.random.rand(rows_, 28).astype(np.float32)
        body = json.dumps({"instances": values.tolist()}).encode()

        def decode(body: bytes = body) -> object:
            return tensors.predict_inputs_from_json(tensors.parse_json(body), spec)

        used = costs.JSON_DECODE_US_PER_BYTE
        out.append(("REST body -> arrays", len(body), _per_call(decode), used))
        encode = lambda v=values: tensors.predict_outputs_to_json({"y": v}, True)  # noqa: E731
        out.append(
            ("arrays -> REST JSON", values.nbytes, _per_call(encode), costs.JSON_ENCODE_US_PER_BYTE)
        )
        request = predict_pb2.PredictRequest()
        tensors.array_to_proto(values, as_content=False, into=request.inputs["x"])
        data = request.SerializeToString()

        def parse(data: bytes = data) -> object:
            return tensors.array_from_proto(predict_pb2.PredictRequest.FromString(data).inputs["x"])

        out.append(
            ("gRPC request -> arrays", len(data), _per_call(parse), costs.PROTO_DECODE_US_PER_BYTE)
        )

        def answer(v: np.ndarray = values) -> bytes:
            response = predict_pb2.PredictResponse()
            tensors.array_to_proto(v, as_content=False, into=response.outputs["y"])
            return response.SerializeToString()

        out.append(
            (
                "arrays -> gRPC answer",
                values.nbytes,
                _per_call(answer),
                costs.PROTO_ENCODE_US_PER_BYTE,
            )
        )
        packed = gzip.compress(body)
        out.append(
            (
                "gunzip",
                len(packed),
                _per_call(lambda p=packed: gzip.decompress(p)),
                costs.GUNZIP_US_PER_BYTE,
            )
        )
    return out


async def _hop_us() -> float:
    pool = WorkerPool(workers=1)
    try:
        for _ in range(100):
            await pool.codec(int)
        start = time.perf_counter()
        for _ in range(2000):
            await pool.codec(int)
        return (time.perf_counter() - start) / 2000 * 1e6
    finally:
        pool.shutdown()


def main() -> None:
    print("| step | bytes | µs | µs/byte measured | µs/byte used |")
    print("|---|---|---|---|---|")
    for what, size, us, used in rows():
        print(f"| {what} | {size:,} | {us:,.1f} | {us / size:.4f} | {used:.4f} |")
    hop = uvloop.run(_hop_us())
    limit = costs.DEFAULT_OFFLOAD_US
    print(f"\ncodec thread hop, round trip: {hop:.1f} µs; offloaded above {limit:g} µs")


if __name__ == "__main__":
    main()

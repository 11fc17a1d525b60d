"""aserve's own Python per predict request, on the event loop's CPU clock, step by step.

    python -m loadtests.hotpath              # tiny half_plus_two, batching on, 32 callers

A real server (batching on, the tiny model) runs in this process. Two measurements, both on
the loop thread's CPU clock (``time.thread_time_ns``), so neither the load generator's
sockets nor TensorFlow's worker threads count:

* **end to end**: 32 concurrent callers hand requests straight to the HTTP app
  (``HttpApp.serve``) and to the gRPC call path (``Calls.unary``), as the front ends do
  once they have a request's bytes; the loop's CPU per request is everything aserve does
  for it in Python (the transports' own parsing and socket work excluded; those are in the
  front-end table of ``bench.py``);
* **steps**: each step of the same path called alone, N times: parse (JSON or protobuf),
  decode (to arrays, with the request budget), resolve (pin the servable, find the
  signature, hold a place in its queue), plan (the job), split (a batch of 32's outputs cut
  per request; in the worker thread, shown per request), encode (outputs to the wire
  format) and record (the request's record opened and finished, metrics observed). What
  end to end leaves over is the queue: tasks, futures, the batcher and its wake-ups.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loadtests import models, payloads

CALLERS = 32
BATCHING = "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 0 }\n" + (
    "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 2 }\n"
)


@dataclass
class HotPath:
    rest_us: float  # end to end, loop CPU per request
    grpc_us: float
    rest_steps: dict[str, float] = field(default_factory=dict)
    grpc_steps: dict[str, float] = field(default_factory=dict)


def table(result: HotPath) -> str:
    """Markdown: end to end and each step, µs of loop CPU per request."""
    names = list(dict.fromkeys([*result.rest_steps, *result.grpc_steps]))
    lines = [
        "## aserve's own Python per predict request (tiny, batching, 32 callers)",
        "",
        "Loop-thread CPU (µs per request); steps measured alone; split runs in the worker.",
        "",
        "| step | REST | gRPC |",
        "|---|---|---|",
    ]
    for name in names:
        rest, grpc = result.rest_steps.get(name), result.grpc_steps.get(name)
        lines.append(f"| {name} | {_us(rest)} | {_us(grpc)} |")
    rest_rest = result.rest_us - sum(v for k, v in result.rest_steps.items() if k != "split")
    grpc_rest = result.grpc_us - sum(v for k, v in result.grpc_steps.items() if k != "split")
    lines += [
        f"| queue (the rest: tasks, futures, batcher) | {_us(rest_rest)} | {_us(grpc_rest)} |",
        f"| **end to end, on the loop** | **{_us(result.rest_us)}** | **{_us(result.grpc_us)}** |",
    ]
    return "\n".join(lines)


def _us(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def cpu_us_per_call(fn: Callable[[], Any], n: int) -> float:
    """The loop thread's CPU per call of ``fn``: the median of 5 runs of ``n // 5``."""
    runs = []
    for _ in range(5):
        start = time.thread_time_ns()
        for _ in range(n // 5):
            fn()
        runs.append((time.thread_time_ns() - start) / (n // 5) / 1000)
    return statistics.median(runs)


async def _end_to_end(call: Callable[[], Any], n: int) -> float:
    remaining = n

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    await asyncio.gather(*(caller() for _ in range(CALLERS)))  # warm-up
    remaining = n
    start = time.thread_time_ns()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return (time.thread_time_ns() - start) / n / 1000


async def measure(work: Path, n: int = 20_000) -> HotPath:
    from tensorflow_serving.apis import predict_pb2

    from aserve import flags, inference, tensors
    from aserve.batches import split
    from aserve.grpc_api import TfServingApi, _predict_response_wire, _ProtoInputs
    from aserve.grpc_calls import CallContext, Calls
    from aserve.http import HttpApp, HttpOptions
    from aserve.ids import ServableRequest
    from aserve.rest import RestApi
    from aserve.server import Server
    from aserve.tensors.budget import Budget

    models.build("tiny", work / "tiny" / "1")
    (work / "batching.config").write_text(BATCHING)
    options = flags.parse(
        [
            "--model_name=tiny",
            f"--model_base_path={work / 'tiny'}",
            "--host=127.0.0.1",
            f"--rest_api_port={_free_port()}",
            f"--port={_free_port()}",
            "--enable_batching",
            f"--batching_parameters_file={work / 'batching.config'}",
        ]
    )
    server = Server(options)
    ready, stop = asyncio.Event(), asyncio.Event()
    serving = asyncio.create_task(server.serve(stop=stop, on_ready=ready.set))
    await ready.wait()
    service = server.service
    assert service is not None
    try:
        app = HttpApp(service, RestApi(service).routes(), HttpOptions())
        calls = Calls(service)
        predict = next(m for m in TfServingApi(service).methods() if m.name == "Predict")
        body = payloads.rest_body(1.0)
        data = payloads.predict_request("tiny", 1.0).SerializeToString()
        headers = [(b"host", b"x"), (b"content-length", str(len(body)).encode())]

        async def read(limit: int) -> bytes:
            return body

        def rest() -> Any:
            return app.serve("POST", "/v1/models/tiny:predict", headers, "127.0.0.1:1", read, True)

        def grpc() -> Any:
            return calls.unary(predict, data, CallContext("ipv4:127.0.0.1:1", (), None))

        result = HotPath(await _end_to_end(rest, n), await _end_to_end(grpc, n))

        spec = ServableRequest("tiny")
        registry = service.core.registry
        with registry.acquire(spec) as servable:
            signature = servable.model.signatures["serving_default"]
            runner = servable.runner
        doc = tensors.parse_json(body)
        inputs, _ = tensors.predict_inputs_from_json(doc, signature.inputs)
        batch = [np.ones(32, np.float32)]
        y = {"y": np.ones(1, np.float32)}
        request = predict_pb2.PredictRequest.FromString(data)

        def resolve() -> None:
            with registry.acquire(spec) as s:
                s.model.signatures.get("serving_default")
                place = runner.reserve()
                place.release()

        def record() -> None:
            service.finish(service.begin("rest", peer="127.0.0.1:1"))

        def budgeted(arrays: dict[str, np.ndarray]) -> None:
            budget = Budget(2**26, 2**30)
            for array in arrays.values():
                budget.take(array.size, array.nbytes)

        def proto_response() -> bytes:  # what the Predict handler answers, serialized
            data = _predict_response_wire(request.model_spec, 1, y, False)
            assert data is not None
            return data

        common = {
            "resolve": cpu_us_per_call(resolve, n),
            "plan": cpu_us_per_call(lambda: inference.predict_job(signature, inputs), n),
            "split": cpu_us_per_call(lambda: split(batch, [1] * 32, 32), n // 10) / 32,
            "record": cpu_us_per_call(record, n),
        }
        result.rest_steps = {
            "parse": cpu_us_per_call(lambda: tensors.parse_json(body), n),
            "decode": cpu_us_per_call(
                lambda: budgeted(tensors.predict_inputs_from_json(doc, signature.inputs)[0]), n
            ),
            **common,
            "encode": cpu_us_per_call(lambda: tensors.predict_outputs_to_json(y, True), n),
        }
        result.grpc_steps = {
            "parse": cpu_us_per_call(lambda: predict_pb2.PredictRequest.FromString(data), n),
            "decode": cpu_us_per_call(
                lambda: _ProtoInputs(request.inputs, 0).decode(signature, Budget(2**26, 2**30)),
                n,
            ),
            **common,
            "encode": cpu_us_per_call(proto_response, n),
        }
        return result
    finally:
        stop.set()
        await serving


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    import uvloop

    with tempfile.TemporaryDirectory(prefix="aserve-hotpath-") as work:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            print(table(runner.run(measure(Path(work), n))))


if __name__ == "__main__":
    main()

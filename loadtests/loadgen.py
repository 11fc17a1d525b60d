"""A Python asyncio load generator for aserve's REST and gRPC Predict APIs.

Two ways to apply load, exactly one per run:

* **closed loop** (``concurrency=C``): C workers, each sends its next request when the
  previous answer arrives. Throughput is what the server sustains at C in flight;
  latency is measured from each actual send.
* **open loop** (``rate=R``): sends follow a precomputed schedule, one every 1/R s.
  Latency is measured from the *scheduled* time, so when the server stalls or cannot
  keep up the backlog shows as latency instead of being hidden by a client that
  slows down with it (coordinated omission). At most ``max_in_flight`` requests are
  outstanding; later slots wait their turn and their wait counts.

Timeline of a run, from its start::

    | warm-up (warmup_s) | window (duration_s) | drain (<= drain_s) |

Requests sent (closed) or scheduled (open) during warm-up are not recorded. Those of
the window are, when they finish; any still unanswered when the drain ends, or in open
loop not even sent by then, count as errors. ``LoadResult.duration_s`` is the window.

Only loopback targets are accepted. REST uses :mod:`loadtests.http1` (keep-alive, one
connection per worker); gRPC uses ``grpc.aio`` and the official stubs, the workers
spread over a few channels. The client shares the machine with the server, so for
peak throughput prefer the ``wrk``/``h2load`` engines (:mod:`loadtests.engines`).

    result = await run_rest("http://127.0.0.1:8501/v1/models/m:predict", body, concurrency=8)
    python -m loadtests.loadgen rest --concurrency 1 32 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import math
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from loadtests import payloads
from loadtests.http1 import Connection, Response, build_post
from loadtests.stats import LoadResult, error_samples, stolen_during, table
from loadtests.targets import Endpoint, grpc_endpoint, predict_url, rest_endpoint

if TYPE_CHECKING:
    from tensorflow_serving.apis.predict_pb2 import PredictRequest

UNANSWERED = "no answer by the end of the drain period"
UNSENT = "not sent by the end of the drain period (client-side backlog)"
RECONNECT_PAUSE_S = 0.01
MAX_SAMPLE_TEXTS = 50


class Sender(Protocol):
    """One worker's client: ``send()`` returns None on success, else an error text."""

    async def send(self) -> str | None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Plan:
    """How to apply load; exactly one of ``concurrency`` and ``rate`` is set."""

    concurrency: int | None
    rate: float | None
    duration_s: float
    warmup_s: float
    drain_s: float
    max_in_flight: int

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise ValueError("give exactly one of concurrency and rate")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.rate is not None and not self.rate > 0:
            raise ValueError("rate must be positive")
        if self.duration_s <= 0 or self.warmup_s < 0 or self.drain_s < 0:
            raise ValueError("duration must be positive; warm-up and drain not negative")

    @property
    def workers(self) -> int:
        return self.concurrency if self.concurrency is not None else self.max_in_flight


@dataclass(slots=True)
class _Recorder:
    """Outcomes of the requests that belong to the window ``[start, end)``."""

    start: float
    end: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    texts: list[str] = field(default_factory=list)
    last_answer: float = -math.inf

    def record(self, sent: float, done: float, error: str | None) -> None:
        if sent < self.start:
            return
        if error is None:
            self.latencies_ms.append((done - sent) * 1000)
            self.last_answer = max(self.last_answer, done)
            return
        self.errors += 1
        if len(self.texts) < MAX_SAMPLE_TEXTS:
            self.texts.append(error)

    def result(self, engine: str, examples_per_request: int) -> LoadResult:
        """Rates are over the window, stretched to the last answer if that came later."""
        return LoadResult(
            engine=engine,
            requests=len(self.latencies_ms) + self.errors,
            errors=self.errors,
            duration_s=max(self.end, self.last_answer) - self.start,
            examples_per_request=examples_per_request,
            latencies_ms=tuple(self.latencies_ms),
            error_samples=error_samples(self.texts),
        )


async def drive(plan: Plan, senders: Sequence[Sender], engine: str, examples: int) -> LoadResult:
    """Apply ``plan`` through ``senders`` (one per worker) and summarise the window."""
    start = perf_counter()
    recorder = _Recorder(start + plan.warmup_s, start + plan.warmup_s + plan.duration_s)
    slots = _schedule(start, plan)
    tasks = [asyncio.ensure_future(_work(s, recorder, slots)) for s in senders]
    await asyncio.wait(tasks, timeout=recorder.end + plan.drain_s - perf_counter())
    for task in tasks:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome
    for slot in slots:  # open loop: slots nobody took before the drain ended
        recorder.record(slot, math.inf, UNSENT)
    return recorder.result(engine, examples)


def _schedule(start: float, plan: Plan) -> Iterator[float]:
    """Send times: open loop, every 1/rate s up to the window's end; closed loop, "now"
    for as long as the window lasts (each worker takes the next one when it is free)."""
    end = start + plan.warmup_s + plan.duration_s
    if plan.rate is None:
        return _closed_slots(end)
    count = math.ceil((plan.warmup_s + plan.duration_s) * plan.rate)
    return (start + i / plan.rate for i in range(count))


def _closed_slots(end: float) -> Iterator[float]:
    while (now := perf_counter()) < end:
        yield now


async def _work(sender: Sender, recorder: _Recorder, slots: Iterator[float]) -> None:
    """Take the next slot, wait for its time, send, record; until the slots run out."""
    for slot in slots:
        try:
            delay = slot - perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            error = await sender.send()
        except asyncio.CancelledError:
            recorder.record(slot, math.inf, UNANSWERED)
            raise
        recorder.record(slot, perf_counter(), error)


class RestSender:
    """A keep-alive connection that POSTs one pre-built request; reconnects after errors."""

    def __init__(self, endpoint: Endpoint, request: bytes) -> None:
        self._endpoint = endpoint
        self._request = request
        self._connection: Connection | None = None

    async def send(self) -> str | None:
        response = await self.exchange()
        if isinstance(response, str):
            return response
        return None if response.status == 200 else http_error(response)

    async def exchange(self) -> Response | str:
        """The response, or the error text of a broken connection (the next one reconnects)."""
        try:
            if self._connection is None or self._connection.closed:
                self._connection = await Connection.open(self._endpoint, self._request)
            return await self._connection.exchange()
        except OSError as e:  # ConnectionError is an OSError
            await self.close()
            await asyncio.sleep(RECONNECT_PAUSE_S)  # don't spin on a refusing port
            return f"{type(e).__name__}: {e}"

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def http_error(response: Response) -> str:
    return f"HTTP {response.status}: {response.body.decode(errors='replace')}"


class GrpcSender:
    """Calls ``Predict`` through the official stub, or any method with raw bytes, on a
    (possibly shared) channel."""

    def __init__(
        self, call: Callable[..., Awaitable[Any]], request: PredictRequest | bytes
    ) -> None:
        self._call = call
        self._request = request

    async def send(self) -> str | None:
        import grpc

        try:
            await self._call(self._request)
        except grpc.aio.AioRpcError as e:
            return f"{e.code().name}: {e.details()}"
        return None

    async def close(self) -> None:
        pass


async def run_rest(
    url: str,
    body: bytes,
    *,
    concurrency: int | None = None,
    rate: float | None = None,
    duration_s: float = 10,
    warmup_s: float = 1,
    examples_per_request: int = 1,
    max_in_flight: int = 64,
    drain_s: float = 5,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """POST ``body`` (JSON, then ``headers``) to ``url`` under closed- or open-loop load; see
    the module doc.

    Non-200 answers and connection failures are errors; their bodies are the samples.
    """
    plan = Plan(concurrency, rate, duration_s, warmup_s, drain_s, max_in_flight)
    endpoint = rest_endpoint(url)
    request = build_post(endpoint, body, headers=headers)
    senders = [RestSender(endpoint, request) for _ in range(plan.workers)]
    try:
        return await drive(plan, senders, "python", examples_per_request)
    finally:
        await asyncio.gather(*(s.close() for s in senders))


async def run_grpc(
    target: str,
    request: PredictRequest | bytes,
    *,
    concurrency: int | None = None,
    rate: float | None = None,
    duration_s: float = 10,
    warmup_s: float = 1,
    examples_per_request: int = 1,
    max_in_flight: int = 64,
    drain_s: float = 5,
    channels: int = 4,
    method: str = "",
) -> LoadResult:
    """Call ``PredictionService/Predict`` on ``target`` under closed- or open-loop load; or,
    given ``method`` (``/package.Service/Method``), call it with ``request``'s bytes.

    Workers share up to ``channels`` channels (separate HTTP/2 connections); any status
    other than OK is an error, sampled as ``CODE: details``.
    """
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    plan = Plan(concurrency, rate, duration_s, warmup_s, drain_s, max_in_flight)
    endpoint = grpc_endpoint(target)
    options = [("grpc.use_local_subchannel_pool", 1)]  # one connection per channel
    opened = [
        grpc.aio.insecure_channel(endpoint.authority, options=options)
        for _ in range(max(1, min(channels, plan.workers)))
    ]
    if method:
        calls = [c.unary_unary(method) for c in opened]  # bytes in, bytes out
    else:
        calls = [prediction_service_pb2_grpc.PredictionServiceStub(c).Predict for c in opened]
    senders = [
        GrpcSender(call, request) for call in itertools.islice(itertools.cycle(calls), plan.workers)
    ]
    try:
        return await drive(plan, senders, "python", examples_per_request)
    finally:
        await asyncio.gather(*(c.close() for c in opened))


def run(coroutine: Coroutine[Any, Any, LoadResult]) -> LoadResult:
    """Run one of the ``run_*`` coroutines to completion on a fresh uvloop loop."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m loadtests.loadgen rest|grpc ...``: one row per concurrency or rate."""
    args = _parser().parse_args(argv)
    loads: list[tuple[str, int | float]] = [("c", c) for c in args.concurrency or []]
    loads += [("rate", r) for r in args.rate or []]
    rows = []
    for kind, value in loads:
        label = f"{args.protocol} {kind}={value:g}"
        load = {"concurrency": value} if kind == "c" else {"rate": value}
        result, steal = stolen_during(functools.partial(_run_one, args, load))
        result = replace(result, steal=steal)
        rows.append((label, result))
        print(f"{label}: {result.ok} ok, {result.errors} errors", file=sys.stderr)
        for sample in result.error_samples:
            print(f"  error: {sample}", file=sys.stderr)
    print(table(rows))
    return 1 if any(r.ok == 0 for _, r in rows) else 0


def _run_one(args: argparse.Namespace, load: dict[str, Any]) -> LoadResult:
    from loadtests.engines import EngineUnavailable

    if "rate" in load:
        load["max_in_flight"] = args.max_in_flight
    try:
        return _run_rest(args, load) if args.protocol == "rest" else _run_grpc(args, load)
    except (EngineUnavailable, ValueError) as e:
        raise SystemExit(f"error: {e}") from e


def _run_rest(args: argparse.Namespace, load: dict[str, Any]) -> LoadResult:
    url = predict_url(args.url, args.model)
    body = args.body.encode() if args.body else payloads.rest_body(_example(args), args.batch)
    if args.engine == "wrk":
        from loadtests import engines

        return engines.run_wrk(
            url,
            body,
            concurrency=_closed_only(load),
            duration_s=args.duration,
            warmup_s=args.warmup,
            examples_per_request=args.batch,
        )
    _python_only(args.engine, "rest")
    return run(
        run_rest(
            url,
            body,
            **load,
            duration_s=args.duration,
            warmup_s=args.warmup,
            examples_per_request=args.batch,
        )
    )


def _run_grpc(args: argparse.Namespace, load: dict[str, Any]) -> LoadResult:
    if args.body:
        request = payloads.request_from_json(args.body)
    else:
        request = payloads.predict_request(
            args.model,
            _example(args),
            args.batch,
            input_name=args.input_name,
            signature=args.signature,
        )
    if args.engine == "h2load":
        from loadtests import engines

        return engines.run_h2load(
            args.target,
            request,
            concurrency=_closed_only(load),
            duration_s=args.duration,
            warmup_s=args.warmup,
            examples_per_request=args.batch,
        )
    _python_only(args.engine, "grpc")
    return run(
        run_grpc(
            args.target,
            request,
            **load,
            duration_s=args.duration,
            warmup_s=args.warmup,
            examples_per_request=args.batch,
        )
    )


def _example(args: argparse.Namespace) -> Any:
    import json

    return json.loads(args.input)


def _closed_only(load: dict[str, Any]) -> int:
    if "concurrency" not in load:
        raise SystemExit("wrk and h2load engines run closed loop only: use --concurrency")
    return int(load["concurrency"])


def _python_only(engine: str, protocol: str) -> None:
    if engine != "python":
        raise SystemExit(f"engine {engine} does not speak {protocol}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.loadgen", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("protocol", choices=["rest", "grpc"])
    parser.add_argument(
        "--url",
        default="http://127.0.0.1:8501",
        help="REST base URL (predict path added) or full predict URL",
    )
    parser.add_argument("--target", default="127.0.0.1:8500", help="gRPC host:port")
    parser.add_argument("--model", default="half_plus_two")
    parser.add_argument("--signature", default="", help="gRPC signature_name")
    parser.add_argument("--input_name", default="x", help="gRPC input tensor name")
    parser.add_argument("--body", help="REST: JSON body; gRPC: PredictRequest as proto JSON")
    parser.add_argument("--input", default="1.0", help="one example as JSON (default 1.0)")
    parser.add_argument("--batch", type=int, default=1, help="examples per request")
    load = parser.add_mutually_exclusive_group(required=True)
    load.add_argument("--concurrency", type=int, nargs="+", help="closed loop, one run each")
    load.add_argument("--rate", type=float, nargs="+", help="open loop req/s, one run each")
    parser.add_argument("--duration", type=float, default=10, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1, help="unmeasured seconds first")
    parser.add_argument(
        "--max_in_flight", type=int, default=64, help="open loop: most requests outstanding"
    )
    parser.add_argument("--engine", choices=["python", "wrk", "h2load"], default="python")
    return parser


if __name__ == "__main__":
    sys.exit(main())

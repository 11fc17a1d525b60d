"""The server's metrics, in TF Serving's names, exported in Prometheus' text format.

:class:`Metrics` is an observer (:mod:`aserve.records`): it turns every finished request,
every batch started and every load attempt into TF Serving's samples, so nothing else in
the server records a metric. ``GET <path>`` on the REST port answers :meth:`Metrics.render`
when ``--monitoring_config_file`` enables Prometheus.

What is counted, as TF Serving counts it: ``request_count`` for every REST request that
names a model and for gRPC Predict, Classify, Regress and MultiInference; ``request_latency``
for those that succeeded among predict/classify/regress (REST) and Predict/Classify/Regress/
MultiInference (gRPC); ``runtime_latency`` and the example counts for every model run. KServe
V2's inference calls (``infer`` over REST, ``ModelInfer`` over gRPC) count as predictions.

Names follow TF (REFERENCE §6): the metric path with every character outside
``[a-zA-Z0-9_]`` turned into ``:`` (``/tensorflow/serving/request_count`` ->
``:tensorflow:serving:request_count``), ``# TYPE`` lines and no ``# HELP``.
Latencies are in microseconds, in TF's exponential buckets (10 µs x 1.8^i, 33 buckets).
aserve's own metrics live under ``/aserve/``.

Recording costs ~1 µs a sample, so it is always on; only the export is optional, as in
TF Serving. Everything is recorded on the event loop; counters still take a lock, so a
thread may read or record safely.
"""

from __future__ import annotations

import asyncio
import bisect
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Final, TypeVar

from aserve.errors import Code
from aserve.records import BatchRecord, LoadRecord, RequestRecord, StateRecord

LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
COUNT_BUCKETS = tuple(float(2**i) for i in range(15))  # 1, 2, 4, ..., 16384

Labels = tuple[str, ...]

# status names by code value: ``Code.X.name`` is a Python-level enum property (~0.6 µs)
_CODE_NAMES: Final = tuple(code.name for code in sorted(Code))
# gRPC methods TF Serving counts (REST counts every request that names a model)
_COUNTED_GRPC: Final = frozenset({"Predict", "Classify", "Regress", "MultiInference", "ModelInfer"})
# APIs whose successful requests are timed, and their runtime_latency API label
_RUNTIME_API: Final = {
    "predict": "Predict",
    "classify": "Classify",
    "regress": "Regress",
    "Predict": "Predict",
    "Classify": "Classify",
    "Regress": "Regress",
    "MultiInference": "MultiInference",
    "infer": "Predict",  # KServe V2 (REST)
    "ModelInfer": "Predict",  # KServe V2 (gRPC)
}
_ENTRYPOINT: Final = {"rest": "REST", "grpc": "GRPC"}
LOOP_LAG_INTERVAL_S: Final = 0.1


class Counter:
    kind = "counter"

    def __init__(self, name: str, labels: Sequence[str]) -> None:
        self.name = name
        self.labels = tuple(labels)
        self._cells: dict[Labels, int] = {}
        self._lock = threading.Lock()

    def inc(self, *values: str, by: int = 1) -> None:
        with self._lock:
            self._cells[values] = self._cells.get(values, 0) + by

    def value(self, *values: str) -> int:
        return self._cells.get(values, 0)

    def lines(self, name: str) -> Iterator[str]:
        with self._lock:
            cells = sorted(self._cells.items())
        for values, count in cells:
            yield f"{name}{_labels(self.labels, values)} {count}"


class Histogram:
    kind = "histogram"

    def __init__(self, name: str, labels: Sequence[str], bounds: Sequence[float]) -> None:
        self.name = name
        self.labels = tuple(labels)
        self.bounds = tuple(bounds)
        # per label set: [count per bucket (the last one is +Inf)..., sum, total]
        self._cells: dict[Labels, list[float]] = {}

    def observe(self, value: float, *values: str) -> None:
        """On the event loop only (or under an outside lock)."""
        cell = self._cells.get(values)
        if cell is None:
            cell = self._cells[values] = [0.0] * (len(self.bounds) + 3)
        cell[bisect.bisect_left(self.bounds, value)] += 1  # the first bound >= value
        cell[-2] += value
        cell[-1] += 1

    def lines(self, name: str) -> Iterator[str]:
        for values, cell in sorted(self._cells.items()):
            cumulative = 0.0
            limits = [*(f"{bound:.6g}" for bound in self.bounds), "+Inf"]
            for limit, count in zip(limits, cell, strict=False):
                cumulative += count
                bucket_labels = _labels((*self.labels, "le"), (*values, limit))
                yield f"{name}_bucket{bucket_labels} {cumulative:.0f}"
            labels = _labels(self.labels, values)
            yield f"{name}_sum{labels} {_number(cell[-2])}"
            yield f"{name}_count{labels} {cell[-1]:.0f}"


class Gauge:
    """A value read when the page is rendered, from ``source`` (label values -> value)."""

    kind = "gauge"

    def __init__(self, name: str, labels: Sequence[str]) -> None:
        self.name = name
        self.labels = tuple(labels)
        self.source: Callable[[], Mapping[Labels, float]] = dict

    def lines(self, name: str) -> Iterator[str]:
        for values, value in sorted(self.source().items()):
            yield f"{name}{_labels(self.labels, values)} {_number(float(value))}"


_M = TypeVar("_M", Counter, Histogram, Gauge)


class Metrics:
    """Every metric the server records."""

    def __init__(self) -> None:
        serving = "/tensorflow/serving"
        self._metrics: list[Counter | Histogram | Gauge] = []  # every one, for the page
        self.request_count = self._add(
            Counter(f"{serving}/request_count", ("model_name", "status"))
        )
        self.request_latency = self._add(
            Histogram(
                f"{serving}/request_latency",
                ("model_name", "API", "entrypoint"),
                LATENCY_BUCKETS_US,
            )
        )
        self.runtime_latency = self._add(
            Histogram(
                f"{serving}/runtime_latency", ("model_name", "API", "runtime"), LATENCY_BUCKETS_US
            )
        )
        self.request_example_counts = self._add(
            Histogram(f"{serving}/request_example_counts", ("model",), COUNT_BUCKETS)
        )
        self.request_example_count_total = self._add(
            Counter(f"{serving}/request_example_count_total", ("model",))
        )
        self.queuing_latency = self._add(
            Histogram(
                f"{serving}/batching_session/queuing_latency",
                ("thread_pool_name",),
                LATENCY_BUCKETS_US,
            )
        )
        self.batch_size = self._add(
            Histogram("/aserve/batching/batch_size", ("model_name",), COUNT_BUCKETS)
        )
        self.load_attempt_count = self._add(
            Counter("/tensorflow/cc/saved_model/load_attempt_count", ("model_path", "status"))
        )
        self.load_latency = self._add(
            Counter("/tensorflow/cc/saved_model/load_latency", ("model_path",))
        )
        self.event_loop_lag = self._add(Histogram("/aserve/event_loop_lag", (), LATENCY_BUCKETS_US))
        self.batches = self._add(Counter("/aserve/batching/batches", ("model_name", "cut")))
        self.requests_refused = self._add(
            Counter("/aserve/requests_refused", ("reason", "protocol"))
        )
        self.refusal_latency = self._add(
            Histogram("/aserve/refusal_latency", ("protocol",), LATENCY_BUCKETS_US)
        )
        self.model_loads = self._add(Counter("/aserve/model_loads", ("model_name", "outcome")))
        self.model_load_latency = self._add(
            Histogram("/aserve/model_load_latency", ("model_name",), LATENCY_BUCKETS_US)
        )
        self.model_unloads = self._add(Counter("/aserve/model_unloads", ("model_name",)))
        self.model_unload_latency = self._add(
            Histogram("/aserve/model_unload_latency", ("model_name",), LATENCY_BUCKETS_US)
        )
        # read from the running server when the page renders (the server sets the sources)
        self.requests_in_flight = self._add(Gauge("/aserve/requests_in_flight", ("model_name",)))
        self.queue_depth = self._add(Gauge("/aserve/queue_depth", ("model_name",)))
        self.servable_state = self._add(
            Gauge("/aserve/servable_state", ("model_name", "version", "state"))
        )

    def _add(self, metric: _M) -> _M:
        self._metrics.append(metric)  # listed: a compiled class has no __dict__ to scan
        return metric

    # -- observer -------------------------------------------------------------------------

    def request_finished(self, record: RequestRecord) -> None:
        if record.refused:
            self.requests_refused.inc(record.refused, record.protocol)
            self.refusal_latency.observe(record.latency * 1e6, record.protocol)
        model, api = record.model, record.api
        if not model or (record.protocol == "grpc" and api not in _COUNTED_GRPC):
            return
        self.request_count.inc(model, _CODE_NAMES[record.code])
        runtime_api = _RUNTIME_API.get(api)
        if runtime_api is None:
            return
        if record.code is Code.OK:
            entrypoint = _ENTRYPOINT[record.protocol]
            self.request_latency.observe(record.latency * 1e6, model, api, entrypoint)
        if record.runtime is not None:
            self.runtime_latency.observe(record.runtime * 1e6, model, runtime_api, "TF1")
        if record.examples:
            self.request_example_counts.observe(record.examples, model)
            self.request_example_count_total.inc(model, by=record.examples)

    def batch_started(self, record: BatchRecord) -> None:
        for seconds in record.queued:
            self.queuing_latency.observe(seconds * 1e6, record.pool)
        self.batch_size.observe(record.size, record.model)
        self.batches.inc(record.model, record.cut)

    def state_changed(self, record: StateRecord) -> None:
        if record.before == "LOADING":
            outcome = "available" if record.after == "AVAILABLE" else "failed"
            self.model_loads.inc(record.model, outcome)
            self.model_load_latency.observe(record.seconds * 1e6, record.model)
        elif record.before == "UNLOADING":
            self.model_unloads.inc(record.model)
            self.model_unload_latency.observe(record.seconds * 1e6, record.model)

    def load_finished(self, record: LoadRecord) -> None:
        self.load_attempt_count.inc(record.path, "success" if record.ok else "fail")
        if record.ok:
            self.load_latency.inc(record.path, by=int(record.seconds * 1e6))

    async def sample_event_loop_lag(self, interval: float = LOOP_LAG_INTERVAL_S) -> None:
        """Forever: how late the loop wakes a task that sleeps ``interval`` (a supervised task)."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + interval
            await asyncio.sleep(interval)
            self.event_loop_lag.observe(max(loop.time() - due, 0.0) * 1e6)

    def render(self) -> str:
        """The Prometheus text page."""
        out: list[str] = []
        for metric in sorted(self._metrics, key=lambda m: m.name):
            name = prometheus_name(metric.name)
            out.append(f"# TYPE {name} {metric.kind}")
            out.extend(metric.lines(name))
        return "\n".join(out) + "\n"


def prometheus_name(path: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_]", ":", path)
    return f"_{name}" if name[:1].isdigit() else name


def _labels(names: Labels, values: Labels) -> str:
    if not names:
        return ""
    pairs = (
        f'{re.sub(r"[^a-zA-Z0-9_]", "_", n)}="{_escape(v)}"'
        for n, v in zip(names, values, strict=True)
    )
    return "{" + ",".join(pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)

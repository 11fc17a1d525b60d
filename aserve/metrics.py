"""The server's metrics, in TF Serving's names, exported in Prometheus' text format.

One :class:`Metrics` per server, made by the composition root and handed to what
records: the REST and gRPC front ends (request count and latency, one place each),
the service (runtime latency, example counts), the batcher (queuing latency, batch
sizes) and the model loader (load attempts and time). ``GET <path>`` on the REST port
answers :meth:`Metrics.render` when ``--monitoring_config_file`` enables Prometheus.

Names follow TF (REFERENCE §6): the metric path with every character outside
``[a-zA-Z0-9_]`` turned into ``:`` (``/tensorflow/serving/request_count`` ->
``:tensorflow:serving:request_count``), ``# TYPE`` lines and no ``# HELP``.
Latencies are in microseconds, in TF's exponential buckets (10 µs x 1.8^i, 33 buckets).
aserve's own metrics live under ``/aserve/``.

Recording costs ~1 µs a sample, so it is always on; only the export is optional, as in
TF Serving. Counters take a lock (loads count from their threads); histograms are
observed on the event loop only and take none.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Iterator, Sequence

from aserve.errors import Code

LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))
COUNT_BUCKETS = tuple(float(2**i) for i in range(15))  # 1, 2, 4, ..., 16384

Labels = tuple[str, ...]


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
        """On the event loop only."""
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


class Metrics:
    """Every metric the server records."""

    def __init__(self) -> None:
        serving = "/tensorflow/serving"
        self.request_count = Counter(f"{serving}/request_count", ("model_name", "status"))
        self.request_latency = Histogram(
            f"{serving}/request_latency", ("model_name", "API", "entrypoint"), LATENCY_BUCKETS_US
        )
        self.runtime_latency = Histogram(
            f"{serving}/runtime_latency", ("model_name", "API", "runtime"), LATENCY_BUCKETS_US
        )
        self.request_example_counts = Histogram(
            f"{serving}/request_example_counts", ("model",), COUNT_BUCKETS
        )
        self.request_example_count_total = Counter(
            f"{serving}/request_example_count_total", ("model",)
        )
        self.queuing_latency = Histogram(
            f"{serving}/batching_session/queuing_latency", ("thread_pool_name",), LATENCY_BUCKETS_US
        )
        self.batch_size = Histogram("/aserve/batching/batch_size", ("model_name",), COUNT_BUCKETS)
        self.load_attempt_count = Counter(
            "/tensorflow/cc/saved_model/load_attempt_count", ("model_path", "status")
        )
        self.load_latency = Counter("/tensorflow/cc/saved_model/load_latency", ("model_path",))

    def record_request(
        self, model_name: str, api: str, entrypoint: str, code: Code, seconds: float
    ) -> None:
        """One REST or gRPC request: always counted; timed if it succeeded and ``api`` is given."""
        self.request_count.inc(model_name, code.name)
        if code is Code.OK and api:
            self.request_latency.observe(seconds * 1e6, model_name, api, entrypoint)

    def record_load(self, model_path: str, ok: bool, seconds: float) -> None:
        self.load_attempt_count.inc(model_path, "success" if ok else "fail")
        if ok:
            self.load_latency.inc(model_path, by=int(seconds * 1e6))

    def render(self) -> str:
        """The Prometheus text page."""
        out: list[str] = []
        for metric in sorted(self._all(), key=lambda m: m.name):
            name = prometheus_name(metric.name)
            out.append(f"# TYPE {name} {metric.kind}")
            out.extend(metric.lines(name))
        return "\n".join(out) + "\n"

    def _all(self) -> list[Counter | Histogram]:
        return [m for m in vars(self).values() if isinstance(m, Counter | Histogram)]


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

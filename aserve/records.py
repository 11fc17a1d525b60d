"""What happened: one record per request, per batch and per load, handed to observers.

Every request, on every front end, gets one :class:`RequestRecord` when it arrives (unknown
paths, CORS preflights and the metrics page included). The front end and the service fill
it in as the request goes, and when the request ends the service hands it to every
observer, once:

    record = service.begin("rest", request_id=..., peer=..., bytes_in=...)
    ...                                   # route, decode, run, encode: fields filled in
    service.finish(record)                # latency set; observers called

Batchers report each batch they start (:class:`BatchRecord`), the server core each load
attempt (:class:`LoadRecord`) and the manager each version's state change
(:class:`StateRecord`) the same way. An observer implements the ``*_finished`` /
``batch_started`` methods it cares about; Prometheus metrics are one observer, the access
log another. An observer that raises is logged and never fails the request.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aserve.errors import Code

log = logging.getLogger("aserve.records")

_ID_FORMAT: Final = os.urandom(4).hex() + "-%x"  # compiled, an f-string with "{:x}" is slower
_ids = itertools.count(1)


def new_request_id() -> str:
    """A process-unique request id: a random prefix per process and a counter (~0.2 µs)."""
    return _ID_FORMAT % next(_ids)


# a request record's attributes (__repr__ reads them here: a compiled class has no __slots__)
_RECORD_FIELDS: Final = (
    "request_id",
    "protocol",
    "api",
    "peer",
    "started",
    "wall",
    "model",
    "version",
    "label",
    "signature",
    "code",
    "http_status",
    "latency",
    "runtime",
    "batch_size",
    "examples",
    "bytes_in",
    "bytes_out",
    "refused",
)


class RequestRecord:
    """One request, as it went. ``api`` uses the metrics' ``API`` spelling: ``predict``,
    ``status``, ... on REST, ``Predict``, ``GetModelStatus``, ... on gRPC ("" when the
    request named no API: an unknown path)."""

    __slots__ = _RECORD_FIELDS

    def __init__(self, protocol: str, request_id: str, peer: str, bytes_in: int) -> None:
        self.request_id = request_id
        self.protocol = protocol  # "rest" | "grpc"
        self.api = ""
        self.peer = peer
        self.started = time.perf_counter()
        self.wall = time.time()  # when it arrived, for logs
        self.model = ""  # the model the request named
        self.version: int | None = None  # the version that served it
        self.label: str | None = None
        self.signature = ""
        self.code = Code.OK
        self.http_status: int | None = None  # REST only
        self.latency = 0.0  # seconds, arrival to answer
        self.runtime: float | None = None  # seconds in the runner (batch queue included)
        self.batch_size: int | None = None  # the size of the batch it ran in, if batched
        self.examples = 0  # tf.Examples (Classify, Regress, MultiInference)
        self.bytes_in = bytes_in
        self.bytes_out = 0
        self.refused = ""  # why the server refused it, if it did: "overloaded", "shutdown", ...

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _RECORD_FIELDS)
        return f"RequestRecord({fields})"


class BatchRecord:
    """A batch as it starts: whose, how large, and how long each of its requests queued.

    One per batch: a plain class (a compiled dataclass's ``__init__`` is interpreted)."""

    __slots__ = ("model", "size", "queued", "pool", "cut")

    def __init__(
        self, model: str, size: int, queued: tuple[float, ...], pool: str, cut: str
    ) -> None:
        self.model: Final = model
        self.size: Final = size  # examples run, padding included
        self.queued: Final = queued  # seconds each request waited in the queue
        self.pool: Final = pool  # the batching thread_pool_name
        self.cut: Final = cut  # why it started now: "full", "timeout" or "idle"


@dataclass(frozen=True, slots=True)
class StateRecord:
    """One version changed its public state (START, LOADING, AVAILABLE, UNLOADING, END)."""

    model: str
    version: int
    before: str
    after: str
    seconds: float  # how long it was in ``before``
    error: str | None = None


@dataclass(frozen=True, slots=True)
class LoadRecord:
    """One attempt to load a SavedModel."""

    path: str  # the version folder as configured
    ok: bool
    seconds: float  # the SavedModel load alone (warm-up excluded); 0 when it failed


class Observers:
    """Hands each record to every observer that has a method for it, isolating failures."""

    def __init__(self, observers: Sequence[object] = ()) -> None:
        self._requests = _methods(observers, "request_finished")
        self._batches = _methods(observers, "batch_started")
        self._loads = _methods(observers, "load_finished")
        self._states = _methods(observers, "state_changed")

    def request_finished(self, record: RequestRecord) -> None:
        _notify(self._requests, record)

    def batch_started(self, record: BatchRecord) -> None:
        _notify(self._batches, record)

    def load_finished(self, record: LoadRecord) -> None:
        _notify(self._loads, record)

    def state_changed(self, record: StateRecord) -> None:
        _notify(self._states, record)


def _methods(observers: Sequence[object], name: str) -> list[Callable[[Any], None]]:
    return [getattr(o, name) for o in observers if callable(getattr(o, name, None))]


def _notify(methods: list[Callable[[Any], None]], record: object) -> None:
    for method in methods:
        try:
            method(record)
        except Exception:
            log.exception("observer %s failed on %r", method, record)

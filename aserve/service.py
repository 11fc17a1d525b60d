"""The protocol-neutral service: the one request pipeline every front end calls.

A front end decodes its wire format into a neutral request, calls one method here with the
function that encodes its answer, and renders what comes back (or the error):

    record = service.begin("grpc", request_id=..., peer=..., bytes_in=len(data))
    try:
        answer = await service.predict(record, Predict(spec, "", inputs), encode)
    except BaseException as e:
        error = service.failed(record, e)        # a ServingError; record.code is set
        ...                                      # render it in the protocol's format
    finally:
        service.finish(record)                   # latency set; observers called

For an inference request the service resolves the servable the request names (latest,
version or label) and pins it, finds the signature, decodes the inputs against it, plans the
job and runs it through the version's runner (directly or batched), releases the pin, and
encodes the answer. Decoding and encoding run on the event loop when they are cheap and in a
codec thread when their estimated cost is high (:mod:`aserve.tensors.costs`), so a big body
never stalls the loop.
Tensor values cross this layer as numpy arrays; classification, regression, status and
metadata results are TF Serving's own protos (the neutral form TF Serving itself uses).
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import numpy as np

from aserve import inference
from aserve.auth import Authenticator
from aserve.batching import Reservation, Runner
from aserve.core import ServerCore
from aserve.errors import Code, ServingError, failed_precondition, not_found
from aserve.ids import ServableRequest
from aserve.inference import Job
from aserve.pool import WorkerPool
from aserve.profiling import Profiler
from aserve.records import Observers, RequestRecord, new_request_id
from aserve.registry import Servable
from aserve.signatures import Signature
from aserve.tensors.budget import DEFAULT_MAX_BYTES, DEFAULT_MAX_ELEMENTS, Budget
from aserve.tensors.costs import DEFAULT_OFFLOAD_US

_NBYTES = operator.attrgetter("nbytes")
log = logging.getLogger("aserve.service")

# A request body or message larger than this holds a place in its model's queue (or is
# refused) before it is parsed, even when it has arrived whole; a smaller one is parsed
# first (~0.5 µs for a one-example gRPC message), since the early refusal would cost more
# than it saves. Under a flood of 32-image requests, parsing each one only to refuse it
# kept the loop busy with requests it then dropped.
ADMIT_BEFORE_DECODING_BYTES: Final = 16 * 1024

T = TypeVar("T")


class Inputs(Protocol):
    """A request's input tensors, still in their wire format."""

    @property
    def cost_us(self) -> float:
        """About what decoding costs, in µs of CPU (where it runs is decided on it)."""
        ...

    def missing_signature(self, name: str) -> ServingError:
        """How this wire format reports that the model has no signature ``name``."""
        ...

    def decode(self, signature: Signature, budget: Budget) -> Mapping[str, np.ndarray]:
        """alias -> array, checked against ``signature`` as far as the format needs; each
        tensor's size is taken from ``budget`` before it is allocated."""
        ...


# The request classes below are made for every request: plain classes with read-only
# (``Final``) attributes, since a dataclass's generated ``__init__`` runs in the interpreter
# even when its class is compiled (~1-1.4 µs each, against ~0.1 µs).


class Encoding:
    """How a front end encodes an answer: ``encode(version served, answer)``, and what that
    costs per byte of the result arrays (to decide where it runs)."""

    __slots__ = ("encode", "us_per_byte")

    def __init__(self, encode: Callable[[int, Any], Any], us_per_byte: float) -> None:
        self.encode: Final = encode
        self.us_per_byte: Final = us_per_byte


class Predict:
    __slots__ = ("model", "signature_name", "inputs", "output_filter", "timeout_ms")

    def __init__(
        self,
        model: ServableRequest,
        signature_name: str,
        inputs: Inputs,
        output_filter: Sequence[str] = (),
        timeout_ms: int = 0,  # 0: no limit
    ) -> None:
        self.model: Final = model
        self.signature_name: Final = signature_name
        self.inputs: Final = inputs
        self.output_filter: Final = output_filter
        self.timeout_ms: Final = timeout_ms


class Examples:
    """A Classify (``method`` = CLASSIFY_METHOD) or Regress request over tf.Examples."""

    __slots__ = ("model", "method", "signature_name", "input", "timeout_ms")

    def __init__(
        self,
        model: ServableRequest,
        method: str,
        signature_name: str,
        input: Any,  # tensorflow.serving.Input
        timeout_ms: int = 0,
    ) -> None:
        self.model: Final = model
        self.method: Final = method
        self.signature_name: Final = signature_name
        self.input: Final = input
        self.timeout_ms: Final = timeout_ms


class MultiInference:
    __slots__ = ("model", "models", "tasks", "input", "timeout_ms")

    def __init__(
        self,
        model: ServableRequest,  # the model of the first task
        models: Sequence[str],  # the model named by every task
        tasks: Sequence[tuple[str, str]],  # (signature name, method name)
        input: Any,
        timeout_ms: int = 0,
    ) -> None:
        self.model: Final = model
        self.models: Final = models
        self.tasks: Final = tasks
        self.input: Final = input
        self.timeout_ms: Final = timeout_ms


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    check_method_name: bool = False  # --enable_signature_method_name_check
    offload_us: float = DEFAULT_OFFLOAD_US  # --codec_offload_us
    max_request_elements: int = DEFAULT_MAX_ELEMENTS  # --max_request_elements
    max_request_bytes: int = DEFAULT_MAX_BYTES  # --max_request_bytes
    model_management: bool = False  # --enable_model_management
    # what owns the model list when a polled config file does ("" otherwise): management
    # calls are then refused, as the next read of the file would undo them
    model_list_owner: str = ""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One version in the repository index, or a model with no version (``version`` None)."""

    name: str
    version: int | None
    state: str  # TF Serving's public state (START ... END); "" when no version is known
    reason: str  # why it is not serving ("unloaded", a load error, ...); "" when it serves


class Service:
    def __init__(
        self,
        *,
        core: ServerCore,
        pool: WorkerPool,
        observers: Observers | None = None,
        authenticator: Authenticator | None = None,
        options: ServiceOptions = ServiceOptions(),
    ) -> None:
        self.core = core
        self._pool = pool
        self._observers = observers or Observers()
        self._auth = authenticator or Authenticator()
        self._check_method = options.check_method_name
        self._offload_us = options.offload_us
        self._budget = (options.max_request_elements, options.max_request_bytes)
        self._management = options.model_management
        self._list_owner = options.model_list_owner
        self._in_flight: dict[RequestRecord, asyncio.Task[Any] | None] = {}
        self._held: dict[RequestRecord, tuple[Runner, Reservation]] = {}  # see admit()
        self._idle: asyncio.Event | None = None  # made by the first wait_idle
        self._aborting = False
        self._profiler = Profiler(pool.io)
        # built on the loop it serves: asyncio.current_task() without a loop asks for the
        # running loop, which on 3.11 makes a getpid() system call every time
        self._loop = asyncio.get_running_loop()

    # -- the record of every request -----------------------------------------------------

    def begin(
        self,
        protocol: str,
        *,
        request_id: str = "",
        peer: str = "",
        bytes_in: int = 0,
        tracked: bool = True,
    ) -> RequestRecord:
        """A new request's record. A tracked request counts as in flight until it finishes
        (a shutdown waits for it); long-lived streams are not tracked."""
        record = RequestRecord(protocol, request_id or new_request_id(), peer, bytes_in)
        if tracked:
            self._in_flight[record] = asyncio.current_task(self._loop)
        return record

    def authorize(self, record: RequestRecord, access: str, authorization: bytes) -> None:
        """Refuse the request (UNAUTHENTICATED / PERMISSION_DENIED) unless its credentials
        grant ``access`` (see :mod:`aserve.auth`)."""
        self._auth.check(access, authorization)

    def failed(self, record: RequestRecord, error: BaseException) -> ServingError:
        """What the client is told about ``error``; also the record's status.

        A ServingError is itself; a cancelled request is CANCELLED (its client left), or
        UNAVAILABLE when the shutdown deadline cut it short; anything else is a bug: logged
        with its traceback, answered INTERNAL.
        """
        if isinstance(error, ServingError):
            serving = error
        elif isinstance(error, asyncio.CancelledError) and self._aborting:
            serving = ServingError(
                Code.UNAVAILABLE,
                "The server is shutting down: the request did not finish within "
                "--shutdown_grace_seconds",
                refused="shutdown",
            )
        elif isinstance(error, asyncio.CancelledError):
            serving = ServingError(Code.CANCELLED, "Request cancelled")
        else:
            log.error("internal error serving %s %s", record.protocol, record.api, exc_info=error)
            serving = ServingError(
                Code.INTERNAL, f"Internal error: {type(error).__name__}: {error}"
            )
        record.code, record.refused = serving.code, serving.refused
        return serving

    def finish(self, record: RequestRecord) -> None:
        record.latency = time.perf_counter() - record.started
        held = self._held.pop(record, None)
        if held is not None:  # admitted, but it ended before it ran
            held[1].release()
        if (
            self._in_flight.pop(record, False) is not False
            and not self._in_flight
            and self._idle is not None
        ):
            self._idle.set()
        self._observers.request_finished(record)

    # -- shutdown ---------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def in_flight_by_model(self) -> dict[str, int]:
        """Tracked requests in flight, per model they name ("" before routing)."""
        counts: dict[str, int] = {}
        for record in self._in_flight:
            counts[record.model] = counts.get(record.model, 0) + 1
        return counts

    async def wait_idle(self, timeout: float) -> bool:
        """Until no tracked request is in flight, or ``timeout`` s; whether it became idle."""
        if self._idle is None:
            self._idle = asyncio.Event()
        while self._in_flight:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), max(timeout, 0.0))
            except TimeoutError:
                return not self._in_flight
        return True

    def abort_in_flight(self) -> int:
        """Cancel every request still in flight; each answers UNAVAILABLE. How many."""
        self._aborting = True
        tasks = {task for task in self._in_flight.values() if task is not None}
        for task in tasks:
            task.cancel()
        return len(self._in_flight)

    async def transcode(self, cost_us: float, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``: inline when it costs little, in a codec thread when it costs more
        than ``--codec_offload_us`` (then the loop goes on serving meanwhile)."""
        if cost_us < self._offload_us:
            return fn(*args)
        return await self._pool.codec(fn, *args)

    # -- inference ---------------------------------------------------------------------------

    async def predict(self, record: RequestRecord, request: Predict, encoding: Encoding) -> Any:
        """The answer is the outputs (alias -> array), encoded."""
        name = record.signature = inference.signature_name(request.signature_name)
        with (
            self._acquire(record, request.model) as servable,
            self._place(record, servable) as place,
        ):
            record.version = servable.id.version
            signature = servable.model.signatures.get(name)
            if signature is None:
                raise request.inputs.missing_signature(name)
            budget = Budget(*self._budget)
            inputs = await self.transcode(
                request.inputs.cost_us, request.inputs.decode, signature, budget
            )
            job = inference.predict_job(
                signature, inputs, request.output_filter, check_method_name=self._check_method
            )
            del inputs  # the job holds what it feeds
            results = await self._run(record, servable, job, request.timeout_ms, place)
        return await self._answer(servable, job, results, encoding)

    async def classify_or_regress(
        self, record: RequestRecord, request: Examples, encoding: Encoding
    ) -> Any:
        """The answer is the ClassificationResult or RegressionResult proto, encoded."""
        record.signature = inference.signature_name(request.signature_name)
        with (
            self._acquire(record, request.model) as servable,
            self._place(record, servable) as place,
        ):
            record.version = servable.id.version
            job = inference.examples_job(
                servable.model.signatures,
                request.signature_name,
                request.method,
                request.input,
                check_method_name=self._check_method,
            )
            results = await self._run(record, servable, job, request.timeout_ms, place)
        return await self._answer(servable, job, results, encoding)

    async def multi_inference(
        self, record: RequestRecord, request: MultiInference, encoding: Encoding
    ) -> Any:
        """The answer lists the tasks' results in task order, encoded."""
        with (
            self._acquire(record, request.model) as servable,
            self._place(record, servable) as place,
        ):
            record.version = servable.id.version
            inference.check_multi_inference_models(request.models)
            job = inference.multi_inference_job(
                servable.model.signatures, request.tasks, request.input
            )
            results = await self._run(record, servable, job, request.timeout_ms, place)
        return await self._answer(servable, job, results, encoding)

    def admit(self, record: RequestRecord, request: ServableRequest) -> None:
        """Hold a place in the model's queue for a request whose body is still to be read,
        or refuse it at once (UNAVAILABLE, 503) when the queue is full; other problems are
        left to the request's own path."""
        record.model, record.label = request.name, request.label
        try:
            servable = self.core.registry.resolve(request)
        except ServingError:
            return
        self._held[record] = (servable.runner, servable.runner.reserve())

    def _place(self, record: RequestRecord, servable: Servable) -> Reservation:
        """The request's place in the queue of ``servable`` (released when its ``with``
        block ends): the one :meth:`admit` held, or a new one; refused (UNAVAILABLE) before
        anything is decoded when there is none."""
        runner, place = self._held.pop(record, (None, None))
        if runner is not servable.runner or place is None:
            if place is not None:
                place.release()
            place = servable.runner.reserve()
        return place

    def _acquire(self, record: RequestRecord, request: ServableRequest) -> Any:
        record.model, record.label = request.name, request.label
        return self.core.registry.acquire(request)

    async def _run(
        self,
        record: RequestRecord,
        servable: Servable,
        job: Job,
        timeout_ms: int,
        place: Reservation,
    ) -> list[np.ndarray]:
        record.examples = job.examples
        start = time.perf_counter()
        results, record.batch_size = await servable.runner.run(job.plan, timeout_ms, place)
        record.runtime = time.perf_counter() - start
        return results

    async def _answer(
        self,
        servable: Servable,
        job: Job,
        results: list[np.ndarray],
        encoding: Encoding,
    ) -> Any:
        """Results -> answer (e.g. classes by class) -> wire format, in one codec step."""
        cost = sum(map(_NBYTES, results)) * encoding.us_per_byte
        version, encode = servable.id.version, encoding.encode
        return await self.transcode(cost, lambda: encode(version, job.finish(results)))

    # -- readiness, status, metadata, config ----------------------------------------------------

    def ready(self) -> bool:
        """Every configured model has an AVAILABLE version, and the server is not draining."""
        return self.core.ready()

    @property
    def draining(self) -> bool:
        return self.core.draining

    def not_ready(self) -> dict[str, str]:
        """Why each model that is not ready is not (model -> reason)."""
        return self.core.not_ready()

    async def readiness_changed(self) -> None:
        """Return once readiness may have changed."""
        await self.core.monitor.changed()

    def model_status(self, record: RequestRecord, name: str, version: int | None = None) -> Any:
        """``GetModelStatusResponse``: every version ever seen (or one), highest first."""
        from tensorflow_serving.apis import get_model_status_pb2

        record.model = name
        versions = self.core.monitor.versions(name)
        if version is not None:
            if version not in versions:
                raise not_found(f"Could not find version {version} of model {name}")
            versions = {version: versions[version]}
        elif not versions:
            raise not_found(f"Could not find any versions of model {name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for v, status in versions.items():
            entry = response.model_version_status.add(version=v, state=int(status.state))
            entry.status.SetInParent()  # printed even when OK, as TF Serving does
            if status.error is not None:
                entry.status.error_code = int(status.error.code)
                entry.status.error_message = status.error.message
        return response

    def metadata(self, record: RequestRecord, request: ServableRequest) -> tuple[int, Any]:
        """(the version resolved, its ``SignatureDefMap``), for GetModelMetadata."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        with self._acquire(record, request) as servable:
            record.version = servable.id.version
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for name, signature_def in servable.model.signature_defs.items():
                signature_map.signature_def[name].CopyFrom(signature_def)
        return servable.id.version, signature_map

    async def reload_config(self, record: RequestRecord, config_proto: Any) -> None:
        from aserve.config import from_proto

        await self.core.reload(from_proto(config_proto))

    # -- TensorFlow's profiler (tensorflow.ProfilerService) -----------------------------------

    async def profile(
        self, record: RequestRecord, duration_ms: int, levels: Mapping[str, int], session_id: str
    ) -> bytes | None:
        """Trace the whole server for ``duration_ms``: the XSpace, serialized (None if empty)."""
        log.info("profiler: tracing for %d ms (session %r)", duration_ms, session_id)
        return await self._profiler.trace(duration_ms, levels, session_id)

    def end_profile(self, session_id: str) -> None:
        self._profiler.terminate(session_id)

    def available_versions(self, record: RequestRecord, name: str) -> list[int]:
        """The AVAILABLE versions of model ``name``, lowest first."""
        record.model = name
        return self.core.registry.available(name)

    # -- model management: the repository API (off unless --enable_model_management) ---------

    @property
    def model_management(self) -> bool:
        return self._management

    def repository_index(self, record: RequestRecord) -> list[IndexEntry]:
        """Every version of every model configured now or before, models in config order."""
        self._check_management()
        core, entries = self.core, []
        for name in core.known_models():
            configured = name in core.config.models
            for version, status in core.monitor.versions(name).items():
                reason = "" if status.error is None else status.error.message
                if status.state.name == "END" and not reason:
                    reason = "unloaded"
                entries.append(IndexEntry(name, version, status.state.name, reason))
            if not core.monitor.versions(name):
                problem = core.source.problem(name) or "no version found yet"
                entries.append(IndexEntry(name, None, "", problem if configured else "unloaded"))
        return entries

    async def load_model(self, record: RequestRecord, name: str, config_text: str | None) -> None:
        """Add or replace model ``name`` (``config_text``: a ModelConfig text proto; None:
        the config it has or last had) and return once it serves; see ServerCore.load_model."""
        from aserve.config import model_config_from_text

        record.model = name
        self._check_changes()
        if config_text is None:
            model = self.core.known_config(name)
            if model is None:
                raise not_found(
                    f"Model {name} is unknown: load it with a config (parameters.config, a "
                    "tensorflow.serving.ModelConfig text proto with its base_path)"
                )
        else:
            model = model_config_from_text(name, config_text)
        await self.core.load_model(model)

    async def unload_model(self, record: RequestRecord, name: str) -> None:
        """Remove model ``name``; return once it has unloaded (see ServerCore.unload_model)."""
        record.model = name
        self._check_changes()
        await self.core.unload_model(name)

    def _check_management(self) -> None:
        if not self._management:
            raise ServingError(
                Code.UNIMPLEMENTED,
                "Model management is off: start aserve with --enable_model_management",
            )

    def _check_changes(self) -> None:
        self._check_management()
        if self._list_owner:
            raise failed_precondition(
                f"The model list is owned by {self._list_owner}: a change through the "
                "repository API would be undone by its next read; edit the file instead"
            )

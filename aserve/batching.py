"""Dynamic batching on the event loop (TF Serving's BatchingSession + SharedBatchScheduler).

Every loaded version gets a runner; the service runs each request's plan through it:

    results, batch_size = await servable.runner.run(plan, timeout_ms)

:class:`DirectRunner` runs every plan on its own in the worker pool.
:class:`BatchingRunner` queues plans whose feeds and fetches are exactly those of a
signature (TF's rule; anything else runs on its own), one queue per such run. A
scheduler task per queue forms a batch once a batch thread is free and either the
batch is full (``max_batch_size``) or its oldest request has waited
``batch_timeout_micros``; it concatenates the inputs along dimension 0, runs the
batch once in the worker pool and splits the outputs back to each request.

* Requests whose inputs cannot be concatenated (different trailing shapes) are never
  merged with each other; with ``pad_variable_length_inputs`` they are padded as TF
  pads them (up to the largest size per dimension, with the tensor's first element).
  Requests that cannot be batched at all (no inputs, scalars, unequal first
  dimensions) run on their own, where TF Serving would fail them.
* ``allowed_batch_sizes`` pads a batch to the next allowed size by repeating the
  first row of its last request; the padding rows of the outputs are dropped.
* Back-pressure: when ``max_enqueued_batches`` batches wait, new requests fail at
  once with UNAVAILABLE. A request whose caller has gone (cancelled) or whose
  timeout passed is dropped from the queue before it runs.
* A failed batch fails each of its requests with the error; nothing hangs.

Batch threads (``num_batch_threads``) are shared by every queue of the server, as
TF's shared scheduler's threads are; batches run in the worker pool. Each batch is
reported as a :class:`~aserve.records.BatchRecord` as it starts (size, queue waits,
why it was cut); the scheduler tasks run under the server's supervisor.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np

from aserve._proto import batching_parameters_pb2
from aserve.batches import Feeds, Model, batch_size, compatibility, run_batch
from aserve.config import parse_text_proto
from aserve.cpus import usable_cpus
from aserve.errors import Code, ServingError, invalid_argument
from aserve.inference import Plan
from aserve.pool import WorkerPool
from aserve.records import BatchRecord

RETRY_AFTER: Final = (("retry-after", "1"),)
Ran = tuple[list[np.ndarray], int | None]  # the outputs, and the size of the batch run in
Spawn = Callable[..., asyncio.Task[Any]]  # Supervisor.spawn(coro, name=...)
OnBatch = Callable[[BatchRecord], None]


class Reservation:
    """A place held in a runner's queue for a request still being read and decoded:
    ``release(held)`` gives back what it holds."""

    __slots__ = ("_release", "_held")

    def __init__(self, release: Callable[[float], None], held: float = 1.0) -> None:
        self._release: Callable[[float], None] | None = release
        self._held = held

    def release(self) -> None:
        """Give the place back (once; the request queues for real, or ends)."""
        release, self._release = self._release, None
        if release is not None:
            release(self._held)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class Runner(Protocol):
    def run(
        self, plan: Plan, timeout_ms: int, reservation: Reservation | None = None
    ) -> Awaitable[Ran]: ...

    def queued(self) -> int:
        """Requests waiting to run (in a batch queue, or for a worker)."""
        ...

    def reserve(self) -> Reservation:
        """Hold a place for a request about to be decoded; UNAVAILABLE (ServingError) when
        the queue is full, so that an overloaded model refuses before decoding (or
        reading) anything."""
        ...

    async def close(self) -> None: ...


def _spawn(coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(coro, name=f"aserve-{name}")


class DirectRunner:
    """Every plan as its own session run in the worker pool.

    At most ``max_queued`` requests of this version wait for a worker or run (0: no bound);
    more fail at once with UNAVAILABLE (HTTP 503, ``Retry-After: 1``). A request still
    waiting for a worker when its timeout passes never runs (DEADLINE_EXCEEDED).
    """

    def __init__(self, model: Model, *, pool: WorkerPool, max_queued: int = 0) -> None:
        self._model = model
        self._pool = pool
        self._max_queued = max_queued
        self._waiting = 0  # submitted to the pool, not finished (queued for a worker or running)
        self._reserved = 0  # places held for requests still being decoded
        self._lock = threading.Lock()  # _waiting drops in the worker thread too

    async def run(self, plan: Plan, timeout_ms: int, reservation: Reservation | None = None) -> Ran:
        if reservation is not None:
            reservation.release()
        elif not self._has_room():
            raise self._full()
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms > 0 else None
        freed = [False]
        with self._lock:
            self._waiting += 1
        try:
            outputs = await self._pool.run_before(
                deadline, self._run, freed, plan.feeds, plan.fetches, timeout_ms
            )
        finally:
            self._free(freed)  # if it never ran (deadline, cancelled)
        return outputs, None

    def _run(
        self, freed: list[bool], feeds: Feeds, fetches: Sequence[str], timeout_ms: int
    ) -> list[np.ndarray]:
        """In the worker: the run, and its place freed as soon as the run ends, not when the
        loop gets round to the answer (under a flood that is a whole turn of the loop later,
        and the workers would idle meanwhile)."""
        try:
            return self._model.run(feeds, fetches, timeout_ms=timeout_ms)
        finally:
            self._free(freed)

    def _free(self, freed: list[bool]) -> None:
        with self._lock:
            if not freed[0]:
                freed[0] = True
                self._waiting -= 1

    def queued(self) -> int:
        return self._waiting

    def reserve(self) -> Reservation:
        if not self._has_room():
            raise self._full()
        self._reserved += 1
        return Reservation(self._unreserve)

    def _unreserve(self, examples: float) -> None:
        self._reserved -= 1

    def _has_room(self) -> bool:
        return not self._max_queued or self._waiting + self._reserved < self._max_queued

    def _full(self) -> ServingError:
        return ServingError(
            Code.UNAVAILABLE,
            f"Too many requests waiting for this model: {self._waiting + self._reserved} "
            f"(--max_queued_requests={self._max_queued})",
            headers=RETRY_AFTER,
            refused="overloaded",
        )

    async def close(self) -> None:
        pass


# -- options -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchingOptions:
    """TF Serving's BatchingParameters, with its defaults."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: usable_cpus().usable)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0  # 0: max_batch_size
    thread_pool_name: str = "batch_threads"  # labels the queuing-latency metric

    @property
    def capacity(self) -> int:
        """The largest batch run."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size:
            return self.max_execution_batch_size
        return self.max_batch_size

    @classmethod
    def from_proto(cls, params: Any) -> BatchingOptions:
        """From TF Serving's BatchingParameters; unset wrapper fields keep TF's defaults."""
        wrapped = (
            "max_batch_size",
            "batch_timeout_micros",
            "max_enqueued_batches",
            "num_batch_threads",
            "enable_large_batch_splitting",
            "max_execution_batch_size",
            "thread_pool_name",
        )
        given = {name: getattr(params, name).value for name in wrapped if params.HasField(name)}
        options = cls(
            **given,
            allowed_batch_sizes=tuple(params.allowed_batch_sizes),
            pad_variable_length_inputs=params.pad_variable_length_inputs,
        )
        options.validate()
        return options

    def validate(self) -> None:
        sizes = self.allowed_batch_sizes
        if min(self.max_batch_size, self.max_enqueued_batches, self.num_batch_threads) < 1:
            raise invalid_argument(
                "max_batch_size, max_enqueued_batches and num_batch_threads must be positive"
            )
        if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
            raise invalid_argument("allowed_batch_sizes entries must be monotonically increasing")
        if sizes and sizes[-1] != self.capacity:
            raise invalid_argument(
                "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                f"{sizes[-1]}; expected {self.capacity}"
            )


VERSION_PARAMETERS_FILE = "batching_params.pbtxt"


def version_options(text: str | None) -> BatchingOptions | None:
    """A version's ``batching_params.pbtxt`` (--enable_per_model_batching_parameters).

    None when the version has no such file (``text`` is None): TF Serving does not batch
    it then. A file that does not parse fails the load.
    """
    if text is None:
        return None
    params = parse_text_proto(text, batching_parameters_pb2.BatchingParameters)
    return BatchingOptions.from_proto(params)


# -- the scheduler (on the loop) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatcherStatistics:
    queued_requests: int
    running_batches: int
    last_batch_size: int
    batches: int


class _Task:
    __slots__ = ("feeds", "size", "key", "future", "enqueued", "deadline", "batch_size")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        feeds: Feeds,
        size: int,
        key: tuple[Any, ...],
        timeout_ms: int,
    ) -> None:
        self.feeds = feeds
        self.size = size
        self.key = key
        self.future: asyncio.Future[list[np.ndarray]] = loop.create_future()
        self.enqueued = loop.time()
        self.deadline = self.enqueued + timeout_ms / 1000 if timeout_ms > 0 else None
        self.batch_size = 0  # set when its batch starts


class Batcher:
    """One queue: the requests of one signature of one version."""

    def __init__(
        self,
        model: Model,
        fetches: Sequence[str],
        *,
        pool: WorkerPool,
        options: BatchingOptions,
        slots: asyncio.Semaphore,
        on_batch: OnBatch | None = None,
        model_name: str = "",
        spawn: Spawn = _spawn,
    ) -> None:
        self._model = model
        self._fetches = tuple(fetches)
        self._on_batch = on_batch
        self._model_name = model_name
        self._pool = pool
        self._options = options
        self._capacity = options.capacity  # the largest batch run
        self._loop = asyncio.get_running_loop()
        self._max_batches = options.max_enqueued_batches
        self._slots = slots
        self._queue: collections.deque[_Task] = collections.deque()
        self._queued = 0  # examples waiting
        # set when a request arrives or a batch finishes, while the scheduler waits for that
        self._wakeup: asyncio.Future[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._in_flight = 0  # batches running, including ones run without the scheduler
        self._last_batch_size = 0
        self._batches = 0
        self._scheduler = spawn(self._schedule(), name=f"batcher-{model_name}")

    async def run(self, feeds: Feeds, size: int, timeout_ms: int) -> tuple[list[np.ndarray], int]:
        """The request's outputs, and the size of the batch it ran in."""
        options = self._options
        if size > options.max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size {options.max_batch_size}"
            )
        if size > self._capacity:  # only with enable_large_batch_splitting
            return await self._run_split(feeds, size, timeout_ms)
        if not self.has_room(size):
            raise self.full()
        key = compatibility(feeds, pad=options.pad_variable_length_inputs)
        task = _Task(self._loop, feeds, size, key, timeout_ms)
        if not self._queue and not self._in_flight and not options.batch_timeout_micros:
            # an idle queue: run now as a batch of one, without a scheduler hop
            await self._slots.acquire()
            await self._run_batch([task], "idle")
            return task.future.result(), task.batch_size
        self._queue.append(task)
        self._queued += size
        if len(self._queue) == 1 or self._queued >= self._capacity:
            # only a new head or a full batch can change the scheduler's decision; waking it
            # for every arrival cost ~10 µs of loop time per request (32 gRPC clients, tiny)
            self._wake()
        return await task.future, task.batch_size  # cancelling this cancels the queued task

    async def _run_split(
        self, feeds: Feeds, size: int, timeout_ms: int
    ) -> tuple[list[np.ndarray], int]:
        step = self._capacity
        pieces = [{k: v[i : i + step] for k, v in feeds.items()} for i in range(0, size, step)]
        results = await asyncio.gather(
            *(self.run(p, min(step, size - i * step), timeout_ms) for i, p in enumerate(pieces))
        )
        outputs = [np.concatenate(parts) for parts in zip(*(r[0] for r in results), strict=True)]
        return outputs, max(r[1] for r in results)

    def statistics(self) -> BatcherStatistics:
        return BatcherStatistics(
            self._queued, self._in_flight, self._last_batch_size, self._batches
        )

    @property
    def queued_requests(self) -> int:
        return len(self._queue)

    def has_room(self, examples: float) -> bool:
        """Room in the queue for ``examples`` more (TF's max_enqueued_batches rule)."""
        return self._batches_with(examples) <= self._max_batches

    def full(self) -> ServingError:
        """TensorFlow's answer when the queue has no room (a new error each time: a raised
        one keeps the frames it went through)."""
        return ServingError(
            Code.UNAVAILABLE,
            "The batch scheduling queue to which this task was submitted is full; currently "
            f"{self._batches_with(1) - 1} batches enqueued and max_enqueued_batches is "
            f"{self._options.max_enqueued_batches}",
            headers=RETRY_AFTER,
            refused="overloaded",
        )

    def _batches_with(self, examples: float) -> int:
        # ceil(ceil(w) / c) == ceil(w / c): one ceiling division, in floats if w is one
        return int(-(-(self._queued + max(examples, 1)) // self._capacity))

    async def close(self) -> None:
        self._scheduler.cancel()
        for task in self._queue:
            if not task.future.done():
                task.future.set_exception(ServingError(Code.UNAVAILABLE, "The model was unloaded"))
        if self._running:
            await asyncio.wait(self._running)

    async def _schedule(self) -> None:
        loop = self._loop  # asyncio.get_running_loop() costs a getpid() call on 3.11
        while True:
            wait = self._wait_before_next_batch(loop.time())
            if wait is not None:
                await self._until_woken(wait)
                continue
            await self._slots.acquire()
            now = loop.time()
            cut = "full" if self._queued >= self._capacity else "timeout"
            if cut == "timeout" and not self._options.batch_timeout_micros:
                cut = "idle"  # no timeout: a partial batch starts once the queue is idle
            batch = self._take(now)
            if not batch:
                self._slots.release()
                continue
            job = loop.create_task(self._run_batch(batch, cut))
            self._running.add(job)
            job.add_done_callback(self._running.discard)

    async def _until_woken(self, wait: float) -> None:
        """Until :meth:`_wake` (a request arrived, a batch finished) or ``wait`` s (0: no
        limit). A bare future and timer: ``asyncio.wait_for`` on an ``Event`` ran ~10 µs of
        interpreted asyncio per batch."""
        waiter = self._wakeup = self._loop.create_future()
        timer = self._loop.call_later(wait, self._wake) if wait > 0 else None
        try:
            await waiter
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _record(self, batch: Sequence[_Task], size: int, cut: str) -> BatchRecord:
        now = self._loop.time()
        return BatchRecord(
            model=self._model_name,
            size=size,
            queued=tuple(now - task.enqueued for task in batch),
            pool=self._options.thread_pool_name,
            cut=cut,
        )

    def _wait_before_next_batch(self, now: float) -> float | None:
        """None: form a batch now. Otherwise how long to wait (0: until something changes).

        A full batch goes at once. With ``batch_timeout_micros`` a partial batch goes once its
        oldest request has waited that long (TF's rule). With no timeout, a partial batch goes
        at once when no batch of this queue is running, and otherwise waits for that batch to
        finish: requests arriving meanwhile join it. (TF would start it on any free thread;
        measured on the 784-2048-2048-10 MLP at 64 connections, that ran 825 batches of one
        example for 146 full ones and served 2,140 requests/s.)
        """
        if not self._queue:
            return 0
        if self._queued >= self._capacity:
            return None
        timeout = self._options.batch_timeout_micros / 1e6
        if timeout:
            wait = self._queue[0].enqueued + timeout - now
            return wait if wait > 0 else None
        return 0 if self._in_flight else None

    def _take(self, now: float) -> list[_Task]:
        """Pop the head request and every later compatible one that fits, in queue order."""
        batch: list[_Task] = []
        kept: list[_Task] = []
        room = self._capacity
        while self._queue and room:
            task = self._queue.popleft()
            if task.future.done():  # cancelled by its caller
                self._queued -= task.size
            elif task.deadline is not None and task.deadline <= now:
                self._queued -= task.size
                task.future.set_exception(
                    ServingError(  # TF Serving: the same text, as RESOURCE_EXHAUSTED (429)
                        Code.DEADLINE_EXCEEDED,
                        "Run() timeout exceeded while waiting in batching queue",
                        refused="deadline",
                    )
                )
            elif (batch and task.key != batch[0].key) or task.size > room:
                kept.append(task)
                if task.size > room:
                    break
            else:
                batch.append(task)
                room -= task.size
                self._queued -= task.size
        self._queue.extendleft(reversed(kept))
        return batch

    async def _run_batch(self, batch: list[_Task], cut: str) -> None:
        total = sum(task.size for task in batch)
        padded = next((s for s in self._options.allowed_batch_sizes if s >= total), total)
        for task in batch:
            task.batch_size = padded
        if self._on_batch is not None:
            self._on_batch(self._record(batch, padded, cut))
        self._in_flight += 1
        try:
            results = await self._pool.run(
                run_batch,
                self._model,
                [task.feeds for task in batch],
                self._fetches,
                pad=self._options.pad_variable_length_inputs,
                padded_size=padded,
                timeout_ms=_batch_timeout_ms(batch, self._loop),
            )
        except Exception as e:
            error = e if isinstance(e, ServingError) else ServingError(Code.INTERNAL, repr(e))
            for task in batch:
                if not task.future.done():
                    task.future.set_exception(error)
        else:
            for task, outputs in zip(batch, results, strict=True):
                if not task.future.done():
                    task.future.set_result(outputs)
        finally:
            self._slots.release()
            self._in_flight -= 1
            self._wake()
            self._last_batch_size, self._batches = total, self._batches + 1


def _batch_timeout_ms(batch: Sequence[_Task], loop: asyncio.AbstractEventLoop) -> int:
    """The longest time any request of the batch still allows (0: no limit)."""
    if any(task.deadline is None for task in batch):
        return 0
    now = loop.time()
    return max(1, int((max(task.deadline for task in batch if task.deadline) - now) * 1000))


class BatchingRunner:
    """Batches the plans that run a whole signature; runs anything else directly."""

    def __init__(
        self,
        model: Model,
        *,
        pool: WorkerPool,
        options: BatchingOptions,
        slots: asyncio.Semaphore,
        on_batch: OnBatch | None = None,
        model_name: str = "",
        spawn: Spawn = _spawn,
        max_queued: int = 0,
    ) -> None:
        self._new_batcher = functools.partial(
            Batcher,
            model,
            pool=pool,
            options=options,
            slots=slots,
            on_batch=on_batch,
            model_name=model_name,
            spawn=spawn,
        )
        self._direct = DirectRunner(model, pool=pool, max_queued=max_queued)
        self._batchable = {
            (
                frozenset(s.name for s in sig.inputs.values()),
                frozenset(s.name for s in sig.outputs.values()),
            )
            for sig in model.signatures.values()
            if sig.inputs
        }
        # by the feeds' names, in the signature's order, and the fetches
        self._batchers: dict[tuple[tuple[str, ...], tuple[str, ...]], Batcher] = {}
        self._reserved = 0.0  # examples held for requests still being decoded
        self._typical = 1.0  # examples per request, a moving average: what a place holds

    def run(
        self, plan: Plan, timeout_ms: int, reservation: Reservation | None = None
    ) -> Awaitable[Ran]:
        # a plain function handing back the batcher's coroutine: one frame less to resume
        if reservation is not None:
            reservation.release()  # from here the request's own examples count
        key = (tuple(plan.feeds), plan.fetches)
        batcher = self._batchers.get(key)
        size = batch_size(plan.feeds)
        if batcher is None or size is None:
            feeds = frozenset(plan.feeds)
            if size is None or (feeds, frozenset(plan.fetches)) not in self._batchable:
                return self._direct.run(plan, timeout_ms)
            if batcher is None:
                batcher = self._batchers[key] = self._new_batcher(plan.fetches)
        self._typical += (size - self._typical) / 8
        return batcher.run(plan.feeds, size, timeout_ms)

    def reserve(self) -> Reservation:
        """Refused only when every queue is full: a request's queue is known once decoded."""
        held = self._reserved + self._typical
        batchers = self._batchers
        if batchers and not any(b.has_room(held) for b in batchers.values()):
            raise next(iter(batchers.values())).full()
        self._reserved = held
        return Reservation(self._unreserve, self._typical)

    def _unreserve(self, examples: float) -> None:
        self._reserved -= examples

    def statistics(self) -> list[BatcherStatistics]:
        return [b.statistics() for b in self._batchers.values()]

    def queued(self) -> int:
        return sum(b.queued_requests for b in self._batchers.values()) + self._direct.queued()

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()

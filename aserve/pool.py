"""The only boundary between the event loop and threads.

TensorFlow runs in the inference workers; SavedModel loads and unloads run in
their own small pools, so a slow load never starves requests; blocking file
system calls go to an I/O pool, and decoding or encoding a large request or
answer to the codec threads, so neither ever stalls the event loop. Worker
threads run plain functions (``path -> model``, ``arrays -> arrays``) and never
touch the loop's state:
every mutation happens on the loop after the ``await``.

A call cancelled before a thread picked it up never runs. The hand-off is a
queue of (future, call) pairs answered with ``call_soon_threadsafe``: measured
on uvloop, a round trip costs ~55 µs this way and ~90 µs through
``run_in_executor`` and a ``ThreadPoolExecutor``, which wrap every call in a
second, lock-guarded future.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from aserve.cpus import usable_cpus
from aserve.errors import Code, ServingError

P = ParamSpec("P")
T = TypeVar("T")


class _Waiting:
    """An idle thread: it sleeps on its own lock until a call is handed to it."""

    __slots__ = ("wake", "item")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()  # held while the thread has nothing: released to hand it a call
        self.item: tuple[Any, ...] | None = None


class _Threads:
    """A fixed set of threads taking calls from one queue.

    A call is handed to the thread that went idle last (its caches are the warmest) and
    wakes only that one; calls queue only while every thread is busy, and a thread takes
    the next one without sleeping. ``queue.SimpleQueue`` on 3.11 wakes a second idle
    thread on every call it hands out (``get`` releases the lock it waited on), which then
    takes the GIL only to find the queue empty: with two workers that doubled the workers'
    CPU per one-at-a-time request (~100 -> ~200 µs on these machines) and added a context
    switch to every call's path.
    """

    def __init__(self, count: int, name: str) -> None:
        self._mutex = threading.Lock()
        self._queued: collections.deque[tuple[Any, ...] | None] = collections.deque()
        self._waiting: list[_Waiting] = []  # idle threads, the last one idle the shortest
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        deadline: float | None = None,
    ) -> asyncio.Future[T]:
        """Queue ``fn(*args, **kwargs)``; if it is still queued at ``deadline``
        (``time.monotonic()``), it never runs and fails with DEADLINE_EXCEEDED."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put((loop, future, fn, args, kwargs, deadline))
        return future

    def shutdown(self) -> None:
        for _ in self._threads:
            self._put(None)

    def join(self, deadline: float) -> None:
        """Wait for the threads to end, until ``deadline`` (``time.monotonic()``)."""
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))

    def _put(self, item: tuple[Any, ...] | None) -> None:
        with self._mutex:
            if not self._waiting:
                self._queued.append(item)
                return
            waiting = self._waiting.pop()
        waiting.item = item
        waiting.wake.release()

    def _take(self, me: _Waiting) -> tuple[Any, ...] | None:
        with self._mutex:
            if self._queued:
                return self._queued.popleft()
            self._waiting.append(me)
        me.wake.acquire()  # until _put hands this thread an item
        item, me.item = me.item, None
        return item

    def _work(self) -> None:
        me = _Waiting()
        while (item := self._take(me)) is not None:
            loop, future, fn, args, kwargs, deadline = item
            if future.cancelled():  # its caller has gone: do not run it
                continue
            if deadline is not None and time.monotonic() >= deadline:
                expired = ServingError(
                    Code.DEADLINE_EXCEEDED,
                    "Deadline exceeded while waiting for a worker",
                    refused="deadline",
                )
                _answer(loop, _fail, future, expired)
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:
                _answer(loop, _fail, future, e)
            else:
                _answer(loop, _succeed, future, result)


def _answer(loop: asyncio.AbstractEventLoop, how: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(how, *args)


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class WorkerPool:
    def __init__(self, *, workers: int = 0, load_threads: int = 0, unload_threads: int = 0) -> None:
        self.cpus = usable_cpus()
        cpus = self.cpus.usable
        self.workers = workers or cpus
        self.sizes = {
            "inference": self.workers,
            "load": load_threads or cpus,
            "unload": unload_threads or 1,
            "io": 2,
            "codec": min(cpus, 2),  # codec work holds the GIL: more threads would only queue
        }
        self._inference = _Threads(self.sizes["inference"], "aserve-worker")
        self._load = _Threads(self.sizes["load"], "aserve-load")
        self._unload = _Threads(self.sizes["unload"], "aserve-unload")
        self._io = _Threads(self.sizes["io"], "aserve-io")
        self._codec = _Threads(self.sizes["codec"], "aserve-codec")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` in an inference worker (where TensorFlow runs)."""
        return await self._inference.submit(fn, args, kwargs)

    async def run_before(
        self, deadline: float | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """:meth:`run`, unless no worker is free before ``deadline`` (``time.monotonic()``)."""
        return await self._inference.submit(fn, args, kwargs, deadline)

    async def load(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._load.submit(fn, args, kwargs)

    async def unload(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._unload.submit(fn, args, kwargs)

    async def io(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._io.submit(fn, args, kwargs)

    async def codec(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Decode or encode a large payload (JSON, protos, gzip) off the event loop."""
        return await self._codec.submit(fn, args, kwargs)

    def shutdown(self, timeout: float = 0.0) -> None:
        """Stop every thread once it has run what it holds; wait up to ``timeout`` s for them
        (blocking: call it off the loop), so that none is inside TensorFlow as the process
        exits."""
        pools = (self._inference, self._load, self._unload, self._io, self._codec)
        for threads in pools:
            threads.shutdown()
        deadline = time.monotonic() + timeout
        for threads in pools:
            threads.join(deadline)

"""The only boundary between the event loop and threads.

TensorFlow runs in the inference workers; SavedModel loads and unloads run in
their own small pools, so a slow load never starves requests; blocking file
system calls go to an I/O pool. Worker threads run plain functions
(``path -> model``, ``arrays -> arrays``) and never touch the loop's state:
every mutation happens on the loop after the ``await``.

A call cancelled before its thread picked it up never runs (the executor
future is cancelled with the awaiting task).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    workers: int
    in_flight: int  # inference calls submitted and not yet returned (running or queued)


class WorkerPool:
    def __init__(self, *, workers: int = 0, load_threads: int = 0, unload_threads: int = 0) -> None:
        cpus = os.cpu_count() or 1
        self.workers = workers or cpus
        self._inference = ThreadPoolExecutor(self.workers, thread_name_prefix="aserve-worker")
        self._load = ThreadPoolExecutor(load_threads or cpus, thread_name_prefix="aserve-load")
        self._unload = ThreadPoolExecutor(unload_threads or 1, thread_name_prefix="aserve-unload")
        self._io = ThreadPoolExecutor(2, thread_name_prefix="aserve-io")
        self._in_flight = 0

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` in an inference worker (where TensorFlow runs)."""
        self._in_flight += 1
        try:
            return await self._submit(self._inference, fn, *args, **kwargs)
        finally:
            self._in_flight -= 1

    async def load(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._submit(self._load, fn, *args, **kwargs)

    async def unload(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._submit(self._unload, fn, *args, **kwargs)

    async def io(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._submit(self._io, fn, *args, **kwargs)

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(workers=self.workers, in_flight=self._in_flight)

    def shutdown(self) -> None:
        for executor in (self._inference, self._load, self._unload, self._io):
            executor.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _submit(
        executor: ThreadPoolExecutor, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        if kwargs:
            return loop.run_in_executor(executor, lambda: fn(*args, **kwargs))
        return loop.run_in_executor(executor, fn, *args)

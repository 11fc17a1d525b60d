"""The worker pool: the loop's only hand-off to threads, on a real loop and real threads."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from aserve.errors import Code, ServingError
from aserve.pool import WorkerPool, _Threads


def run(scenario: object) -> None:
    asyncio.run(asyncio.wait_for(scenario, 20))  # type: ignore[arg-type]


@contextlib.contextmanager
def started(count: int) -> Iterator[_Threads]:
    threads = _Threads(count, "t")
    try:
        yield threads
    finally:
        threads.shutdown()


def test_one_call_at_a_time_goes_to_the_thread_idle_the_shortest() -> None:
    async def scenario() -> None:
        with started(4) as threads:
            names = set()
            for _ in range(30):
                names.add(await threads.submit(lambda: threading.current_thread().name, (), {}))
                await asyncio.sleep(0.01)  # the thread is idle again (it answers first)
            # SimpleQueue hands calls to whichever waiter wakes first; the stack of idle
            # threads always hands them to the one that just finished
            assert len(names) == 1

    run(scenario())


def test_calls_queue_while_every_thread_is_busy_and_all_run_in_parallel_up_to_the_count() -> None:
    async def scenario() -> None:
        running, most = 0, 0
        lock = threading.Lock()

        def work(i: int) -> int:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.02)
            with lock:
                running -= 1
            return i * i

        with started(3) as threads:
            results = await asyncio.gather(*(threads.submit(work, (i,), {}) for i in range(12)))
            assert results == [i * i for i in range(12)]
            assert most == 3

    run(scenario())


def test_errors_come_back_on_the_loop_and_the_thread_goes_on() -> None:
    async def scenario() -> None:
        def fail() -> None:
            raise ValueError("no")

        with started(1) as threads:
            with pytest.raises(ValueError, match="no"):
                await threads.submit(fail, (), {})
            assert await threads.submit(lambda x: x + 1, (1,), {}) == 2

    run(scenario())


def test_a_call_cancelled_or_expired_while_queued_never_runs() -> None:
    async def scenario() -> None:
        ran: list[str] = []
        gate = threading.Event()
        with started(1) as threads:
            busy = threads.submit(gate.wait, (5,), {})
            cancelled = threads.submit(ran.append, ("cancelled",), {})
            expired = threads.submit(ran.append, ("expired",), {}, time.monotonic() + 0.01)
            fine = threads.submit(ran.append, ("fine",), {})
            cancelled.cancel()
            await asyncio.sleep(0.05)  # past the deadline, still queued behind the gate
            gate.set()
            await busy
            with pytest.raises(ServingError) as caught:
                await expired
            assert caught.value.code is Code.DEADLINE_EXCEEDED
            await fine
            assert ran == ["fine"]

    run(scenario())


def test_shutdown_ends_idle_and_busy_threads_once_they_have_run_what_they_hold() -> None:
    async def scenario() -> None:
        pool = WorkerPool(workers=2)
        done = await asyncio.gather(*(pool.run(time.sleep, 0.01) for _ in range(4)))
        assert done == [None] * 4
        pending = asyncio.ensure_future(pool.run(time.sleep, 0.05))
        await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, pool.shutdown, 5.0)
        await pending  # it was running: it finished before its thread ended
        assert not [t for t in pool._inference._threads if t.is_alive()]

    run(scenario())

"""Batch forming, merging, splitting and back-pressure, with a fake model on a real loop.

The fake model records every batch it runs; ``hold`` keeps the batch threads busy so
that requests pile up in the queue deterministically.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from aserve._proto import batching_parameters_pb2
from aserve.batches import batch_size, merge, split
from aserve.batching import Batcher, BatchingOptions
from aserve.errors import Code, ServingError
from aserve.pool import WorkerPool
from aserve.records import BatchRecord


class FakeModel:
    signatures: Mapping[str, Any] = {}

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.hold = threading.Event()
        self.hold.set()
        self.fail = False
        self.records: list[BatchRecord] = []

    def run(
        self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str], *, timeout_ms: int = 0
    ) -> list[np.ndarray]:
        self.hold.wait(10)
        x = feeds["x"]
        self.batches.append(x.shape[0])
        if self.fail:
            raise ServingError(Code.INTERNAL, "the batch failed")
        return [x * 0.5 + 2]


def x(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array(values, np.float32)}


def scenario(body: Callable[[Batcher, FakeModel], Awaitable[None]], **options: Any) -> FakeModel:
    model = FakeModel()

    async def main() -> None:
        pool = WorkerPool(workers=2)
        settings = BatchingOptions(**{"num_batch_threads": 1, "max_batch_size": 4, **options})
        batcher = Batcher(
            model,
            ["y"],
            pool=pool,
            options=settings,
            slots=asyncio.Semaphore(settings.num_batch_threads),
            on_batch=model.records.append,
            model_name="m",
        )
        try:
            await asyncio.wait_for(body(batcher, model), 10)
        finally:
            model.hold.set()
            await batcher.close()
            pool.shutdown()

    asyncio.run(main())
    return model


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


def submit(
    batcher: Batcher, feeds: dict[str, np.ndarray], timeout_ms: int = 0
) -> asyncio.Future[list[np.ndarray]]:
    """Queue one request; its outputs."""

    async def outputs() -> list[np.ndarray]:
        return (await batcher.run(feeds, batch_size(feeds) or 0, timeout_ms))[0]

    return asyncio.ensure_future(outputs())


def test_waiting_requests_are_merged_and_answered_each_with_its_own_rows() -> None:
    async def body(batcher: Batcher, model: FakeModel) -> None:
        model.hold.clear()
        first = submit(batcher, x(0.0))  # occupies the only batch thread
        await until(lambda: batcher.statistics().running_batches == 1)
        rest = [submit(batcher, x(float(i))) for i in (1, 2, 3)]
        await until(lambda: batcher.statistics().queued_requests == 3)
        model.hold.set()
        answers = await asyncio.gather(first, *rest)
        assert [a[0].tolist() for a in answers] == [[2.0], [2.5], [3.0], [3.5]]

    model = scenario(body)
    assert model.batches == [1, 3]
    assert [(r.model, r.size, len(r.queued), r.cut) for r in model.records] == [
        ("m", 1, 1, "idle"),
        ("m", 3, 3, "idle"),
    ]


def test_each_request_learns_the_size_of_its_batch_and_each_batch_why_it_started() -> None:
    async def body(batcher: Batcher, model: FakeModel) -> None:
        model.hold.clear()
        first = asyncio.ensure_future(batcher.run(x(0.0), 1, 0))
        await until(lambda: batcher.statistics().running_batches == 1)
        full = [asyncio.ensure_future(batcher.run(x(1.0, 2.0), 2, 0)) for _ in range(2)]
        late = asyncio.ensure_future(batcher.run(x(3.0), 1, 0))
        await until(lambda: batcher.statistics().queued_requests == 5)
        model.hold.set()
        sizes = [size for _, size in await asyncio.gather(first, *full, late)]
        assert sizes == [1, 4, 4, 1]

    model = scenario(body, batch_timeout_micros=1000)
    assert [(r.size, r.cut) for r in model.records] == [(1, "timeout"), (4, "full"), (1, "timeout")]


def test_full_queue_rejects_at_once_with_unavailable() -> None:
    async def body(batcher: Batcher, model: FakeModel) -> None:
        model.hold.clear()
        running = submit(batcher, x(1.0))
        await until(lambda: batcher.statistics().running_batches == 1)
        queued = [submit(batcher, x(1.0, 2.0)) for _ in range(4)]  # 8 examples: 2 batches of 4
        await until(lambda: batcher.statistics().queued_requests == 8)
        with pytest.raises(ServingError) as info:
            await batcher.run(x(1.0), 1, 0)
        assert info.value.code is Code.UNAVAILABLE
        assert info.value.message == (
            "The batch scheduling queue to which this task was submitted is full; currently 2 "
            "batches enqueued and max_enqueued_batches is 2"
        )
        model.hold.set()
        await asyncio.gather(running, *queued)

    assert scenario(body, max_enqueued_batches=2).batches == [1, 4, 4]


def test_oversized_requests_are_refused_or_split() -> None:
    async def refuse(batcher: Batcher, model: FakeModel) -> None:
        with pytest.raises(ServingError) as info:
            await batcher.run(x(*range(5)), 5, 0)
        assert (info.value.code, info.value.message) == (
            Code.INVALID_ARGUMENT,
            "Task size 5 is larger than maximum input batch size 4",
        )

    scenario(refuse)

    async def split_up(batcher: Batcher, model: FakeModel) -> None:
        (y,), size = await batcher.run(x(*range(6)), 6, 0)
        assert y.tolist() == [2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
        assert size == 4

    model = scenario(
        split_up, max_batch_size=8, enable_large_batch_splitting=True, max_execution_batch_size=4
    )
    assert sorted(model.batches) == [2, 4]


def test_requests_with_different_trailing_shapes_are_never_merged() -> None:
    async def body(batcher: Batcher, model: FakeModel) -> None:
        model.hold.clear()
        first = submit(batcher, x(0.0))
        await until(lambda: batcher.statistics().running_batches == 1)
        wide = submit(batcher, {"x": np.ones((1, 2), np.float32)})
        narrow = [submit(batcher, x(1.0)), submit(batcher, x(2.0))]
        await until(lambda: batcher.statistics().queued_requests == 3)
        model.hold.set()
        results = await asyncio.gather(first, wide, *narrow)
        assert results[1][0].shape == (1, 2)

    assert scenario(body).batches == [1, 1, 2]


def test_a_failed_batch_fails_each_of_its_requests() -> None:
    async def body(batcher: Batcher, model: FakeModel) -> None:
        model.fail = True
        outcomes = await asyncio.gather(
            *(submit(batcher, x(1.0)) for _ in range(3)), return_exceptions=True
        )
        assert all(
            isinstance(o, ServingError) and o.message == "the batch failed" for o in outcomes
        )

    scenario(body)


def test_cancelled_and_expired_requests_leave_the_queue_before_running() -> None:
    async def body(batcher: Batcher, model: FakeModel) -> None:
        model.hold.clear()
        running = submit(batcher, x(0.0))
        await until(lambda: batcher.statistics().running_batches == 1)
        gone = submit(batcher, x(7.0))
        late = submit(batcher, x(8.0), timeout_ms=1)
        kept = submit(batcher, x(9.0))
        await until(lambda: batcher.statistics().queued_requests == 3)
        gone.cancel()
        await asyncio.sleep(0.01)  # late's deadline passes while it waits
        model.hold.set()
        assert (await kept)[0].tolist() == [6.5]
        with pytest.raises(ServingError) as info:
            await late
        assert info.value.code is Code.DEADLINE_EXCEEDED  # TF Serving: RESOURCE_EXHAUSTED
        assert info.value.message == "Run() timeout exceeded while waiting in batching queue"
        await running

    assert scenario(body).batches == [1, 1]


def test_batch_timeout_waits_for_more_requests() -> None:
    async def body(batcher: Batcher, model: FakeModel) -> None:
        answers = await asyncio.gather(*(submit(batcher, x(float(i))) for i in range(3)))
        assert [a[0].tolist() for a in answers] == [[2.0], [2.5], [3.0]]

    assert scenario(body, batch_timeout_micros=200_000).batches == [3]


def test_a_batch_that_fills_up_does_not_wait_for_the_batch_timeout() -> None:
    async def body(batcher: Batcher, model: FakeModel) -> None:
        head = submit(batcher, x(0.0))
        await asyncio.sleep(0.02)  # the scheduler now sleeps until the head's 60 s timeout
        rest = [submit(batcher, x(float(i))) for i in (1, 2, 3)]
        await asyncio.wait_for(asyncio.gather(head, *rest), 5)

    assert scenario(body, batch_timeout_micros=60_000_000).batches == [4]


def test_merge_pads_to_allowed_batch_size_with_the_last_requests_first_row() -> None:
    merged = merge([x(1.0), x(2.0, 3.0)], pad=False, padded_size=4)
    assert merged["x"].tolist() == [1.0, 2.0, 3.0, 2.0]
    outputs = split([merged["x"] * 10], [1, 2], 4)
    assert [o[0].tolist() for o in outputs] == [[10.0], [20.0, 30.0]]


def test_merge_pads_variable_length_inputs_with_the_first_element() -> None:
    short = {"x": np.array([[5, 6]], np.int32)}
    long = {"x": np.array([[1, 2, 3]], np.int32)}
    assert merge([short, long], pad=True, padded_size=2)["x"].tolist() == [[5, 6, 5], [1, 2, 3]]


def test_split_refuses_outputs_that_are_not_batch_major() -> None:
    with pytest.raises(ServingError) as info:
        split([np.zeros(3)], [1, 1], 2)
    assert info.value.message.startswith("Batched output tensor's 0th dimension does not equal")


def test_batch_size() -> None:
    assert batch_size(x(1.0, 2.0)) == 2
    assert batch_size({"x": np.float32(1.0)}) is None  # scalars cannot be batched
    assert batch_size({"a": np.zeros(2), "b": np.zeros(3)}) is None
    assert batch_size({}) is None


def test_options_from_tf_serving_file() -> None:
    params = batching_parameters_pb2.BatchingParameters()
    assert BatchingOptions.from_proto(params) == BatchingOptions()
    params.thread_pool_name.value = "pool_a"
    assert BatchingOptions.from_proto(params).thread_pool_name == "pool_a"
    params.max_batch_size.value = 128
    params.allowed_batch_sizes.extend([32, 64])
    with pytest.raises(ServingError) as info:
        BatchingOptions.from_proto(params)
    assert info.value.message == (
        "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 64; expected 128"
    )


def test_with_no_timeout_a_partial_batch_waits_for_the_running_one_even_with_a_free_thread() -> (
    None
):
    async def body(batcher: Batcher, model: FakeModel) -> None:
        model.hold.clear()
        first = submit(batcher, x(0.0))
        await until(lambda: batcher.statistics().running_batches == 1)
        rest = [submit(batcher, x(float(i))) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)  # a second batch thread is free, yet nothing starts
        assert batcher.statistics().running_batches == 1
        assert batcher.statistics().queued_requests == 3
        model.hold.set()
        await asyncio.gather(first, *rest)

    assert scenario(body, num_batch_threads=2).batches == [1, 3]


def test_a_full_batch_starts_on_a_free_thread_while_another_runs() -> None:
    async def body(batcher: Batcher, model: FakeModel) -> None:
        model.hold.clear()
        first = submit(batcher, x(0.0))
        await until(lambda: batcher.statistics().running_batches == 1)
        full = [submit(batcher, x(float(i))) for i in range(4)]
        await until(lambda: batcher.statistics().running_batches == 2)
        model.hold.set()
        await asyncio.gather(first, *full)

    assert sorted(scenario(body, num_batch_threads=2).batches) == [1, 4]


def test_direct_runs_are_bounded_and_expire_while_waiting_for_a_worker() -> None:
    from aserve.batching import DirectRunner
    from aserve.inference import Plan

    model = FakeModel()

    def plan(value: float) -> Plan:
        return Plan({"x": np.array([value], np.float32)}, ("y",), ("y",))

    async def main() -> None:
        pool = WorkerPool(workers=1)
        runner = DirectRunner(model, pool=pool, max_queued=2)
        try:
            model.hold.clear()
            busy = asyncio.ensure_future(runner.run(plan(0.0), 0))  # holds the only worker
            late = asyncio.ensure_future(runner.run(plan(1.0), timeout_ms=20))
            await until(lambda: runner.queued() == 2)
            with pytest.raises(ServingError):
                runner.reserve()
            with pytest.raises(ServingError) as full:
                await runner.run(plan(2.0), 0)
            assert full.value.code is Code.UNAVAILABLE
            assert full.value.headers == (("retry-after", "1"),)
            await asyncio.sleep(0.05)  # late's deadline passes while it waits
            model.hold.set()
            assert (await busy)[0][0].tolist() == [2.0]
            with pytest.raises(ServingError) as expired:
                await late
            assert expired.value.code is Code.DEADLINE_EXCEEDED
            place = runner.reserve()  # room again; a held place counts until released
            runner.reserve()
            with pytest.raises(ServingError):
                runner.reserve()
            place.release()
            place.release()  # once only
            runner.reserve()
        finally:
            model.hold.set()
            pool.shutdown()

    asyncio.run(main())
    assert model.batches == [1]  # the expired request never ran


def test_a_direct_run_frees_its_place_when_the_run_ends_not_when_the_loop_resumes() -> None:
    from aserve.batching import DirectRunner
    from aserve.inference import Plan

    model = FakeModel()

    async def main() -> None:
        pool = WorkerPool(workers=1)
        runner = DirectRunner(model, pool=pool, max_queued=1)
        try:
            model.hold.clear()
            task = asyncio.ensure_future(runner.run(Plan(x(1.0), ("y",), ("y",)), 0))
            await until(lambda: runner.queued() == 1)
            model.hold.set()
            # the loop stays busy here (as under a flood): only the worker can free the place
            deadline = time.monotonic() + 10
            while runner.queued() and time.monotonic() < deadline:
                time.sleep(0.001)
            assert runner.queued() == 0
            runner.reserve().release()  # room for the next request already
            assert (await task)[0][0].tolist() == [2.5]
            assert runner.queued() == 0  # freed once, not twice
        finally:
            model.hold.set()
            pool.shutdown()

    asyncio.run(main())

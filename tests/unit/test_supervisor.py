import asyncio

import pytest

from aserve.supervisor import Supervisor


def test_a_task_that_dies_is_logged_and_fails_the_supervisor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> Supervisor:
        supervisor = Supervisor()

        async def forever() -> None:
            await asyncio.Event().wait()

        async def dies() -> None:
            raise ValueError("stale state ahead")

        survivor = supervisor.spawn(forever(), name="forever")
        supervisor.spawn(dies(), name="poller")
        await asyncio.wait_for(supervisor.failed.wait(), 5)
        assert not survivor.done()
        await supervisor.cancel()
        assert survivor.cancelled()
        return supervisor

    supervisor = asyncio.run(scenario())
    assert str(supervisor.failure) == "aserve-poller died: ValueError: stale state ahead"
    assert "aserve-poller died; stopping the server" in caplog.text
    assert "stale state ahead" in caplog.text  # with its traceback


def test_tasks_that_end_or_are_cancelled_are_not_failures() -> None:
    async def scenario() -> Supervisor:
        supervisor = Supervisor()

        async def ends() -> None:
            return None

        done = supervisor.spawn(ends(), name="once")
        await done
        supervisor.spawn(asyncio.sleep(10), name="sleeper")
        await supervisor.cancel()
        return supervisor

    supervisor = asyncio.run(scenario())
    assert supervisor.failure is None and not supervisor.failed.is_set()

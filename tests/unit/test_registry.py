import asyncio
from typing import Any

import pytest

from aserve.errors import Code, ServingError
from aserve.ids import ServableId, ServableRequest
from aserve.registry import Registry, Servable


def servable(name: str, version: int) -> Servable:
    model: Any = object()
    return Servable(ServableId(name, version), model, runner=model)


def test_resolution_latest_specific_label() -> None:
    registry = Registry()
    v1, v2 = servable("m", 1), servable("m", 2)
    registry.add(v1)
    registry.add(v2)
    registry.set_labels("m", {"stable": 1, "canary": 3})
    assert registry.resolve(ServableRequest.latest("m")) is v2
    assert registry.resolve(ServableRequest.specific("m", 1)) is v1
    assert registry.resolve(ServableRequest.labeled("m", "stable")) is v1
    registry.remove(v2)
    assert registry.resolve(ServableRequest.latest("m")) is v1


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (ServableRequest.latest("x"), Code.NOT_FOUND, "Servable not found for request: Latest(x)"),
        (
            ServableRequest.specific("m", 9),
            Code.NOT_FOUND,
            "Servable not found for request: Specific(m, 9)",
        ),
        (
            ServableRequest.labeled("m", "nope"),
            Code.INVALID_ARGUMENT,
            "Unrecognized servable version label: nope",
        ),
        (
            ServableRequest.labeled("m", "canary"),
            Code.NOT_FOUND,
            "Servable not found for request: Specific(m, 3)",
        ),
    ],
)
def test_resolution_errors(request_: ServableRequest, code: Code, message: str) -> None:
    registry = Registry()
    registry.add(servable("m", 1))
    registry.set_labels("m", {"canary": 3})
    with pytest.raises(ServingError) as info:
        registry.resolve(request_)
    assert (info.value.code, info.value.message) == (code, message)


def test_handles_count_and_drain() -> None:
    async def scenario() -> list[str]:
        registry = Registry()
        v1 = servable("m", 1)
        registry.add(v1)
        events = []
        handle = registry.acquire(ServableRequest.latest("m"))
        with handle as held:
            assert held is v1 and v1.refs == 1
            registry.remove(v1)  # unload begins while the request holds v1
            drain = asyncio.create_task(v1.drained())
            await asyncio.sleep(0)
            events.append(f"draining={not drain.done()}")
        await asyncio.wait_for(drain, 1)
        events.append(f"drained refs={v1.refs}")
        return events

    assert asyncio.run(scenario()) == ["draining=True", "drained refs=0"]


def test_every_drain_waiter_wakes() -> None:
    async def scenario() -> tuple[bool, bool]:
        registry = Registry()
        v1 = servable("m", 1)
        registry.add(v1)
        with registry.acquire(ServableRequest.latest("m")):
            first = asyncio.create_task(v1.drained())
            second = asyncio.create_task(v1.drained())
            await asyncio.sleep(0)
        done, _ = await asyncio.wait({first, second}, timeout=1)
        return first in done, second in done

    assert asyncio.run(scenario()) == (True, True)


def test_a_handle_pins_only_inside_its_with_block() -> None:
    registry = Registry()
    v1 = servable("m", 1)
    registry.add(v1)
    handle = registry.acquire(ServableRequest.latest("m"))
    assert v1.refs == 0  # acquired but never entered: nothing is pinned
    with handle as held:
        assert held is v1 and v1.refs == 1
    assert v1.refs == 0
    with pytest.raises(RuntimeError), handle:
        pass
    assert v1.refs == 0

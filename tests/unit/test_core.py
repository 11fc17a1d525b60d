"""The model life cycle (source -> manager -> registry) on a real loop and real folders.

The loader is a fake (aserve's own seam): a version folder containing a file
named ``broken`` fails to load; one containing ``slow`` takes 0.3 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aserve.config import ModelConfig, ServingConfig
from aserve.core import CoreOptions, LoadedVersion, ServerCore
from aserve.errors import Code, ServingError
from aserve.harness import ModelState
from aserve.ids import ServableId, ServableRequest
from aserve.manager import RetryPolicy
from aserve.pool import WorkerPool
from aserve.records import LoadRecord
from aserve.supervisor import Supervisor
from aserve.versions import AllVersions, Specific


class FakeModel:
    def __init__(self, path: str) -> None:
        self.path = path
        self.closed = False

    def close(self) -> None:
        self.closed = True


def fake_load(path: str, report: Callable[[LoadRecord], None]) -> LoadedVersion:
    if Path(path, "broken").exists():
        report(LoadRecord(path, ok=False, seconds=0.0))
        raise ServingError(Code.NOT_FOUND, f"broken model in {path}")
    if Path(path, "slow").exists():
        time.sleep(0.3)
    report(LoadRecord(path, ok=True, seconds=0.0))
    return LoadedVersion(FakeModel(path))


def run(scenario: Callable[[ServerCore], Awaitable[None]], **options: object) -> None:
    async def main() -> None:
        pool = WorkerPool(workers=1)
        supervisor = Supervisor()
        core = ServerCore(
            options=CoreOptions(
                file_system_poll_wait_seconds=0.05,
                retry=RetryPolicy(max_retries=1, interval_seconds=0.01),
                **options,  # type: ignore[arg-type]
            ),
            pool=pool,
            load_model=fake_load,
            supervisor=supervisor,
        )
        try:
            await asyncio.wait_for(scenario(core), 20)
        finally:
            await core.shutdown(asyncio.get_running_loop().time() + 1)
            await supervisor.cancel()
            pool.shutdown()
        assert supervisor.failure is None

    asyncio.run(main())


def states(core: ServerCore, name: str = "m") -> dict[int, str]:
    return {v: s.state.name for v, s in core.monitor.versions(name).items()}


async def until(core: ServerCore, predicate: Callable[[], bool]) -> None:
    await core.monitor.wait_until(predicate)


def version(base: Path, v: int, *markers: str) -> None:
    (base / f".tmp{v}").mkdir()
    for marker in markers:
        (base / f".tmp{v}" / marker).touch()
    (base / f".tmp{v}").rename(base / str(v))


def test_new_version_swaps_in_and_old_one_unloads_after(tmp_path: Path) -> None:
    version(tmp_path, 1)

    async def scenario(core: ServerCore) -> None:
        await core.start(ServingConfig.of(ModelConfig("m", str(tmp_path))))
        await until(core, lambda: states(core) == {1: "AVAILABLE"})
        version(tmp_path, 2, "slow")
        await until(core, lambda: states(core) == {2: "AVAILABLE", 1: "END"})
        log = [(s.id.version, s.state) for s in core.monitor.log()]
        # v1 starts unloading only after v2 is AVAILABLE
        assert log.index((1, ModelState.UNLOADING)) > log.index((2, ModelState.AVAILABLE))
        assert core.registry.resolve(ServableRequest.latest("m")).id == ServableId("m", 2)

    run(scenario)


def test_version_held_by_a_request_is_not_unloaded_until_released(tmp_path: Path) -> None:
    version(tmp_path, 1)

    async def scenario(core: ServerCore) -> None:
        await core.start(ServingConfig.of(ModelConfig("m", str(tmp_path))))
        await until(core, lambda: states(core) == {1: "AVAILABLE"})
        with core.registry.acquire(ServableRequest.latest("m")) as held:
            version(tmp_path, 2)
            await until(core, lambda: states(core) == {2: "AVAILABLE", 1: "UNLOADING"})
            await asyncio.sleep(0.3)
            assert states(core)[1] == "UNLOADING" and not held.model.closed
        await until(core, lambda: states(core)[1] == "END")
        assert held.model.closed

    run(scenario)


def test_broken_version_ends_with_its_error_and_old_keeps_serving(tmp_path: Path) -> None:
    version(tmp_path, 1)

    async def scenario(core: ServerCore) -> None:
        await core.start(ServingConfig.of(ModelConfig("m", str(tmp_path))))
        await until(core, lambda: states(core) == {1: "AVAILABLE"})
        version(tmp_path, 2, "broken")
        await until(core, lambda: states(core).get(2) == "END")
        await asyncio.sleep(0.2)  # a few more polls: the errored version is not retried
        status = core.monitor.versions("m")
        assert status[2].error is not None and status[2].error.code is Code.NOT_FOUND
        assert states(core) == {2: "END", 1: "AVAILABLE"}
        assert [s.state for s in core.monitor.log() if s.id.version == 2].count(
            ModelState.LOADING
        ) == 1

    run(scenario)


def test_removed_version_brings_the_previous_one_back(tmp_path: Path) -> None:
    version(tmp_path, 1)
    version(tmp_path, 2)

    async def scenario(core: ServerCore) -> None:
        await core.start(ServingConfig.of(ModelConfig("m", str(tmp_path))))
        await until(core, lambda: states(core) == {2: "AVAILABLE"})
        (tmp_path / "2").rename(tmp_path / "gone")
        await until(core, lambda: states(core) == {2: "END", 1: "AVAILABLE"})

    run(scenario)


def test_policy_all_and_specific(tmp_path: Path) -> None:
    for v in (1, 2, 3):
        version(tmp_path, v)

    async def scenario(core: ServerCore) -> None:
        await core.start(ServingConfig.of(ModelConfig("m", str(tmp_path), AllVersions())))
        await until(core, lambda: states(core) == {3: "AVAILABLE", 2: "AVAILABLE", 1: "AVAILABLE"})
        await core.apply(
            ServingConfig.of(ModelConfig("m", str(tmp_path), Specific(frozenset({2}))))
        )
        await until(core, lambda: states(core) == {3: "END", 2: "AVAILABLE", 1: "END"})

    run(scenario)


def test_reload_label_rules(tmp_path: Path) -> None:
    version(tmp_path, 1)
    both = Specific(frozenset({1, 2}))

    async def scenario(core: ServerCore) -> None:
        base = str(tmp_path)
        # start-up labels may name versions that are not loaded yet
        await core.start(ServingConfig.of(ModelConfig("m", base, both, {"stable": 1, "canary": 2})))
        await until(core, lambda: states(core) == {1: "AVAILABLE"})
        # a reload may not move a label to a version that is not AVAILABLE
        try:
            await core.apply(ServingConfig.of(ModelConfig("m", base, both, {"stable": 2})))
        except ServingError as e:
            assert e.code is Code.FAILED_PRECONDITION
            assert e.message == (
                "Request to assign label to version 2 of model m, which is not currently "
                "available for inference"
            )
        else:
            raise AssertionError("label moved to an unavailable version")
        assert core.registry.labels("m") == {"stable": 1, "canary": 2}
        version(tmp_path, 2)
        await until(core, lambda: states(core) == {2: "AVAILABLE", 1: "AVAILABLE"})
        await core.apply(ServingConfig.of(ModelConfig("m", base, both, {"stable": 2})))
        assert core.registry.resolve(ServableRequest.labeled("m", "stable")).id.version == 2

    run(scenario)


def test_unchanged_or_new_labels_may_name_unavailable_versions_with_the_flag(
    tmp_path: Path,
) -> None:
    version(tmp_path, 1)
    both = Specific(frozenset({1, 2}))

    async def scenario(core: ServerCore) -> None:
        base = str(tmp_path)
        await core.start(ServingConfig.of(ModelConfig("m", base, both, {"stable": 1})))
        await until(core, lambda: states(core) == {1: "AVAILABLE"})
        await core.apply(ServingConfig.of(ModelConfig("m", base, both, {"stable": 1, "canary": 2})))
        try:
            await core.apply(
                ServingConfig.of(ModelConfig("m", base, both, {"stable": 2, "canary": 2}))
            )
        except ServingError as e:
            assert e.code is Code.FAILED_PRECONDITION
        else:
            raise AssertionError("an existing label moved to an unavailable version")

    run(scenario, allow_version_labels_for_unavailable_models=True)


def test_model_removed_from_config_unloads(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    version(tmp_path / "a", 1)
    version(tmp_path / "b", 1)

    async def scenario(core: ServerCore) -> None:
        a, b = ModelConfig("a", str(tmp_path / "a")), ModelConfig("b", str(tmp_path / "b"))
        await core.start(ServingConfig.of(a))
        await core.reload(ServingConfig.of(a, b))  # waits for the added model
        assert states(core, "b") == {1: "AVAILABLE"}
        await core.apply(ServingConfig.of(b))
        await until(core, lambda: states(core, "a") == {1: "END"})
        assert core.registry.available("a") == []

    run(scenario)


# -- one model at a time: the repository API's load and unload -------------------------------


def served(core: ServerCore, name: str) -> Any:
    return core.registry.resolve(ServableRequest.latest(name))


async def refused(call: Awaitable[None]) -> ServingError:
    try:
        await call
    except ServingError as e:
        return e
    raise AssertionError("the call succeeded")


def test_load_model_adds_or_replaces_one_model_and_returns_once_it_serves(
    tmp_path: Path,
) -> None:
    for name in ("a", "b", "b2"):
        (tmp_path / name).mkdir()
        version(tmp_path / name, 1, "slow")
    a, b = ModelConfig("a", str(tmp_path / "a")), ModelConfig("b", str(tmp_path / "b"))

    async def scenario(core: ServerCore) -> None:
        await core.start(ServingConfig.of(a))
        await core.load_model(b)
        assert states(core, "b") == {1: "AVAILABLE"} and list(core.config.models) == ["a", "b"]
        version(tmp_path / "b", 2)
        await core.load_model(b)  # unchanged: its versions are read again now
        assert served(core, "b").id.version == 2  # (version 1 unloads after it)
        moved = ModelConfig("b", str(tmp_path / "b2"))
        await core.load_model(moved)
        assert core.config.models["b"] is moved
        assert served(core, "b").model.path == str(tmp_path / "b2" / "1")
        assert core.registry.available("a") == [1]  # the other model never moved

    run(scenario)


def test_a_failed_load_puts_the_model_back_as_it_was(tmp_path: Path) -> None:
    for name in ("good", "broken"):
        (tmp_path / name).mkdir()
    version(tmp_path / "good", 1)
    version(tmp_path / "broken", 7, "broken")
    good = ModelConfig("m", str(tmp_path / "good"))

    async def scenario(core: ServerCore) -> None:
        await core.start(ServingConfig.of(good))
        await until(core, lambda: states(core) == {1: "AVAILABLE"})
        error = await refused(core.load_model(ModelConfig("m", str(tmp_path / "broken"))))
        assert error.code is Code.UNKNOWN and "broken model in" in error.message
        assert core.config.models["m"] is good and core.registry.available("m") == [1]
        error = await refused(core.load_model(ModelConfig("new", str(tmp_path / "nowhere"))))
        assert "Could not find base path" in error.message
        assert "new" not in core.known_models()  # a new model that failed is removed again
        # a label naming a version that is not AVAILABLE: refused before anything changes
        labeled = ModelConfig("m", str(tmp_path / "good"), labels={"canary": 2})
        error = await refused(core.load_model(labeled))
        assert error.code is Code.FAILED_PRECONDITION and core.config.models["m"] is good

    run(scenario)


def test_unload_model_removes_one_model_and_remembers_its_config(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        version(tmp_path / name, 1)
    a, b = ModelConfig("a", str(tmp_path / "a")), ModelConfig("b", str(tmp_path / "b"))

    async def scenario(core: ServerCore) -> None:
        await core.start(ServingConfig.of(a, b))
        await core.wait_settled(["a", "b"])
        await core.unload_model("a")
        assert states(core, "a") == {1: "END"} and list(core.config.models) == ["b"]
        assert core.known_models() == ["b", "a"] and core.known_config("a") is a
        error = await refused(core.unload_model("a"))
        assert error.code is Code.NOT_FOUND
        await core.load_model(a)
        assert core.registry.available("a") == [1]

    run(scenario)

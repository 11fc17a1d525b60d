"""The status history: live versions always, recent END states only, a bounded log."""

from aserve.errors import Code, ServingError
from aserve.harness import ModelState
from aserve.ids import ServableId
from aserve.monitor import Monitor

START, LOADING, AVAILABLE, UNLOADING, END = ModelState


def load(monitor: Monitor, name: str, version: int) -> None:
    for state in (START, LOADING, AVAILABLE):
        monitor.update(ServableId(name, version), state)


def unload(monitor: Monitor, name: str, version: int) -> None:
    for state in (UNLOADING, END):
        monitor.update(ServableId(name, version), state)


def states(monitor: Monitor, name: str) -> list[tuple[int, ModelState]]:
    return [(v, s.state) for v, s in monitor.versions(name).items()]


def deploy(monitor: Monitor, name: str, deploys: int) -> None:
    """Version 1, then ``deploys`` rolling deploys: N+1 loads, then N unloads."""
    load(monitor, name, 1)
    for version in range(2, deploys + 2):
        load(monitor, name, version)
        unload(monitor, name, version - 1)


def test_the_history_of_a_model_is_bounded() -> None:
    monitor = Monitor()
    deploy(monitor, "m", 100)
    history = states(monitor, "m")
    assert history[0] == (101, AVAILABLE)
    assert 2 <= len(history) <= 11  # not 101: the live version and the recent ENDs
    assert history[1:] == [(v, END) for v in range(100, 101 - len(history), -1)]


def test_rolling_deploys_keep_the_live_version_and_the_recent_ends() -> None:
    monitor = Monitor(ended_per_model=3)
    deploy(monitor, "m", 100)
    assert states(monitor, "m") == [(101, AVAILABLE), (100, END), (99, END), (98, END)]
    assert monitor.status(ServableId("m", 1)) is None  # forgotten
    assert monitor.is_available(ServableId("m", 101))


def test_live_versions_are_never_forgotten() -> None:
    monitor = Monitor(ended_per_model=1)
    for version in (1, 2, 3):
        load(monitor, "m", version)  # policy "all": three live versions
    monitor.update(ServableId("m", 4), START)
    monitor.update(ServableId("m", 5), LOADING)
    for version in (6, 7, 8):
        load(monitor, "m", version)
        unload(monitor, "m", version)
    assert states(monitor, "m") == [
        (8, END),
        (5, LOADING),
        (4, START),
        (3, AVAILABLE),
        (2, AVAILABLE),
        (1, AVAILABLE),
    ]


def test_the_most_recent_ends_are_kept_with_their_errors() -> None:
    monitor = Monitor(ended_per_model=2)
    failed = ServingError(Code.NOT_FOUND, "no SavedModel")
    monitor.update(ServableId("m", 7), START)
    monitor.update(ServableId("m", 7), END, failed)  # an old version that failed to load
    load(monitor, "m", 1)
    unload(monitor, "m", 1)
    load(monitor, "m", 2)
    unload(monitor, "m", 2)
    assert states(monitor, "m") == [(2, END), (1, END)]  # ended after 7: 7 goes
    load(monitor, "m", 1)  # loaded again: live, then the most recent END
    unload(monitor, "m", 1)
    monitor.update(ServableId("m", 3), START)
    monitor.update(ServableId("m", 3), END, failed)
    assert states(monitor, "m") == [(3, END), (1, END)]
    status = monitor.status(ServableId("m", 3))
    assert status is not None and status.error is failed


def test_models_with_nothing_live_are_bounded() -> None:
    monitor = Monitor(ended_models=2)
    load(monitor, "kept", 1)
    for name in ("a", "b", "c", "d"):  # configured, then removed
        load(monitor, name, 1)
        unload(monitor, name, 1)
    assert [name for name in "abcd" if monitor.versions(name)] == ["c", "d"]
    assert states(monitor, "kept") == [(1, AVAILABLE)]
    load(monitor, "c", 2)  # c is live again: no longer counted among the retired
    load(monitor, "e", 1)
    unload(monitor, "e", 1)
    load(monitor, "f", 1)
    unload(monitor, "f", 1)
    assert [name for name in "cdef" if monitor.versions(name)] == ["c", "e", "f"]
    assert states(monitor, "c") == [(2, AVAILABLE), (1, END)]


def test_the_transition_log_is_bounded() -> None:
    monitor = Monitor(log_size=4)
    load(monitor, "m", 1)
    unload(monitor, "m", 1)
    assert [(s.id.version, s.state) for s in monitor.log()] == [
        (1, LOADING),
        (1, AVAILABLE),
        (1, UNLOADING),
        (1, END),
    ]

import pytest

from aserve.harness import ALLOWED, Harness, IllegalTransition, ModelState, State
from aserve.ids import ServableId


def make() -> tuple[Harness, list[tuple[State, State]]]:
    seen: list[tuple[State, State]] = []
    harness = Harness(
        ServableId("m", 1), "/m/1", listener=lambda h, before, _: seen.append((before, h.state))
    )
    return harness, seen


def test_happy_path_reports_every_transition() -> None:
    harness, seen = make()
    for to in (State.LOADING, State.READY, State.UNLOADING, State.DISABLED):
        harness.transition(to)
    assert seen == [
        (State.NEW, State.NEW),
        (State.NEW, State.LOADING),
        (State.LOADING, State.READY),
        (State.READY, State.UNLOADING),
        (State.UNLOADING, State.DISABLED),
    ]


@pytest.mark.parametrize("start", list(State))
@pytest.mark.parametrize("to", list(State))
def test_only_allowed_transitions(start: State, to: State) -> None:
    harness, _ = make()
    harness.state = start
    if to in ALLOWED[start]:
        harness.transition(to)
        assert harness.state is to
    else:
        with pytest.raises(IllegalTransition):
            harness.transition(to)
        assert harness.state is start


def test_public_states() -> None:
    assert [s.public for s in State] == [
        ModelState.START,
        ModelState.LOADING,
        ModelState.AVAILABLE,
        ModelState.UNLOADING,
        ModelState.END,
        ModelState.END,
    ]

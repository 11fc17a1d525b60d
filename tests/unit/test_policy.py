"""The availability-preserving policy, as tables of (version, state, aspired) rows."""

import pytest

from aserve.harness import State
from aserve.policy import Action, VersionSnapshot, next_action

N, L, R, U, D, E = (
    State.NEW,
    State.LOADING,
    State.READY,
    State.UNLOADING,
    State.DISABLED,
    State.ERROR,
)


def snaps(*rows: tuple[int, State, bool]) -> list[VersionSnapshot]:
    return [VersionSnapshot(v, s, a) for v, s, a in rows]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], None),
        ([(1, N, True)], (Action.LOAD, 1)),
        ([(1, N, True), (2, N, True)], (Action.LOAD, 2)),  # highest new first
        ([(1, L, True)], None),  # loading: nothing more to do
        ([(1, R, True)], None),
        # swap: new version loads while the old one serves...
        ([(1, R, False), (2, N, True)], (Action.LOAD, 2)),
        ([(1, R, False), (2, L, True)], None),
        # ...and the old one unloads only once the new one is serving
        ([(1, R, False), (2, R, True)], (Action.UNLOAD, 1)),
        # the new one failed: the old one keeps serving
        ([(1, R, False), (2, E, True)], None),
        # nothing aspired any more: unload
        ([(1, R, False)], (Action.UNLOAD, 1)),
        # two un-aspired serving versions: unload the lowest even before the new one is up
        ([(1, R, False), (2, R, False), (3, L, True)], (Action.UNLOAD, 1)),
        ([(1, U, False), (2, R, True)], None),
        ([(1, D, False), (2, R, True)], None),
        # unloads come before loads
        ([(1, R, False), (2, R, True), (3, N, True)], (Action.UNLOAD, 1)),
    ],
)
def test_next_action(
    rows: list[tuple[int, State, bool]], expected: tuple[Action, int] | None
) -> None:
    assert next_action(snaps(*rows)) == expected

"""The availability-preserving version policy (TF's AvailabilityPreservingPolicy).

Stateless and idempotent: given every tracked version of one model, it names the
next load or unload, or nothing. Call it again after each action.

    (1) Unload the lowest-numbered un-aspired AVAILABLE version, unless it is the
        only one serving and no aspired version is serving yet.
    (2) Otherwise load the highest-numbered aspired version not started yet.

So a new version loads while the old one serves, and the old one is unloaded
only once the new one is AVAILABLE; if the new one fails, the old keeps serving.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from aserve.harness import State


class Action(enum.Enum):
    LOAD = "load"
    UNLOAD = "unload"


@dataclass(frozen=True, slots=True)
class VersionSnapshot:
    version: int
    state: State
    aspired: bool


def next_action(snapshots: Sequence[VersionSnapshot]) -> tuple[Action, int] | None:
    has_aspired = any(s.aspired for s in snapshots)
    has_aspired_serving = any(s.aspired and s.state is State.READY for s in snapshots)
    unaspired_serving = [s.version for s in snapshots if not s.aspired and s.state is State.READY]
    if unaspired_serving and (not has_aspired or has_aspired_serving or len(unaspired_serving) > 1):
        return Action.UNLOAD, min(unaspired_serving)
    new = [s.version for s in snapshots if s.aspired and s.state is State.NEW]
    if new:
        return Action.LOAD, max(new)
    return None

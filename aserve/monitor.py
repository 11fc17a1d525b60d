"""What clients may know about servable states: TF Serving's five public states.

The monitor keeps the latest public state of each version, which is what GetModelStatus
reports, plus a bounded log of transitions. Waiters are woken on every change.

The history is bounded, so that a server deployed to every few minutes for months holds as
much as on its first day (TF Serving keeps every version it ever saw):

* a live version (START, LOADING, AVAILABLE, UNLOADING) is always kept;
* of a model's ended versions (END, with their error if any), the ``ended_per_model``
  that ended last are kept; an older one is forgotten (its status is NOT_FOUND);
* of the models with no live version left (removed from the config), the
  ``ended_models`` that ended last are kept; an older one is forgotten entirely.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aserve.errors import ServingError
from aserve.harness import ModelState
from aserve.ids import ServableId


@dataclass(frozen=True, slots=True)
class VersionStatus:
    id: ServableId
    state: ModelState
    error: ServingError | None = None
    at: float = 0.0  # wall-clock time of the change


ENDED_PER_MODEL = 10
ENDED_MODELS = 100


class Monitor:
    def __init__(
        self,
        *,
        log_size: int = 1000,
        ended_per_model: int = ENDED_PER_MODEL,
        ended_models: int = ENDED_MODELS,
    ) -> None:
        self._states: dict[str, dict[int, VersionStatus]] = {}
        # per model, its END versions in the order they ended (dicts as ordered sets)
        self._ended: dict[str, dict[int, None]] = {}
        self._retired: dict[str, None] = {}  # models with nothing live, in the order they ended
        self._ended_per_model = max(ended_per_model, 1)
        self._ended_models = max(ended_models, 1)
        self._log: collections.deque[VersionStatus] = collections.deque(maxlen=log_size)
        self._changed = asyncio.Event()

    def update(self, id: ServableId, state: ModelState, error: ServingError | None = None) -> None:
        status = VersionStatus(id, state, error, time.time())
        versions = self._states.setdefault(id.name, {})
        versions[id.version] = status
        ended = self._ended.setdefault(id.name, {})
        ended.pop(id.version, None)
        if state is ModelState.END:
            ended[id.version] = None
            while len(ended) > self._ended_per_model:
                del versions[_pop_oldest(ended)]
        self._retired.pop(id.name, None)
        if len(ended) == len(versions):  # nothing of this model is live
            self._retired[id.name] = None
            while len(self._retired) > self._ended_models:
                name = _pop_oldest(self._retired)
                del self._states[name], self._ended[name]
        self._log.append(status)
        self.notify()

    def notify(self) -> None:
        """Wake every waiter (a state changed, or what readiness depends on did)."""
        self._changed.set()
        self._changed = asyncio.Event()

    def versions(self, name: str) -> dict[int, VersionStatus]:
        """The versions of ``name`` (live ones and the recent ENDs), highest first."""
        states = self._states.get(name, {})
        return {v: states[v] for v in sorted(states, reverse=True)}

    def models(self) -> list[str]:
        return list(self._states)

    def status(self, id: ServableId) -> VersionStatus | None:
        return self._states.get(id.name, {}).get(id.version)

    def is_available(self, id: ServableId) -> bool:
        status = self.status(id)
        return status is not None and status.state is ModelState.AVAILABLE

    def log(self) -> list[VersionStatus]:
        return list(self._log)

    async def changed(self) -> None:
        """Return at the next state change."""
        await self._changed.wait()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, re-checking after every state change."""
        while not predicate():
            await self._changed.wait()


def _pop_oldest(ordered: dict[Any, None]) -> Any:
    oldest = next(iter(ordered))
    del ordered[oldest]
    return oldest

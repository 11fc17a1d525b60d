"""What clients may know about servable states: TF Serving's five public states.

The monitor keeps the latest public state of every version ever seen (END
entries included, with their error), which is what GetModelStatus reports, plus
a bounded log of transitions. Waiters are woken on every change.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

from aserve.errors import ServingError
from aserve.harness import ModelState
from aserve.ids import ServableId


@dataclass(frozen=True, slots=True)
class VersionStatus:
    id: ServableId
    state: ModelState
    error: ServingError | None = None
    at: float = 0.0  # wall-clock time of the change


class Monitor:
    def __init__(self, *, log_size: int = 1000) -> None:
        self._states: dict[str, dict[int, VersionStatus]] = {}
        self._log: collections.deque[VersionStatus] = collections.deque(maxlen=log_size)
        self._changed = asyncio.Event()

    def update(self, id: ServableId, state: ModelState, error: ServingError | None = None) -> None:
        status = VersionStatus(id, state, error, time.time())
        self._states.setdefault(id.name, {})[id.version] = status
        self._log.append(status)
        self.notify()

    def notify(self) -> None:
        """Wake every waiter (a state changed, or what readiness depends on did)."""
        self._changed.set()
        self._changed = asyncio.Event()

    def versions(self, name: str) -> dict[int, VersionStatus]:
        """Every version of ``name`` ever seen, highest first."""
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

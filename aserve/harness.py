"""The life of one servable version: an explicit state machine.

Internal states and their public names (``ModelVersionStatus.State``):

    NEW        START      tracked, nothing done yet
    LOADING    LOADING    load (and retries, warm-up) running in the load pool
    READY      AVAILABLE  published to the registry; requests may use it
    UNLOADING  UNLOADING  removed from the registry; waiting for the last handle, then unloading
    DISABLED   END        unloaded, or dropped before it was loaded
    ERROR      END        load failed for good; the error is kept

Every move goes through :meth:`Harness.transition`, which refuses moves not in
``ALLOWED`` and reports the change to one listener (the manager logs it,
updates the monitor and so on). Pure: no asyncio, no TensorFlow.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aserve.errors import ServingError
from aserve.ids import ServableId

if TYPE_CHECKING:
    from aserve.registry import Servable


class ModelState(enum.IntEnum):
    """``tensorflow.serving.ModelVersionStatus.State`` (values as in the proto)."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


class State(enum.Enum):
    NEW = "NEW"
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    DISABLED = "DISABLED"
    ERROR = "ERROR"

    @property
    def public(self) -> ModelState:
        return _PUBLIC[self]

    @property
    def ended(self) -> bool:
        return self in (State.DISABLED, State.ERROR)


_PUBLIC = {
    State.NEW: ModelState.START,
    State.LOADING: ModelState.LOADING,
    State.READY: ModelState.AVAILABLE,
    State.UNLOADING: ModelState.UNLOADING,
    State.DISABLED: ModelState.END,
    State.ERROR: ModelState.END,
}

ALLOWED: dict[State, frozenset[State]] = {
    State.NEW: frozenset({State.LOADING, State.DISABLED}),
    State.LOADING: frozenset({State.READY, State.ERROR}),
    State.READY: frozenset({State.UNLOADING}),
    State.UNLOADING: frozenset({State.DISABLED}),
    State.DISABLED: frozenset(),
    State.ERROR: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


Listener = Callable[["Harness", State, float], None]


class Harness:
    """One version's state, path, loaded servable and error."""

    def __init__(self, id: ServableId, path: str, *, listener: Listener) -> None:
        self.id = id
        self.path = path
        self.aspired = True
        self.state = State.NEW
        self.error: ServingError | None = None
        self.servable: Servable | None = None
        self._listener = listener
        self._since = time.monotonic()
        listener(self, State.NEW, 0.0)

    def transition(self, to: State, *, error: ServingError | None = None) -> None:
        if to not in ALLOWED[self.state]:
            raise IllegalTransition(f"{self.id}: {self.state.name} -> {to.name}")
        before, now = self.state, time.monotonic()
        elapsed, self._since = now - self._since, now
        self.state, self.error = to, error
        self._listener(self, before, elapsed)

    def __repr__(self) -> str:
        return f"Harness({self.id}, {self.state.name}, aspired={self.aspired})"

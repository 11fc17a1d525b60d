"""The one servable registry: an immutable snapshot per model, plus counted handles.

Requests resolve a :class:`~aserve.ids.ServableRequest` against the current
snapshot without locks (everything runs on the one event loop) and hold the
servable through a handle:

    with registry.acquire(ServableRequest.latest("m")) as servable:
        ... await work on servable ...

The manager unloads a version in this order, so no request ever loses the
version it holds:

    registry.remove(servable)   # new requests no longer see it
    await servable.drained()    # the last handle has been released
    ... unload in the pool ...
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from aserve.errors import Code, ServingError, not_found
from aserve.ids import ServableId, ServableRequest

if TYPE_CHECKING:
    from aserve.batching import Runner
    from aserve.loader import Model


class Servable:
    """A loaded version as requests see it; counts the requests holding it."""

    __slots__ = ("id", "model", "runner", "refs", "_drained")

    def __init__(self, id: ServableId, model: Model, runner: Runner) -> None:
        self.id = id
        self.model = model
        self.runner = runner  # runs the model's plans: directly, or batched
        self.refs = 0
        self._drained: asyncio.Event | None = None

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0 and self._drained is not None:
            self._drained.set()
            self._drained = None

    async def drained(self) -> None:
        """Wait until no request holds this servable (every waiter wakes)."""
        if self.refs:
            if self._drained is None:
                self._drained = asyncio.Event()
            await self._drained.wait()

    def __repr__(self) -> str:
        return f"Servable({self.id}, refs={self.refs})"


class Handle:
    """Holds a servable for the duration of one ``with`` block, and only then.

    The reference is taken on entering the block and dropped on leaving it, so a handle
    kept outside ``with`` pins nothing, and a handle cannot be entered twice.
    """

    __slots__ = ("_servable", "_used")

    def __init__(self, servable: Servable) -> None:
        self._servable = servable
        self._used = False

    def __enter__(self) -> Servable:
        if self._used:
            raise RuntimeError("a Handle holds its servable for one with-block only")
        self._used = True
        self._servable.refs += 1
        return self._servable

    def __exit__(self, *exc_info: object) -> None:
        self._servable.release()


_EMPTY: Mapping[Any, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ModelView:
    """One model as requests see it at one instant."""

    versions: Mapping[int, Servable] = field(default_factory=lambda: _EMPTY)  # AVAILABLE only
    labels: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    latest: Servable | None = None

    @classmethod
    def build(cls, versions: Mapping[int, Servable], labels: Mapping[str, int]) -> ModelView:
        latest = versions[max(versions)] if versions else None
        return cls(MappingProxyType(dict(versions)), MappingProxyType(dict(labels)), latest)


class Registry:
    def __init__(self) -> None:
        self._models: dict[str, ModelView] = {}

    # -- updates (from the manager and the server core) --------------------------------

    def add(self, servable: Servable) -> None:
        view = self._view(servable.id.name)
        self._publish(
            servable.id.name, {**view.versions, servable.id.version: servable}, view.labels
        )

    def remove(self, servable: Servable) -> None:
        view = self._view(servable.id.name)
        versions = {v: s for v, s in view.versions.items() if s is not servable}
        self._publish(servable.id.name, versions, view.labels)

    def set_labels(self, name: str, labels: Mapping[str, int]) -> None:
        self._publish(name, self._view(name).versions, labels)

    # -- queries (from requests) ----------------------------------------------------------

    def resolve(self, request: ServableRequest) -> Servable:
        view = self._models.get(request.name)
        if request.label is not None:
            version = view.labels.get(request.label) if view else None
            if version is None:
                raise ServingError(
                    Code.INVALID_ARGUMENT, f"Unrecognized servable version label: {request.label}"
                )
            request = ServableRequest.specific(request.name, version)
        if view is None:
            servable = None
        elif request.version is None:
            servable = view.latest
        else:
            servable = view.versions.get(request.version)
        if servable is None:
            raise not_found(f"Servable not found for request: {request}")
        return servable

    def acquire(self, request: ServableRequest) -> Handle:
        return Handle(self.resolve(request))

    def servables(self) -> list[Servable]:
        """Every published (AVAILABLE) version of every model."""
        return [s for view in self._models.values() for s in view.versions.values()]

    def labels(self, name: str) -> Mapping[str, int]:
        return self._view(name).labels

    def available(self, name: str) -> list[int]:
        return sorted(self._view(name).versions)

    def _view(self, name: str) -> ModelView:
        return self._models.get(name) or ModelView()

    def _publish(
        self, name: str, versions: Mapping[int, Servable], labels: Mapping[str, int]
    ) -> None:
        if versions or labels:
            self._models[name] = ModelView.build(versions, labels)
        else:
            self._models.pop(name, None)

"""The manager: reconciles each model's aspired versions with what is loaded.

This is TF Serving's AspiredVersionsManager on one event loop. A source hands
it the *complete* set of versions it wants per model; leaving a version out
means "unload it":

    manager.set_aspired_versions("m", {1: "/models/m/1"})  # v1 loads
    manager.set_aspired_versions("m", {2: "/models/m/2"})  # v2 loads; v1 unloads after
    manager.set_aspired_versions("m", {})                  # everything of m unloads

One reconciler task wakes on every new aspired set and every finished load or
unload, then (1) applies pending aspired sets, (2) forgets ended versions that
are no longer aspired, (3) asks :func:`aserve.policy.next_action` what to do
for each model until it says nothing. Loads and unloads run as tasks; all
state changes go through :class:`aserve.harness.Harness` on the loop.

A version that fails to load is retried ``max_retries`` times, then ends in
END with its error; it is not retried while it stays aspired (as TF Serving).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aserve.errors import Code, ServingError
from aserve.harness import Harness, State
from aserve.ids import ServableId
from aserve.monitor import Monitor
from aserve.policy import Action, VersionSnapshot, next_action
from aserve.records import Observers, StateRecord
from aserve.registry import Registry, Servable

log = logging.getLogger("aserve.manager")

LoadFn = Callable[[ServableId, str], Awaitable[Servable]]
UnloadFn = Callable[[Servable], Awaitable[None]]
ReclaimFn = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 5  # attempts after the first
    interval_seconds: float = 60.0


class Manager:
    def __init__(
        self,
        *,
        load: LoadFn,
        unload: UnloadFn,
        registry: Registry,
        monitor: Monitor,
        retry: RetryPolicy = RetryPolicy(),
        reclaim: ReclaimFn | None = None,
        observers: Observers | None = None,
    ) -> None:
        self._load_fn = load
        self._unload_fn = unload
        self._reclaim = reclaim
        self._observers = observers or Observers()
        self._registry = registry
        self._monitor = monitor
        self._retry = retry
        self._harnesses: dict[str, dict[int, Harness]] = {}
        self._pending: dict[str, dict[int, str]] = {}
        self._wake = asyncio.Event()
        self._loads: set[asyncio.Task[None]] = set()
        self._unloads: set[asyncio.Task[None]] = set()

    # -- inputs ------------------------------------------------------------------------

    def set_aspired_versions(self, name: str, versions: Mapping[int, str]) -> None:
        """Replace the full set of versions wanted for ``name`` (version -> folder)."""
        self._pending[name] = dict(versions)
        self._wake.set()

    # -- queries -----------------------------------------------------------------------

    def settled(self, name: str) -> bool:
        """True once every aspired version of ``name`` is AVAILABLE or has ended."""
        harnesses = self._harnesses.get(name, {})
        aspired = [h for h in harnesses.values() if h.aspired]
        return (
            name not in self._pending
            and bool(aspired)
            and all(h.state is State.READY or h.state.ended for h in aspired)
        )

    def aspires(self, name: str) -> bool:
        """Whether any version of ``name`` is wanted (so that waiting for it can end)."""
        if name in self._pending:
            return bool(self._pending[name])
        return any(h.aspired for h in self._harnesses.get(name, {}).values())

    def serving(self, name: str, *, aspired: bool) -> bool:
        """Whether a version of ``name`` that is (or is no longer) wanted is AVAILABLE."""
        harnesses = self._harnesses.get(name, {}).values()
        return any(h.aspired is aspired and h.state is State.READY for h in harnesses)

    def load_errors(self, name: str) -> dict[int, ServingError]:
        harnesses = self._harnesses.get(name, {})
        return {v: h.error for v, h in harnesses.items() if h.aspired and h.error is not None}

    # -- the reconciler ----------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.reconcile()

    def reconcile(self) -> None:
        for name in list(self._pending):
            self._apply_aspired(name)
        self._forget_ended()
        for name in list(self._harnesses):
            self._act(name)

    def _apply_aspired(self, name: str) -> None:
        aspired = self._pending[name]
        harnesses = self._harnesses.setdefault(name, {})
        if any(v in aspired and h.state is State.UNLOADING for v, h in harnesses.items()):
            return  # re-aspired while unloading: retry once the unload has finished
        del self._pending[name]
        for version, harness in harnesses.items():
            if version not in aspired:
                harness.aspired = False
                if harness.state is State.NEW:
                    harness.transition(State.DISABLED)
        for version, path in aspired.items():
            existing = harnesses.get(version)
            if existing is None or (existing.state.ended and not existing.aspired):
                harnesses[version] = Harness(ServableId(name, version), path, listener=self._report)
            else:
                existing.aspired = True

    def _forget_ended(self) -> None:
        for name, harnesses in list(self._harnesses.items()):
            for version, harness in list(harnesses.items()):
                if harness.state.ended and not harness.aspired:
                    del harnesses[version]
            if not harnesses and name not in self._pending:
                del self._harnesses[name]

    def _act(self, name: str) -> None:
        harnesses = self._harnesses[name]
        while action := next_action(
            [VersionSnapshot(v, h.state, h.aspired) for v, h in harnesses.items()]
        ):
            kind, version = action
            harness = harnesses[version]
            if kind is Action.LOAD:
                harness.transition(State.LOADING)
                self._spawn(self._loads, self._load(harness))
            else:
                assert harness.servable is not None
                harness.transition(State.UNLOADING)
                self._registry.remove(harness.servable)
                self._spawn(self._unloads, self._unload(harness))

    # -- loading and unloading -----------------------------------------------------------

    async def _load(self, harness: Harness) -> None:
        error = await self._try_load(harness)
        if error is not None:
            harness.transition(State.ERROR, error=error)
        self._wake.set()

    async def _try_load(self, harness: Harness) -> ServingError | None:
        """Load with retries; on success publish the servable and return None."""
        attempts = 1 + max(self._retry.max_retries, 0)
        for attempt in range(1, attempts + 1):
            try:
                servable = await self._load_fn(harness.id, harness.path)
            except ServingError as e:
                error = e
            except Exception as e:  # a broken model must never take the server down
                log.exception("%s: unexpected error while loading", harness.id)
                error = ServingError(Code.UNKNOWN, f"{type(e).__name__}: {e}")
            else:
                harness.servable = servable
                self._registry.add(servable)  # servable first, then AVAILABLE
                harness.transition(State.READY)
                return None
            if attempt == attempts or not harness.aspired:
                return error
            log.warning(
                "%s: load attempt %d of %d failed, retrying in %g s: %s",
                harness.id,
                attempt,
                attempts,
                self._retry.interval_seconds,
                error,
            )
            await asyncio.sleep(max(self._retry.interval_seconds, 0.0))
            if not harness.aspired:
                return error
        raise AssertionError("unreachable")

    async def _unload(self, harness: Harness) -> None:
        servable = harness.servable
        assert servable is not None
        if servable.refs:
            log.info("%s: waiting for %d request(s) to finish", harness.id, servable.refs)
        await servable.drained()
        try:
            await self._unload_fn(servable)
        except Exception:
            log.exception("%s: error while unloading", harness.id)
        harness.servable = None
        del servable  # the last reference: the version's memory can go now
        harness.transition(State.DISABLED)
        self._wake.set()
        if self._reclaim is not None:
            await self._reclaim()

    async def shutdown(self, grace_seconds: float) -> None:
        """Stop loading, let requests finish (up to the grace period), unload everything."""
        for task in self._loads:
            task.cancel()
        ready = [
            h for hs in self._harnesses.values() for h in hs.values() if h.state is State.READY
        ]
        for harness in ready:
            harness.aspired = False
            harness.transition(State.UNLOADING)
            assert harness.servable is not None
            self._registry.remove(harness.servable)
            self._spawn(self._unloads, self._unload(harness))
        if self._unloads:
            await asyncio.wait(self._unloads, timeout=max(grace_seconds, 0.0))

    def _spawn(self, tasks: set[asyncio.Task[None]], coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _report(self, harness: Harness, before: State, elapsed: float) -> None:
        self._monitor.update(harness.id, harness.state.public, harness.error)
        if harness.state is State.NEW:
            log.info("%s: START (%s)", harness.id, harness.path)
            return
        error = harness.error.message if harness.error is not None else None
        self._observers.state_changed(
            StateRecord(
                harness.id.name,
                harness.id.version,
                before.public.name,
                harness.state.public.name,
                elapsed,
                error,
            )
        )
        line = (
            f"{harness.id}: {before.public.name} -> {harness.state.public.name} in {elapsed:.1f} s"
        )
        if harness.error is not None:
            log.error("%s: %s", line, harness.error)
        else:
            log.info("%s", line)

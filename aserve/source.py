"""The source: polls each model's base path and hands the manager full aspired sets.

Stateless in what it sends (every poll sends each model's complete aspired
version set, so a version folder that disappears is unloaded); it only
remembers what it already logged, so a problem is logged once when it appears
and once when it goes away rather than every second.

Listing (through the model's store, :mod:`aserve.storage`) runs in the I/O pool,
never on the event loop. A remote store that cannot be reached is the one problem logged on
every failed poll (the versions loaded keep serving); its first good poll says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from aserve.config import ModelConfig
from aserve.manager import Manager
from aserve.pool import WorkerPool
from aserve.storage import Stores, StoreUnreachable
from aserve.versions import Listing, aspired_versions, missing_specific_versions

log = logging.getLogger("aserve.source")


class Source:
    def __init__(
        self,
        *,
        manager: Manager,
        pool: WorkerPool,
        poll_seconds: float,
        stores: Stores | None = None,
    ) -> None:
        self._manager = manager
        self._pool = pool
        self._stores = stores or Stores()
        self._poll_seconds = poll_seconds
        self._models: dict[str, ModelConfig] = {}
        self._ignored: dict[str, set[str]] = {}
        self._problem: dict[str, str] = {}
        self._unreachable: set[str] = set()
        self._unversioned: set[str] = set()

    def set_models(self, models: Mapping[str, ModelConfig]) -> None:
        """Start watching ``models``; models no longer listed have all versions un-aspired."""
        for name in set(self._models) - set(models):
            self._manager.set_aspired_versions(name, {})
            self._ignored.pop(name, None)
            self._problem.pop(name, None)
            self._unreachable.discard(name)
            self._unversioned.discard(name)
        self._models = dict(models)

    def problem(self, name: str) -> str:
        """Why the last poll of ``name`` found nothing to serve ("" when it did)."""
        return self._problem.get(name, "")

    async def poll(self, names: Iterable[str] | None = None) -> None:
        """List the base paths of ``names`` (default: every model) now."""
        models = [self._models[n] for n in (self._models if names is None else names)]
        await asyncio.gather(*(self._poll_model(m) for m in models))

    async def run(self) -> None:
        """Poll every ``poll_seconds``; with 0 (or less) the start-up poll is the only one."""
        if self._poll_seconds <= 0:
            return
        while True:
            await asyncio.sleep(self._poll_seconds)
            await self.poll()

    async def _poll_model(self, model: ModelConfig) -> None:
        try:
            store = self._stores.for_path(model.base_path)
            listing = await self._pool.io(store.list_versions, model.base_path)
        except StoreUnreachable as e:
            log.warning(
                "model %s: cannot list %s, the loaded versions keep serving: %s",
                model.name,
                model.base_path,
                e,
            )
            self._problem[model.name] = f"Could not list {model.base_path}: {e}"
            self._unreachable.add(model.name)
            return
        except OSError as e:
            self._report_problem(
                model.name,
                f"Could not find base path {model.base_path} for servable {model.name} "
                f"with error {e.strerror or e}",
            )
            return
        if model.name in self._unreachable:
            self._unreachable.discard(model.name)
            self._problem.pop(model.name, None)
            log.info("model %s: %s can be listed again", model.name, model.base_path)
        if self._models.get(model.name) is not model:
            return  # the config changed while we were listing
        self._log_news(model, listing)
        self._manager.set_aspired_versions(
            model.name, aspired_versions(model.policy, listing.versions)
        )

    def _log_news(self, model: ModelConfig, listing: Listing) -> None:
        seen = self._ignored.setdefault(model.name, set())
        for entry in sorted(set(listing.ignored) - seen):
            log.info(
                "model %s: ignoring %r in %s: not a version number",
                model.name,
                entry,
                model.base_path,
            )
        seen.update(listing.ignored)
        if not listing.unversioned:
            self._unversioned.discard(model.name)
        elif model.name not in self._unversioned:
            self._unversioned.add(model.name)
            log.warning(
                "model %s: base path %s holds a SavedModel itself, not in a version folder; "
                "serving it as version 1. Move it into %s/1/ (and later versions into 2/, "
                "3/, ...) to silence this",
                model.name,
                model.base_path,
                model.base_path.rstrip("/"),
            )
        problem = ""
        if not listing.versions:
            problem = (
                f"No versions of servable {model.name} found under base path {model.base_path}. "
                "Did you forget to name your leaf directory as a number (eg. '/1/')?"
            )
        elif missing := missing_specific_versions(model.policy, listing.versions):
            problem = (
                f"Version(s) {', '.join(map(str, missing))} of servable {model.name}, requested "
                f"as 'specific' version(s), not found under base path {model.base_path}"
            )
        self._report_problem(model.name, problem)

    def _report_problem(self, name: str, problem: str) -> None:
        if self._problem.get(name, "") == problem:
            return
        if problem:
            log.warning("%s", problem)
        else:
            log.info("model %s: resolved: %s", name, self._problem.get(name))
        self._problem[name] = problem

"""The server core: which models are served, their versions, labels and reloads.

The protocol-neutral heart of aserve (TF Serving's ServerCore). It owns the
one registry, the monitor, the manager and the source, and applies model
configs. Front ends stay stateless: they resolve requests through
``core.registry`` and ask the core for status and reloads.

Call sequence:

    core = ServerCore(options=..., pool=pool, load_model=...)
    await core.start(config)             # reconciler and poller running, first poll done
    await core.reload(new_config)        # validate -> diff -> apply; waits for added models
    await core.shutdown(grace_seconds)

Labels: on reloads TF Serving's rule holds (a label may only name an
AVAILABLE version, unless ``allow_version_labels_for_unavailable_models`` and
the label is new or unchanged). The start-up config is the deliberate
exception: its labels are taken as given and route to their version as soon as
it is AVAILABLE; a label whose version never becomes AVAILABLE is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiofiles

from aserve.batching import DirectRunner, Runner
from aserve.config import ConfigDiff, ModelConfig, ServingConfig, diff, parse_model_server_config
from aserve.errors import Code, ServingError, failed_precondition
from aserve.ids import ServableId
from aserve.manager import Manager, RetryPolicy
from aserve.monitor import Monitor
from aserve.pool import WorkerPool
from aserve.registry import Registry, Servable
from aserve.source import Source

log = logging.getLogger("aserve.core")


@dataclass(frozen=True, slots=True)
class CoreOptions:
    file_system_poll_wait_seconds: float = 1.0
    allow_version_labels_for_unavailable_models: bool = False
    retry: RetryPolicy = RetryPolicy()


class ServerCore:
    def __init__(
        self,
        *,
        options: CoreOptions,
        pool: WorkerPool,
        load_model: Callable[[str], Any],
        make_runner: Callable[[ServableId, Any], Runner] | None = None,
    ) -> None:
        self.options = options
        self.pool = pool
        self.monitor = Monitor()
        self.registry = Registry()
        self.manager = Manager(
            load=self._load,
            unload=self._unload,
            registry=self.registry,
            monitor=self.monitor,
            retry=options.retry,
        )
        self.source = Source(
            manager=self.manager, pool=pool, poll_seconds=options.file_system_poll_wait_seconds
        )
        self.config = ServingConfig.of()
        self._load_model = load_model
        self._make_runner = make_runner or (lambda _id, model: DirectRunner(model, pool=pool))
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle -------------------------------------------------------------------------

    async def start(self, config: ServingConfig) -> None:
        self._tasks = [
            asyncio.create_task(self.manager.run(), name="aserve-manager"),
            asyncio.create_task(self.source.run(), name="aserve-source"),
        ]
        await self.apply(config, initial=True)
        self._tasks.append(asyncio.create_task(self._report_startup(), name="aserve-startup"))

    async def shutdown(self, grace_seconds: float) -> None:
        for task in self._tasks:
            task.cancel()
        await self.manager.shutdown(grace_seconds)

    # -- configs ----------------------------------------------------------------------------

    async def apply(self, new: ServingConfig | None, *, initial: bool = False) -> ConfigDiff:
        """Validate ``new`` against the running state and apply only the difference."""
        if new is None:
            log.info("empty model config: taking no action")
            return diff(self.config, self.config)
        if not initial:
            self._check_labels(new)
        change = diff(self.config, new)
        self.config = new
        self.source.set_models(new.models)
        for model in change.removed:
            self.registry.set_labels(model.name, {})
        for model in new.models.values():
            self.registry.set_labels(model.name, model.labels)
        await self.source.poll([m.name for m in (*change.added, *change.changed)])
        if change and not initial:
            log.info("model config applied: %s", _describe(change))
        return change

    async def reload(self, new: ServingConfig | None) -> None:
        """Apply ``new``, then wait until every added model has settled (gRPC reloads)."""
        change = await self.apply(new)
        added = [m.name for m in change.added]
        await self.wait_settled(added)
        failures = [
            f"{{name: {name} version: {version}}} due to error: {error}"
            for name in added
            for version, error in self.manager.load_errors(name).items()
        ]
        if failures:
            raise ServingError(
                Code.UNKNOWN,
                f"{len(failures)} model(s) did not become available: {{{', '.join(failures)}}}",
            )

    async def watch_config_file(self, path: str, period_seconds: float, applied_text: str) -> None:
        """Re-read ``path`` every ``period_seconds``; a bad config is logged and skipped."""
        while True:
            await asyncio.sleep(period_seconds)
            try:
                async with aiofiles.open(path) as f:
                    text = await f.read()
                if text == applied_text:
                    continue
                await self.apply(parse_model_server_config(text))
                applied_text = text
            except (OSError, ServingError) as e:
                log.error("model config %s rejected, keeping the running config: %s", path, e)

    # -- queries ----------------------------------------------------------------------------

    def ready(self) -> bool:
        """Every configured model has at least one AVAILABLE version."""
        return all(self.registry.available(name) for name in self.config.models)

    async def wait_settled(self, names: Iterable[str]) -> None:
        names = list(names)
        await self.monitor.wait_until(lambda: all(self.manager.settled(n) for n in names))

    # -- internals --------------------------------------------------------------------------

    def _check_labels(self, new: ServingConfig) -> None:
        allow = self.options.allow_version_labels_for_unavailable_models
        for model in new.models.values():
            current = self.registry.labels(model.name)
            for label, version in model.labels.items():
                if allow and current.get(label, version) == version:
                    continue
                if not self.monitor.is_available(ServableId(model.name, version)):
                    raise failed_precondition(
                        f"Request to assign label to version {version} of model {model.name}, "
                        "which is not currently available for inference"
                    )

    async def _report_startup(self) -> None:
        await self.wait_settled(self.config.models)
        for model in self.config.models.values():
            available = self.registry.available(model.name)
            log.info("model %s: serving version(s) %s", model.name, available or "none")
            for label, version in sorted(model.labels.items()):
                if version not in available:
                    log.warning(
                        "model %s: label %r names version %d, which did not become available",
                        model.name,
                        label,
                        version,
                    )

    async def _load(self, id: ServableId, path: str) -> Servable:
        model = await self.pool.load(self._load_model, path)
        return Servable(id, model, self._make_runner(id, model))

    async def _unload(self, servable: Servable) -> None:
        await servable.runner.close()
        await self.pool.unload(servable.model.close)


def _describe(change: ConfigDiff) -> str:
    def names(models: Iterable[ModelConfig]) -> str:
        return ", ".join(m.name for m in models) or "-"

    added, removed, changed = names(change.added), names(change.removed), names(change.changed)
    return f"added {added}; removed {removed}; changed {changed}"

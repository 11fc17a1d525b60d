"""The server core: which models are served, their versions, labels and reloads.

The protocol-neutral heart of aserve (TF Serving's ServerCore). It owns the
one registry, the monitor, the manager and the source, and applies model
configs. Front ends stay stateless: they resolve requests through
``core.registry`` and ask the core for status and reloads.

Call sequence:

    core = ServerCore(options=..., pool=pool, load_model=..., supervisor=supervisor)
    await core.start(config)             # reconciler and poller running, first poll done
    await core.reload(new_config)        # validate -> diff -> apply; waits for added models
    await core.load_model(model_config)  # add or replace one model; waits until it serves
    await core.unload_model("m")         # remove one model; waits until it has unloaded
    await core.shutdown(grace_seconds)

``load_model`` and ``unload_model`` (the repository API) build the new config from the
running one and apply it through the same :meth:`ServerCore.apply`, so their validation and
label rules are those of a reload.

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
from types import MappingProxyType
from typing import Any

import aiofiles

from aserve import memory
from aserve.batching import BatchingOptions, DirectRunner, Runner
from aserve.config import ConfigDiff, ModelConfig, ServingConfig, diff, parse_model_server_config
from aserve.errors import Code, ServingError, failed_precondition, not_found
from aserve.harness import ModelState
from aserve.ids import ServableId
from aserve.manager import Manager, RetryPolicy
from aserve.monitor import Monitor
from aserve.pool import WorkerPool
from aserve.records import LoadRecord, Observers
from aserve.registry import Registry, Servable
from aserve.source import Source
from aserve.storage import Stores, within_roots
from aserve.supervisor import Supervisor

log = logging.getLogger("aserve.core")


@dataclass(frozen=True, slots=True)
class CoreOptions:
    file_system_poll_wait_seconds: float = 1.0
    allow_version_labels_for_unavailable_models: bool = False
    retry: RetryPolicy = RetryPolicy()
    allowed_roots: tuple[str, ...] = ()  # resolved folders and URLs; empty: any base path


@dataclass(frozen=True, slots=True)
class LoadedVersion:
    """What loading one version folder gives: the model, ready, and how to batch it."""

    model: Any  # aserve.loader.SavedModel, or any object with its run/close/signatures
    batching: BatchingOptions | None = None  # None: every request runs on its own
    # run in an I/O thread once the model has closed: frees what loading fetched (the
    # local copy of a version from object storage)
    release: Callable[[], None] | None = None


# load_model(version_path, report) runs in a load thread; ``report`` takes each attempt's
# LoadRecord from that thread.
LoadModel = Callable[[str, Callable[[LoadRecord], None]], LoadedVersion]
MakeRunner = Callable[[ServableId, LoadedVersion], Runner]


class ServerCore:
    def __init__(
        self,
        *,
        options: CoreOptions,
        pool: WorkerPool,
        load_model: LoadModel,
        supervisor: Supervisor,
        make_runner: MakeRunner | None = None,
        observers: Observers | None = None,
        stores: Stores | None = None,
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
            reclaim=lambda: pool.unload(memory.reclaim),
            observers=observers,
        )
        self.source = Source(
            manager=self.manager,
            pool=pool,
            poll_seconds=options.file_system_poll_wait_seconds,
            stores=stores,
        )
        self.config = ServingConfig.of()
        self._load_model = load_model
        self._make_runner = make_runner or (lambda _id, v: DirectRunner(v.model, pool=pool))
        self._observers = observers or Observers()
        self._supervisor = supervisor
        self._releases: dict[Servable, Callable[[], None]] = {}
        self._known: dict[str, ModelConfig] = {}  # every model ever configured, as last set
        self._managing = asyncio.Lock()  # one load or unload at a time
        self.draining = False

    # -- life cycle -------------------------------------------------------------------------

    async def start(self, config: ServingConfig) -> None:
        """Start reconciling and polling (supervised) and apply the start-up config."""
        self._supervisor.spawn(self.manager.run(), name="reconciler")
        self._supervisor.spawn(self.source.run(), name="version-poller")
        await self.apply(config, initial=True)
        self._supervisor.spawn(self._report_startup(), name="startup-report")

    async def shutdown(self, deadline: float) -> None:
        """Unload every version; requests still holding one get until ``deadline`` (loop time)."""
        await self.manager.shutdown(deadline - asyncio.get_running_loop().time())

    # -- configs ----------------------------------------------------------------------------

    async def apply(self, new: ServingConfig | None, *, initial: bool = False) -> ConfigDiff:
        """Validate ``new`` against the running state and apply only the difference."""
        if new is None:
            log.info("empty model config: taking no action")
            return diff(self.config, self.config)
        self._check_roots(new)
        if not initial:
            self._check_labels(new)
        change = diff(self.config, new)
        self.config = new
        self._known.update(new.models)
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
        """Apply ``new``, then wait until every added model has settled (gRPC reloads).

        An added model with no version to load (its base path is missing, or holds no
        version folder the policy wants) fails the reload at once with the reason; it
        stays configured and loads when versions appear.
        """
        change = await self.apply(new)
        failures = await self._settle([m.name for m in change.added])
        if failures:
            raise _not_available(failures)

    async def load_model(self, model: ModelConfig) -> None:
        """Add ``model``, or replace the model of its name, and return once it has an
        AVAILABLE version and versions it no longer wants no longer serve; an unchanged
        model has its versions re-read.

        All or nothing: a config the checks of :meth:`apply` refuse changes nothing, and a
        model that does not become available (no version to load, every load failed) is
        put back as it was (removed, if it is new) and the failure raised.
        """
        async with self._managing:
            previous = self.config.models.get(model.name)
            if not await self.apply(self._with(model.name, model)):
                await self.source.poll([model.name])
            failures = await self._settle([model.name])
            if not self.manager.serving(model.name, aspired=True):
                error = _not_available(failures or [f"{{name: {model.name}}}"])
                await self._put_back(model, previous, error)
                raise error
            # versions it no longer wants stop serving now: requests then reach the new ones
            await self.monitor.wait_until(
                lambda: not self.manager.serving(model.name, aspired=False)
            )
        log.info(
            "%s: loaded through the repository API (%s): serving version(s) %s",
            model.name,
            _describe_model(model),
            self.registry.available(model.name),
        )

    async def unload_model(self, name: str) -> None:
        """Remove model ``name`` and return once every version of it has unloaded (requests
        in flight finish first); NOT_FOUND when it is not configured."""
        async with self._managing:
            if name not in self.config.models:
                raise not_found(f"Model {name} is not loaded (not in the model config)")
            await self.apply(self._with(name, None))
            await self.monitor.wait_until(lambda: self._unloaded(name))
        log.info("%s: unloaded through the repository API", name)

    def known_config(self, name: str) -> ModelConfig | None:
        """The config model ``name`` has, or had when it was last configured."""
        return self.config.models.get(name) or self._known.get(name)

    def known_models(self) -> list[str]:
        """Every model configured now (in config order), then those configured before."""
        return [*self.config.models, *(n for n in self._known if n not in self.config.models)]

    def _with(self, name: str, model: ModelConfig | None) -> ServingConfig:
        """The running config with model ``name`` replaced by ``model`` (removed if None)."""
        models = dict(self.config.models)
        if model is None:
            models.pop(name, None)
        else:
            models[name] = model
        return ServingConfig(MappingProxyType(models))

    async def _put_back(
        self, model: ModelConfig, previous: ModelConfig | None, error: ServingError
    ) -> None:
        """Undo a failed load of ``model``: its previous config, or none if it was new."""
        log.error("%s: load through the repository API failed, put back: %s", model.name, error)
        if self.config.models.get(model.name) is not model:
            return  # changed again meanwhile (a reload): leave it to that change
        try:
            await self.apply(self._with(model.name, previous))
        except ServingError as e:
            log.error("%s: could not put the previous config back: %s", model.name, e)
        if previous is None:
            self._known.pop(model.name, None)  # it never was: nothing to remember

    def _unloaded(self, name: str) -> bool:
        return not self.manager.aspires(name) and all(
            s.state is ModelState.END for s in self.monitor.versions(name).values()
        )

    async def _settle(self, names: list[str]) -> list[str]:
        """Wait until ``names`` have settled; why each that has no version to serve failed."""
        loading = [name for name in names if self.manager.aspires(name)]
        await self.wait_settled(loading)
        failures = [
            f"{{name: {name}}} due to error: {self.source.problem(name) or 'no version to load'}"
            for name in names
            if name not in loading
        ]
        failures += [
            f"{{name: {name} version: {version}}} due to error: {error}"
            for name in loading
            for version, error in self.manager.load_errors(name).items()
        ]
        return failures

    async def watch_config_file(self, path: str, period_seconds: float, applied_text: str) -> None:
        """Re-read ``path`` every ``period_seconds``; a bad config is logged and skipped.

        Every config error is survived: the running config keeps serving and the next good
        file is applied. A problem is logged once when it appears and once when it clears.
        """
        problem = ""
        while True:
            await asyncio.sleep(period_seconds)
            try:
                async with aiofiles.open(path, encoding="utf-8") as f:
                    text = await f.read()
                if text != applied_text:
                    await self.apply(parse_model_server_config(text))
                    applied_text = text
            except (OSError, ValueError, ServingError) as e:  # ValueError: not UTF-8
                if str(e) != problem:
                    log.error("model config %s rejected, keeping the running config: %s", path, e)
                    problem = str(e)
                continue
            if problem:
                log.info("model config %s: readable and valid again", path)
                problem = ""

    # -- queries ----------------------------------------------------------------------------

    def ready(self) -> bool:
        """Not draining, and every configured model has at least one AVAILABLE version."""
        return not self.draining and all(
            self.registry.available(name) for name in self.config.models
        )

    def not_ready(self) -> dict[str, str]:
        """Why each configured model without an AVAILABLE version is not ready."""
        reasons = {}
        for name in self.config.models:
            if self.registry.available(name):
                continue
            states = ", ".join(
                f"version {v} {s.state.name}" for v, s in self.monitor.versions(name).items()
            )
            reasons[name] = (
                f"no AVAILABLE version ({states})"
                if states
                else self.source.problem(name) or "no version found yet"
            )
        return reasons

    def queue_depths(self) -> dict[str, int]:
        """Requests waiting to run, per model (batch queues, and waits for a worker)."""
        depths: dict[str, int] = {}
        for servable in self.registry.servables():
            depths[servable.id.name] = depths.get(servable.id.name, 0) + servable.runner.queued()
        return depths

    def drain(self) -> None:
        """Shutting down: no longer ready (requests are still served until the front ends stop)."""
        self.draining = True
        self.monitor.notify()

    async def wait_settled(self, names: Iterable[str]) -> None:
        """Until each model has loaded or failed for good every version it wants (a model
        with no version to load has nothing to wait for)."""
        names = list(names)
        manager = self.manager
        await self.monitor.wait_until(
            lambda: all(manager.settled(n) or not manager.aspires(n) for n in names)
        )

    # -- internals --------------------------------------------------------------------------

    def _check_roots(self, new: ServingConfig) -> None:
        """--allowed_model_roots: every base path lies (symlinks followed) under a root."""
        roots = self.options.allowed_roots
        if not roots:
            return
        for model in new.models.values():
            if not within_roots(model.base_path, roots):
                message = (
                    f"Model {model.name}: base_path {model.base_path} is outside "
                    f"--allowed_model_roots ({', '.join(roots)})"
                )
                log.error("refused: %s", message)
                raise ServingError(Code.PERMISSION_DENIED, message)

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
        loop = asyncio.get_running_loop()

        def report(record: LoadRecord) -> None:  # from the load thread
            loop.call_soon_threadsafe(self._observers.load_finished, record)

        loaded = await self.pool.load(self._load_model, path, report)
        servable = Servable(id, loaded.model, self._make_runner(id, loaded))
        if loaded.release is not None:
            self._releases[servable] = loaded.release
        return servable

    async def _unload(self, servable: Servable) -> None:
        await servable.runner.close()
        await self.pool.unload(servable.model.close)
        release = self._releases.pop(servable, None)
        if release is not None:
            await self.pool.io(release)


def _not_available(failures: list[str]) -> ServingError:
    return ServingError(
        Code.UNKNOWN,
        f"{len(failures)} model(s) did not become available: {{{', '.join(failures)}}}",
    )


def _describe_model(model: ModelConfig) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(model.labels.items())) or "none"
    return f"base_path {model.base_path}, policy {model.policy}, labels {labels}"


def _describe(change: ConfigDiff) -> str:
    def names(models: Iterable[ModelConfig]) -> str:
        return ", ".join(m.name for m in models) or "-"

    added, removed, changed = names(change.added), names(change.removed), names(change.changed)
    return f"added {added}; removed {removed}; changed {changed}"

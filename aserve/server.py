"""The composition root: build everything, run it on one event loop, shut it down in order.

    Server(options).serve()  ->  config files read -> front ends bound and started
                              ->  models configured -> ready
                              ->  (stop, or a supervised task died)
                              ->  not ready -> every front end stops at once (one deadline)
                              ->  background tasks cancelled -> versions unloaded
                              ->  pools shut down

The pipeline it wires, for every request: a front end (:mod:`aserve.frontends`) translates
its wire format -> :class:`~aserve.service.Service` (resolve and pin, signature, decode,
run, encode) -> the version's runner (direct or batched) -> the worker pool; each finished
request, batch and load is a record handed to the observers (Prometheus metrics first).

:func:`run` is what ``python -m aserve`` calls: uvloop, logging, signals, and a one-line
error plus a non-zero exit status when start-up fails or a supervised task dies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aserve
from aserve import auth, fds, frontends, logs, memory
from aserve._proto import batching_parameters_pb2
from aserve.batching import BatchingOptions, BatchingRunner, DirectRunner, Runner, version_options
from aserve.config import ServingConfig, parse_model_server_config, single_model
from aserve.core import CoreOptions, LoadedVersion, LoadModel, MakeRunner, ServerCore
from aserve.errors import ServingError
from aserve.flags import ServerOptions
from aserve.ids import ServableId
from aserve.manager import RetryPolicy
from aserve.metrics import Metrics
from aserve.pool import WorkerPool
from aserve.records import LoadRecord, Observers
from aserve.service import Service, ServiceOptions
from aserve.startup import StartupError, one_line_errors, read_file, read_proto
from aserve.storage import LOCAL, Stores, canonical_root
from aserve.supervisor import Supervisor, TaskDied

log = logging.getLogger("aserve")

__all__ = ["Server", "StartupError", "TaskDied", "run"]


class Server:
    """One server. ``observers`` see every request, batch and load record beside the metrics."""

    def __init__(self, options: ServerOptions, *, observers: Sequence[object] = ()) -> None:
        self.options = options
        self.core: ServerCore | None = None
        self.service: Service | None = None  # once built; for in-process tools
        self.metrics = Metrics()
        self.supervisor: Supervisor | None = None
        self._observers: list[object] = [self.metrics, *observers]

    async def serve(
        self,
        *,
        stop: asyncio.Event | None = None,
        on_ready: Callable[[], None] | None = None,
        handle_signals: bool = False,
    ) -> None:
        """Serve until ``stop`` is set; raises TaskDied after shutting down if a task died."""
        options = self.options
        stop = stop or asyncio.Event()
        if handle_signals:
            _install_signal_handlers(stop)
        for flag in options.ignored_flags:
            log.warning("--%s is accepted for compatibility but has no effect yet", flag)
        config, config_text = await self._initial_config()
        parts = await self._build()
        try:
            files = fds.raise_open_files_limit()
            log.info("%s", files)
            cap = fds.connection_cap(options.max_connections, files)
            parts.front_ends = await frontends.build(
                options, parts.service, self.metrics, max_connections=cap
            )
            if options.listen_before_load:
                await parts.start_listening()
            with one_line_errors():
                await parts.core.start(config)
            self._supervise(parts, config_text)
            if not options.listen_before_load:  # TF Serving's order: models first, then ports
                await _first(
                    parts.core.wait_settled(config.models),
                    stop.wait(),
                    parts.supervisor.failed.wait(),
                )
                if not stop.is_set() and not parts.supervisor.failed.is_set():
                    await parts.start_listening()
            if parts.started:
                log.info("aserve ready: %s", ", ".join(f.endpoint for f in parts.started))
                if on_ready is not None:
                    on_ready()
            await _first(stop.wait(), parts.supervisor.failed.wait())
        finally:
            await self._shut_down(parts)
        if parts.supervisor.failure is not None:
            raise parts.supervisor.failure

    async def _build(self) -> _Parts:
        """Pools, supervisor, core and service, with the observers and the authenticator."""
        options = self.options
        batching = await self._batching_options()
        session_config = await self._session_config()
        pool = WorkerPool(
            workers=options.num_worker_threads,
            load_threads=options.num_load_threads,
            unload_threads=options.num_unload_threads,
        )
        threads = ", ".join(f"{n} {name}" for name, n in pool.sizes.items())
        log.info("CPUs: %s; threads: %s", pool.cpus, threads)
        log.info("request path: %s", aserve.REQUEST_PATH)
        access_log = None
        if options.access_log:
            try:
                access_log = logs.AccessLog(options.access_log, log_format=options.log_format)
            except OSError as e:
                raise StartupError(f"cannot open --access_log={options.access_log}: {e}") from None
        observers = Observers([*self._observers, *([access_log] if access_log else [])])
        supervisor = self.supervisor = Supervisor()
        stores = Stores(options.model_cache_dir)
        load_model = _model_loader(options, batching, session_config, stores)
        await _register_custom_ops(options, pool)
        core = self.core = ServerCore(
            options=_core_options(options),
            pool=pool,
            load_model=load_model,
            supervisor=supervisor,
            make_runner=_runner_factory(options, batching, pool, observers, supervisor),
            observers=observers,
            stores=stores,
        )
        tokens = [auth.Tokens(p) for p in (options.auth_token_file, options.admin_token_file) if p]
        for file in tokens:
            if not await pool.io(file.reload_if_changed):
                raise StartupError(f"cannot read the token file {file.path}")
        by_path = {file.path: file for file in tokens}
        authenticator = auth.Authenticator(
            tokens=by_path.get(options.auth_token_file),
            admin=by_path.get(options.admin_token_file),
            protect_metrics=options.auth_metrics,
        )
        service = Service(
            core=core,
            pool=pool,
            observers=observers,
            authenticator=authenticator,
            options=ServiceOptions(
                check_method_name=options.enable_signature_method_name_check,
                offload_us=options.codec_offload_us,
                max_request_elements=options.max_request_elements,
                max_request_bytes=options.max_request_bytes,
                model_management=options.enable_model_management,
                model_list_owner=_model_list_owner(options),
            ),
        )
        _watch_state(self.metrics, service, core)
        self.service = service
        return _Parts(pool, supervisor, core, service, tokens, access_log)

    def _supervise(self, parts: _Parts, config_text: str) -> None:
        options, supervisor = self.options, parts.supervisor
        supervisor.spawn(memory.freeze_heap_at_start(), name="heap-freezer")
        supervisor.spawn(self.metrics.sample_event_loop_lag(), name="loop-lag-sampler")
        if parts.tokens:
            supervisor.spawn(auth.watch(parts.tokens, parts.pool.io), name="token-watcher")
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            watch = parts.core.watch_config_file(
                options.model_config_file, options.model_config_file_poll_wait_seconds, config_text
            )
            supervisor.spawn(watch, name="config-watcher")

    async def _shut_down(self, parts: _Parts) -> None:
        """Drain, in order, all within --shutdown_grace_seconds of the stop:

        1. not ready at once (REST 503, gRPC health NOT_SERVING);
        2. --drain_delay_seconds of normal serving, for load balancers to notice;
        3. every front end refuses new connections at once (keep-alive connections close
           after their current response, gRPC sends GOAWAY);
        4. requests accepted before that finish; what still runs shortly before the
           deadline is cancelled with UNAVAILABLE / HTTP 503;
        5. background tasks stop, versions unload with what is left of the time.
        """
        options, loop = self.options, asyncio.get_running_loop()
        deadline = loop.time() + options.shutdown_grace_seconds
        parts.core.drain()
        if parts.started and options.drain_delay_seconds > 0:
            log.info("draining: not ready; serving %g s more", options.drain_delay_seconds)
            await asyncio.sleep(options.drain_delay_seconds)
        log.info(
            "shutting down: refusing new connections, %d request(s) in flight",
            parts.service.in_flight,
        )
        margin = min(_ABORT_MARGIN_S, options.shutdown_grace_seconds / 10)
        abort = loop.call_at(deadline - margin, _abort_in_flight, parts.service)
        await asyncio.gather(*(f.stop(deadline) for f in parts.started))
        abort.cancel()
        await parts.supervisor.cancel()
        await parts.core.shutdown(deadline)
        left = max(deadline - loop.time(), 0.0)
        await asyncio.to_thread(parts.pool.shutdown, min(left, _THREAD_JOIN_S))
        if parts.access_log is not None:
            await asyncio.to_thread(parts.access_log.close)
        log.info("stopped")

    async def _initial_config(self) -> tuple[ServingConfig, str]:
        options = self.options
        if not options.model_config_file:
            with one_line_errors():
                return single_model(options.model_name, options.model_base_path), ""
        text = await read_file("model_config_file", options.model_config_file)
        with one_line_errors():
            config = parse_model_server_config(text)
        return config or ServingConfig.of(), text

    async def _batching_options(self) -> BatchingOptions | None:
        if not self.options.enable_batching:
            return None
        message = batching_parameters_pb2.BatchingParameters
        params = await read_proto(self.options, "batching_parameters_file", message)
        if params is None:  # as tensorflow_model_server names its pool without a file
            params = message(thread_pool_name={"value": "model_server_batch_threads"})
        with one_line_errors():
            return BatchingOptions.from_proto(params)

    async def _session_config(self) -> Any:
        """--tensorflow_session_config_file: a text ConfigProto for every session, or None."""
        if not self.options.tensorflow_session_config_file:
            return None
        from tensorflow.core.protobuf import config_pb2  # imports TensorFlow: only when asked

        return await read_proto(
            self.options, "tensorflow_session_config_file", config_pb2.ConfigProto
        )


_ABORT_MARGIN_S = 0.5  # requests still running this long before the deadline are cancelled
_THREAD_JOIN_S = 5.0  # at most this long for pool threads to end (a run may never end)


@dataclass
class _Parts:
    """What one serve() built, for starting and stopping it."""

    pool: WorkerPool
    supervisor: Supervisor
    core: ServerCore
    service: Service
    tokens: list[auth.Tokens]
    access_log: logs.AccessLog | None
    front_ends: list[frontends.FrontEnd] = field(default_factory=list)
    started: list[frontends.FrontEnd] = field(default_factory=list)

    async def start_listening(self) -> None:
        for front_end in self.front_ends:
            try:
                await front_end.start()
            except OSError as e:
                raise StartupError(str(e)) from None
            self.started.append(front_end)


def _watch_state(metrics: Metrics, service: Service, core: ServerCore) -> None:
    """The gauges read the running server when the metrics page renders."""

    def states() -> dict[tuple[str, ...], float]:
        return {
            (name, str(version), status.state.name): 1
            for name in core.monitor.models()
            for version, status in core.monitor.versions(name).items()
        }

    in_flight = service.in_flight_by_model
    metrics.requests_in_flight.source = lambda: {(m,): n for m, n in in_flight().items() if m}
    metrics.queue_depth.source = lambda: {(m,): n for m, n in core.queue_depths().items()}
    metrics.servable_state.source = states


def _abort_in_flight(service: Service) -> None:
    count = service.abort_in_flight()
    if count:
        log.warning(
            "shutdown deadline: %d request(s) still running, answered UNAVAILABLE / HTTP 503",
            count,
        )


def run(options: ServerOptions) -> int:
    """Run the server until SIGINT/SIGTERM; return the process exit status."""
    logs.setup(options.log_level, options.log_format)
    import uvloop

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(Server(options).serve(handle_signals=True))
    except StartupError as e:
        print(e, file=sys.stderr)
        return 1
    except TaskDied as e:
        print(f"aserve stopped: {e}", file=sys.stderr)
        return 1
    return 0


def _runner_factory(
    options: ServerOptions,
    batching: BatchingOptions | None,
    pool: WorkerPool,
    observers: Observers,
    supervisor: Supervisor,
) -> MakeRunner:
    """Every version gets a runner: batching when its load chose batching, else direct."""
    max_queued = options.max_queued_requests
    if batching is None:
        return lambda id, loaded: DirectRunner(loaded.model, pool=pool, max_queued=max_queued)
    # a batch runs in a worker thread: more batch threads than workers would only queue
    in_flight = min(batching.num_batch_threads, pool.workers)
    log.info("batching: %s, at most %d batch(es) running", batching, in_flight)
    slots = asyncio.Semaphore(in_flight)

    def make_runner(id: ServableId, loaded: LoadedVersion) -> Runner:
        if loaded.batching is None:
            return DirectRunner(loaded.model, pool=pool, max_queued=max_queued)
        return BatchingRunner(
            loaded.model,
            pool=pool,
            options=loaded.batching,
            slots=slots,
            on_batch=observers.batch_started,
            model_name=id.name,
            spawn=supervisor.spawn,
            max_queued=max_queued,
        )

    return make_runner


def _model_list_owner(options: ServerOptions) -> str:
    """The polled config file, which owns the model list ("" when nothing polls one)."""
    seconds = options.model_config_file_poll_wait_seconds
    if not options.model_config_file or seconds <= 0:
        return ""
    return f"--model_config_file={options.model_config_file} (re-read every {seconds} s)"


def _core_options(options: ServerOptions) -> CoreOptions:
    interval = options.load_retry_interval_micros / 1e6
    return CoreOptions(
        file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
        allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
        retry=RetryPolicy(
            max_retries=options.max_num_load_retries, interval_seconds=max(interval, 0)
        ),
        allowed_roots=tuple(canonical_root(root) for root in options.allowed_model_roots),
    )


VERSION_BATCHING_FILE = "batching_params.pbtxt"


async def _register_custom_ops(options: ServerOptions, pool: WorkerPool) -> None:
    """TF-Text's ops (when installed) and --custom_op_paths, before any model loads."""
    from aserve import loader

    try:
        loaded = await pool.load(loader.register_ops, options.custom_op_paths)
    except ServingError as e:
        raise StartupError(e.message) from None
    if loaded:
        log.info("custom ops registered: %s", ", ".join(loaded))


def _model_loader(
    options: ServerOptions, batching: BatchingOptions | None, session_config: Any, stores: Stores
) -> LoadModel:
    """Loading one version, in a load thread: fetch (from object storage), read, load, warm up.

    Batching: with --enable_per_model_batching_parameters a version is batched with its own
    ``batching_params.pbtxt`` and not at all without one (the global file then only sizes
    the batch threads, as in TF Serving); otherwise with the global parameters.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    from aserve import loader, warmup

    intra = options.tensorflow_intra_op_parallelism or options.tensorflow_session_parallelism
    inter = options.tensorflow_inter_op_parallelism or options.tensorflow_session_parallelism
    load_options = loader.LoadOptions(
        tags=options.saved_model_tags,
        intra_op_threads=intra or 1,  # one thread per op: the worker pool gives the parallelism
        inter_op_threads=inter,
        device=options.device,
        gpu_memory_fraction=options.per_process_gpu_memory_fraction,
        config_file_proto=session_config,
        prefer_tflite=options.prefer_tflite_model,
        tflite_pools=options.num_tflite_pools,
        tflite_interpreters_per_pool=options.num_tflite_interpreters_per_pool,
    )
    per_version = batching is not None and options.enable_per_model_batching_parameters

    def load(path: str, report: Callable[[LoadRecord], None]) -> LoadedVersion:
        storage = stores.for_path(path)
        folder = storage.local_version(path)
        try:
            loaded = load_folder(path, folder, report)
        except BaseException:
            storage.release_version(path)
            raise
        if storage is LOCAL:
            return loaded
        return dataclasses.replace(loaded, release=functools.partial(storage.release_version, path))

    def load_folder(path: str, folder: str, report: Callable[[LoadRecord], None]) -> LoadedVersion:
        chosen = batching
        if per_version:  # a file that does not parse fails the load before TensorFlow runs
            chosen = version_options(LOCAL.read_text(os.path.join(folder, VERSION_BATCHING_FILE)))
        start = time.perf_counter()
        try:
            model = loader.load(folder, load_options)
        except BaseException:
            report(LoadRecord(path, ok=False, seconds=0.0))
            raise
        report(LoadRecord(path, ok=True, seconds=time.perf_counter() - start))
        if options.enable_model_warmup:
            try:
                warmup.warm_up(model, options.num_request_iterations_for_warmup)
            except BaseException:
                model.close()
                raise
        return LoadedVersion(model, chosen)

    return load


async def _first(*waits: Any) -> None:
    """Return when the first of ``waits`` (coroutines) returns; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _install_signal_handlers(stop: asyncio.Event) -> None:
    """The first SIGTERM or SIGINT starts the drain; a second one exits at once, status 1."""
    loop = asyncio.get_running_loop()

    def handle(sig: signal.Signals) -> None:
        if stop.is_set():
            log.error("second %s during shutdown: exiting now", sig.name)
            logging.shutdown()
            os._exit(1)
        log.info("%s: shutting down", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handle, sig)

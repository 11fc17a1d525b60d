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
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from aserve import frontends, memory
from aserve._proto import batching_parameters_pb2
from aserve.batching import BatchingOptions, BatchingRunner, DirectRunner, Runner, version_options
from aserve.config import ServingConfig, parse_model_server_config, single_model
from aserve.core import CoreOptions, LoadedVersion, LoadModel, MakeRunner, ServerCore
from aserve.flags import ServerOptions
from aserve.ids import ServableId
from aserve.manager import RetryPolicy
from aserve.metrics import Metrics
from aserve.pool import WorkerPool
from aserve.records import LoadRecord, Observers
from aserve.service import Service, ServiceOptions
from aserve.startup import StartupError, one_line_errors, read_file, read_proto
from aserve.storage import storage_for
from aserve.supervisor import Supervisor, TaskDied

log = logging.getLogger("aserve")

__all__ = ["Server", "StartupError", "TaskDied", "run"]


class Server:
    """One server. ``observers`` see every request, batch and load record beside the metrics."""

    def __init__(self, options: ServerOptions, *, observers: Sequence[object] = ()) -> None:
        self.options = options
        self.core: ServerCore | None = None
        self.metrics = Metrics()
        self.supervisor: Supervisor | None = None
        self._observers = Observers([self.metrics, *observers])

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
        batching = await self._batching_options()
        session_config = await self._session_config()
        observers = self._observers
        pool = WorkerPool(
            workers=options.num_worker_threads,
            load_threads=options.num_load_threads,
            unload_threads=options.num_unload_threads,
        )
        supervisor = self.supervisor = Supervisor()
        core = self.core = ServerCore(
            options=_core_options(options),
            pool=pool,
            load_model=_model_loader(options, batching, session_config),
            supervisor=supervisor,
            make_runner=_runner_factory(batching, pool, observers, supervisor),
            observers=observers,
        )
        service = Service(
            core=core,
            pool=pool,
            observers=observers,
            options=ServiceOptions(
                check_method_name=options.enable_signature_method_name_check,
                offload_us=options.codec_offload_us,
            ),
        )
        built = frontends.FrontEnds()
        try:
            built = await frontends.build(options, service, self.metrics)
            for front_end in built.listeners:
                await front_end.start()
            await core.start(config)
            self._supervise(supervisor, core, built, config_text)
            log.info("aserve ready: %s", _endpoints(built))
            if on_ready is not None:
                on_ready()
            await _first(stop.wait(), supervisor.failed.wait())
            log.info("shutting down")
        finally:
            await self._shut_down(core, built, supervisor, pool)
        if supervisor.failure is not None:
            raise supervisor.failure

    def _supervise(
        self,
        supervisor: Supervisor,
        core: ServerCore,
        built: frontends.FrontEnds,
        config_text: str,
    ) -> None:
        options = self.options
        supervisor.spawn(memory.freeze_heap_at_start(), name="heap-freezer")
        supervisor.spawn(self.metrics.sample_event_loop_lag(), name="loop-lag-sampler")
        for name, task in built.background.items():
            supervisor.spawn(task(), name=name)
        if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
            watch = core.watch_config_file(
                options.model_config_file, options.model_config_file_poll_wait_seconds, config_text
            )
            supervisor.spawn(watch, name="config-watcher")

    async def _shut_down(
        self,
        core: ServerCore,
        built: frontends.FrontEnds,
        supervisor: Supervisor,
        pool: WorkerPool,
    ) -> None:
        """Every front end stops at once, then unloading gets what is left of the one grace."""
        core.drain()
        deadline = asyncio.get_running_loop().time() + self.options.shutdown_grace_seconds
        await asyncio.gather(*(f.stop(deadline) for f in built.listeners))
        await supervisor.cancel()
        await core.shutdown(deadline)
        pool.shutdown()

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


def run(options: ServerOptions) -> int:
    """Run the server until SIGINT/SIGTERM; return the process exit status."""
    logging.basicConfig(
        level=options.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("uvicorn.error", "tensorflow"):  # aserve logs its own start-up and loads
        logging.getLogger(noisy).setLevel(logging.WARNING)
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
    batching: BatchingOptions | None,
    pool: WorkerPool,
    observers: Observers,
    supervisor: Supervisor,
) -> MakeRunner | None:
    """With --enable_batching, every version whose load chose batching gets a batching runner."""
    if batching is None:
        return None
    # a batch runs in a worker thread: more batch threads than workers would only queue
    in_flight = min(batching.num_batch_threads, pool.workers)
    log.info("batching: %s, at most %d batch(es) running", batching, in_flight)
    slots = asyncio.Semaphore(in_flight)

    def make_runner(id: ServableId, loaded: LoadedVersion) -> Runner:
        if loaded.batching is None:
            return DirectRunner(loaded.model, pool=pool)
        return BatchingRunner(
            loaded.model,
            pool=pool,
            options=loaded.batching,
            slots=slots,
            on_batch=observers.batch_started,
            model_name=id.name,
            spawn=supervisor.spawn,
        )

    return make_runner


def _core_options(options: ServerOptions) -> CoreOptions:
    interval = options.load_retry_interval_micros / 1e6
    return CoreOptions(
        file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
        allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
        retry=RetryPolicy(
            max_retries=options.max_num_load_retries, interval_seconds=max(interval, 0)
        ),
    )


VERSION_BATCHING_FILE = "batching_params.pbtxt"


def _model_loader(
    options: ServerOptions, batching: BatchingOptions | None, session_config: Any
) -> LoadModel:
    """Loading one version folder, in a load thread: fetch, read, load, warm up.

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
    )
    per_version = batching is not None and options.enable_per_model_batching_parameters

    def load(path: str, report: Callable[[LoadRecord], None]) -> LoadedVersion:
        storage = storage_for(path)
        folder = storage.local_version(path)
        chosen = batching
        if per_version:  # a file that does not parse fails the load before TensorFlow runs
            chosen = version_options(storage.read_text(os.path.join(folder, VERSION_BATCHING_FILE)))
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


def _endpoints(built: frontends.FrontEnds) -> str:
    return ", ".join(f.endpoint for f in built.listeners) or "no listeners"


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

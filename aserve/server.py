"""The composition root: build everything, run it on one event loop, shut it down in order.

    Server(options).serve()  ->  listeners bound -> models configured -> ready
                              ->  (stop)  -> listeners closed -> requests drained
                              ->  versions unloaded -> pools shut down

:func:`run` is what ``python -m aserve`` calls: uvloop, logging, signals, and
a one-line error plus a non-zero exit status when start-up fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import aiofiles
import grpc
from grpc_health.v1 import health_pb2_grpc

from aserve import grpc_api
from aserve._proto import batching_parameters_pb2, monitoring_config_pb2, ssl_config_pb2
from aserve.batching import (
    BatchingOptions,
    BatchingRunner,
    DirectRunner,
    Runner,
    read_version_options,
)
from aserve.config import ServingConfig, parse_model_server_config, parse_text_proto, single_model
from aserve.core import CoreOptions, ServerCore
from aserve.errors import ServingError
from aserve.flags import ServerOptions
from aserve.grpc_api import Health
from aserve.ids import ServableId
from aserve.manager import RetryPolicy
from aserve.metrics import Metrics
from aserve.pool import WorkerPool
from aserve.rest import RestOptions, RestServer, create_app
from aserve.service import Service, ServiceOptions

log = logging.getLogger("aserve")
M = TypeVar("M")


class StartupError(Exception):
    """Start-up failed; the message is one line for the user."""


class Server:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.core: ServerCore | None = None
        self.rest_port = 0  # the bound ports, once serving
        self.grpc_port = 0
        self.metrics = Metrics()

    async def serve(
        self,
        *,
        stop: asyncio.Event | None = None,
        on_ready: Callable[[], None] | None = None,
        handle_signals: bool = False,
    ) -> None:
        options = self.options
        stop = stop or asyncio.Event()
        if handle_signals:
            _install_signal_handlers(stop)
        for flag in options.ignored_flags:
            log.warning("--%s is accepted for compatibility but has no effect yet", flag)
        config, config_text = await self._initial_config()
        batching = await self._batching_options()
        metrics_path = await self._prometheus_path()
        session_config = await self._session_config()
        metrics = self.metrics
        per_version: VersionBatching | None = (
            {} if batching is not None and options.enable_per_model_batching_parameters else None
        )
        pool = WorkerPool(
            workers=options.num_worker_threads,
            load_threads=options.num_load_threads,
            unload_threads=options.num_unload_threads,
        )
        core = self.core = ServerCore(
            options=_core_options(options),
            pool=pool,
            load_model=_model_loader(options, metrics, per_version, session_config),
            make_runner=_runner_factory(batching, pool, metrics, per_version),
        )
        service = Service(
            core=core,
            metrics=metrics,
            options=ServiceOptions(check_method_name=options.enable_signature_method_name_check),
        )
        tasks: list[asyncio.Task[None]] = []
        health = Health() if options.enable_grpc_healthcheck_service else None
        rest_server = grpc_server = None
        try:
            rest_server = await self._start_rest(service, metrics_path)
            grpc_server = await self._start_grpc(service, health)
            await core.start(config)
            tasks.append(asyncio.create_task(_freeze_heap_after_loads(core)))
            if health is not None:
                tasks.append(asyncio.create_task(_track_health(core, health)))
            if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
                watch = core.watch_config_file(
                    options.model_config_file,
                    options.model_config_file_poll_wait_seconds,
                    config_text,
                )
                tasks.append(asyncio.create_task(watch))
            log.info("aserve ready: %s", self._endpoints())
            if on_ready is not None:
                on_ready()
            await stop.wait()
            log.info("shutting down")
        finally:
            if health is not None:
                await health.set_serving(False)
            if rest_server is not None:
                await rest_server.stop()
            if grpc_server is not None:
                await grpc_server.stop(options.shutdown_grace_seconds)
            await _cancel(tasks)
            await core.shutdown(options.shutdown_grace_seconds)
            pool.shutdown()

    async def _initial_config(self) -> tuple[ServingConfig, str]:
        options = self.options
        if not options.model_config_file:
            return single_model(options.model_name, options.model_base_path), ""
        text = await _read_startup_file("model_config_file", options.model_config_file)
        with _startup_errors():
            config = parse_model_server_config(text)
        return config or ServingConfig.of(), text

    async def _batching_options(self) -> BatchingOptions | None:
        options = self.options
        if not options.enable_batching:
            return None
        message = batching_parameters_pb2.BatchingParameters
        params = await self._startup_proto("batching_parameters_file", message)
        if params is None:  # as tensorflow_model_server names its pool without a file
            params = message(thread_pool_name={"value": "model_server_batch_threads"})
        with _startup_errors():
            return BatchingOptions.from_proto(params)

    async def _prometheus_path(self) -> str | None:
        """The REST path of the Prometheus page, if --monitoring_config_file enables it."""
        message = monitoring_config_pb2.MonitoringConfig
        config = await self._startup_proto("monitoring_config_file", message)
        if config is None or not config.prometheus_config.enable:
            return None
        if not self.options.rest_api_port:
            log.warning("Prometheus metrics need --rest_api_port; not exported")
            return None
        return config.prometheus_config.path or "/monitoring/prometheus/metrics"

    async def _session_config(self) -> Any:
        """--tensorflow_session_config_file: a text ConfigProto for every session, or None."""
        if not self.options.tensorflow_session_config_file:
            return None
        from tensorflow.core.protobuf import config_pb2  # imports TensorFlow: only when asked

        return await self._startup_proto("tensorflow_session_config_file", config_pb2.ConfigProto)

    async def _startup_proto(self, flag: str, message: type[M]) -> M | None:
        """The text proto in the file --``flag`` names (None if unset); errors are one line."""
        path = getattr(self.options, flag)
        if not path:
            return None
        text = await _read_startup_file(flag, path)
        with _startup_errors():
            return parse_text_proto(text, message)

    def _rest_socket(self) -> socket.socket | None:
        options = self.options
        if options.rest_api_port == 0:
            return None
        if options.rest_api_port == options.port:
            log.error("--rest_api_port equals --port (%d): REST API disabled", options.port)
            return None
        sock = _listen(options.rest_api_host or options.host, options.rest_api_port)
        self.rest_port = sock.getsockname()[1]
        return sock

    async def _start_rest(self, service: Service, metrics_path: str | None) -> RestServer | None:
        sock = self._rest_socket()
        if sock is None:
            return None
        options = self.options
        app = create_app(
            service,
            RestOptions(
                timeout_ms=options.rest_api_timeout_in_ms,
                max_body_bytes=options.rest_api_max_body_bytes,
                cors=options.rest_api_enable_cors_support,
                metrics_path=metrics_path,
            ),
        )
        server = RestServer(app, sock, grace_seconds=options.shutdown_grace_seconds)
        await server.start()
        return server

    async def _start_grpc(self, service: Service, health: Health | None) -> grpc.aio.Server | None:
        options = self.options
        if not options.port and not options.grpc_socket_path:
            return None
        server = grpc.aio.server(options=_grpc_server_options(options))
        grpc_api.add_to_server(
            server, service, tensor_content=options.enable_serialization_as_tensor_content
        )
        if health is not None:
            health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
            await health.set_serving(False)
        if options.port:
            address = f"{options.grpc_host or options.host}:{options.port}"
            self.grpc_port = _add_port(server, address, await self._ssl_credentials())
        if options.grpc_socket_path:
            _add_port(server, f"unix:{options.grpc_socket_path}", None)
        await server.start()
        return server

    async def _ssl_credentials(self) -> grpc.ServerCredentials | None:
        ssl = await self._startup_proto("ssl_config_file", ssl_config_pb2.SSLConfig)
        if ssl is None:
            return None
        return grpc.ssl_server_credentials(
            [(ssl.server_key.encode(), ssl.server_cert.encode())],
            root_certificates=ssl.custom_ca.encode() or None,
            require_client_auth=ssl.client_verify,
        )

    def _endpoints(self) -> str:
        options = self.options
        parts = []
        if self.rest_port:
            parts.append(f"REST on {options.rest_api_host or options.host}:{self.rest_port}")
        if self.grpc_port:
            parts.append(f"gRPC on {options.grpc_host or options.host}:{self.grpc_port}")
        if options.grpc_socket_path:
            parts.append(f"gRPC on unix:{options.grpc_socket_path}")
        return ", ".join(parts) or "no listeners"


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
    return 0


async def _read_startup_file(flag: str, path: str) -> str:
    try:
        async with aiofiles.open(path) as f:
            return str(await f.read())
    except OSError as e:
        raise StartupError(f"cannot read --{flag}={path}: {e.strerror}") from None


@contextlib.contextmanager
def _startup_errors() -> Iterator[None]:
    """A bad config file at start-up is a one-line error, not a traceback."""
    try:
        yield
    except ServingError as e:
        raise StartupError(e.message) from None


# --enable_per_model_batching_parameters: each loaded version's own batching options, by
# version folder. The loader (a load thread) puts them here once the version has loaded; the
# runner factory (on the loop) takes them. A version without its own file maps to None and is
# not batched; the global file then only sizes the batch threads, as in TF Serving.
VersionBatching = dict[str, BatchingOptions | None]


def _runner_factory(
    batching: BatchingOptions | None,
    pool: WorkerPool,
    metrics: Metrics,
    per_version: VersionBatching | None,
) -> Callable[[ServableId, Any], Runner] | None:
    """With --enable_batching, every loaded version gets a batching runner."""
    if batching is None:
        return None
    # a batch runs in a worker thread: more batch threads than workers would only queue
    in_flight = min(batching.num_batch_threads, pool.workers)
    log.info("batching: %s, at most %d batch(es) running", batching, in_flight)
    slots = asyncio.Semaphore(in_flight)

    def make_runner(id: ServableId, model: Any) -> Runner:
        chosen = per_version.pop(model.path, None) if per_version is not None else batching
        if chosen is None:
            return DirectRunner(model, pool=pool)
        return BatchingRunner(
            model, pool=pool, options=chosen, slots=slots, metrics=metrics, model_name=id.name
        )

    return make_runner


def _grpc_server_options(options: ServerOptions) -> list[tuple[str, int | str]]:
    given = dict(options.grpc_channel_arguments)
    defaults = {  # TF Serving: 2 GiB - 1 both ways unless configured lower
        "grpc.max_send_message_length": 2**31 - 1,
        "grpc.max_receive_message_length": 2**31 - 1,
    }
    return list({**defaults, **given}.items())


def _add_port(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None
) -> int:
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as e:
        raise StartupError(f"cannot listen on {address}: {e}") from None
    if port == 0 and not address.startswith("unix:"):
        raise StartupError(f"cannot listen on {address}")
    return int(port)


async def _freeze_heap_after_loads(core: ServerCore) -> None:
    """Keep TensorFlow's huge, long-lived object graph out of the garbage collector's scans.

    Measured: with TF imported, each full collection took ~180 ms (collecting nothing) and
    stalled every request in flight (REST p99 157 ms at 32 connections). Objects alive after
    a load are frozen into the permanent generation, so collections only scan new objects.
    """
    while True:
        gc.freeze()
        await core.monitor.changed()


async def _track_health(core: ServerCore, health: Health) -> None:
    while True:
        serving = core.ready()
        await health.set_serving(serving)
        await core.monitor.wait_until(lambda was=serving: core.ready() != was)  # type: ignore[misc]


def _core_options(options: ServerOptions) -> CoreOptions:
    interval = options.load_retry_interval_micros / 1e6
    return CoreOptions(
        file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
        allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
        retry=RetryPolicy(
            max_retries=options.max_num_load_retries, interval_seconds=max(interval, 0)
        ),
    )


def _model_loader(
    options: ServerOptions,
    metrics: Metrics,
    per_version: VersionBatching | None,
    session_config: Any,
) -> Callable[[str], object]:
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

    def load(path: str) -> loader.SavedModel:
        # a batching_params.pbtxt that does not parse fails the load before TensorFlow runs
        own_batching = read_version_options(path) if per_version is not None else None
        start = time.perf_counter()
        try:
            model = loader.load(path, load_options)
        except BaseException:
            metrics.record_load(path, False, time.perf_counter() - start)
            raise
        metrics.record_load(path, True, time.perf_counter() - start)
        if options.enable_model_warmup:
            try:
                warmup.warm_up(model, options.num_request_iterations_for_warmup)
            except BaseException:
                model.close()
                raise
        if per_version is not None:
            per_version[path] = own_batching
        return model

    return load


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=1024)
    except OSError as e:
        raise StartupError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by connections
    sock.setblocking(False)
    return sock


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Stop the background loops (health, heap freezing, config watching)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

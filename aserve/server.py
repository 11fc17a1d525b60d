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
import functools
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

import aiofiles

from aserve.config import ServingConfig, parse_model_server_config, single_model
from aserve.core import CoreOptions, ServerCore
from aserve.errors import ServingError
from aserve.flags import ServerOptions
from aserve.manager import RetryPolicy
from aserve.pool import WorkerPool
from aserve.rest import RestOptions, create_app
from aserve.service import Service, ServiceOptions

log = logging.getLogger("aserve")


class StartupError(Exception):
    """Start-up failed; the message is one line for the user."""


class Server:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.core: ServerCore | None = None
        self.rest_port = 0  # the bound port, once serving

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
        pool = WorkerPool(
            workers=options.num_worker_threads,
            load_threads=options.num_load_threads,
            unload_threads=options.num_unload_threads,
        )
        core = self.core = ServerCore(
            options=_core_options(options), pool=pool, load_model=_model_loader(options)
        )
        service = Service(
            core=core,
            options=ServiceOptions(check_method_name=options.enable_signature_method_name_check),
        )
        tasks: list[asyncio.Task[None]] = []
        rest_stop = asyncio.Event()
        try:
            if rest := self._rest_socket():
                tasks.append(asyncio.create_task(self._serve_rest(service, rest, rest_stop)))
            await core.start(config)
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
            rest_stop.set()
            await _finish(tasks, options.shutdown_grace_seconds)
            await core.shutdown(options.shutdown_grace_seconds)
            pool.shutdown()

    async def _initial_config(self) -> tuple[ServingConfig, str]:
        options = self.options
        if not options.model_config_file:
            return single_model(options.model_name, options.model_base_path), ""
        try:
            async with aiofiles.open(options.model_config_file) as f:
                text = await f.read()
            config = parse_model_server_config(text)
        except OSError as e:
            raise StartupError(f"cannot read {options.model_config_file}: {e.strerror}") from None
        except ServingError as e:
            raise StartupError(e.message) from None
        return config or ServingConfig.of(), text

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

    async def _serve_rest(self, service: Service, sock: socket.socket, stop: asyncio.Event) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        options = self.options
        app = create_app(
            service,
            RestOptions(
                timeout_ms=options.rest_api_timeout_in_ms,
                max_body_bytes=options.rest_api_max_body_bytes,
                cors=options.rest_api_enable_cors_support,
            ),
        )
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns and closes the socket
        config.accesslog = None
        config.errorlog = logging.getLogger("aserve.http")
        config.keep_alive_max_requests = 2**31
        config.graceful_timeout = options.shutdown_grace_seconds
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    def _endpoints(self) -> str:
        options = self.options
        parts = []
        if self.rest_port:
            parts.append(f"REST on {options.rest_api_host or options.host}:{self.rest_port}")
        return ", ".join(parts) or "no listeners"


def run(options: ServerOptions) -> int:
    """Run the server until SIGINT/SIGTERM; return the process exit status."""
    logging.basicConfig(
        level=options.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    import uvloop

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(Server(options).serve(handle_signals=True))
    except StartupError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


def _core_options(options: ServerOptions) -> CoreOptions:
    interval = options.load_retry_interval_micros / 1e6
    return CoreOptions(
        file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
        allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
        retry=RetryPolicy(
            max_retries=options.max_num_load_retries, interval_seconds=max(interval, 0)
        ),
    )


def _model_loader(options: ServerOptions) -> Callable[[str], object]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    from aserve import loader

    intra = options.tensorflow_intra_op_parallelism or options.tensorflow_session_parallelism
    inter = options.tensorflow_inter_op_parallelism or options.tensorflow_session_parallelism
    load_options = loader.LoadOptions(
        tags=options.saved_model_tags,
        intra_op_threads=intra or 1,  # one thread per op; the worker pool gives the parallelism
        inter_op_threads=inter,
        device=options.device,
        gpu_memory_fraction=options.per_process_gpu_memory_fraction,
    )
    return functools.partial(loader.load, options=load_options)


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


async def _finish(tasks: list[asyncio.Task[None]], grace_seconds: float) -> None:
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace_seconds + 1)
    for task in pending:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*pending, return_exceptions=True)

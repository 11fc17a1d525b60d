"""Which front ends a server runs, the protocols each serves, and their listeners, from flags.

    front_ends = await frontends.build(options, service, metrics)  # REST's socket bound here
    for front_end in front_ends: await front_end.start()           # listening from here
    await asyncio.gather(*(f.stop(deadline) for f in front_ends))

Today: HTTP (TF Serving's REST API, KServe V2's REST API, the health endpoints and the
Prometheus page) and gRPC (TF Serving's PredictionService and ModelService, KServe V2's
GRPCInferenceService, gRPC health, and TensorFlow's ProfilerService). A new protocol adds
its routes or methods here and its translation in one module of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from aserve import grpc_native
from aserve._proto import monitoring_config_pb2, ssl_config_pb2
from aserve.flags import ServerOptions
from aserve.grpc_api import TfServingApi
from aserve.grpc_profiler import ProfilerApi
from aserve.grpc_server import GrpcFrontEnd
from aserve.health import HealthApi
from aserve.http import (
    TEXT,
    ConnectionLimits,
    HttpApp,
    HttpFrontEnd,
    HttpOptions,
    HttpRequest,
    HttpResponse,
    Route,
    TlsOptions,
    bind,
)
from aserve.metrics import Metrics
from aserve.rest import RestApi
from aserve.service import Service
from aserve.startup import StartupError, read_proto
from aserve.v2_grpc import V2GrpcApi
from aserve.v2_rest import V2RestApi

log = logging.getLogger("aserve")

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


class FrontEnd(Protocol):
    @property
    def endpoint(self) -> str:
        """Where it listens, for the log: "REST on 0.0.0.0:8501"."""
        ...

    async def start(self) -> None: ...

    async def stop(self, deadline: float) -> None: ...


async def build(
    options: ServerOptions, service: Service, metrics: Metrics, *, max_connections: int = 0
) -> list[FrontEnd]:
    """Every front end the flags ask for, REST's socket bound; StartupError if one fails.

    None listens yet: each starts listening in its ``start``.
    """
    health = HealthApi(service)
    front_ends: list[FrontEnd] = []
    http = await _http(options, service, metrics, health, max_connections)
    if http is not None:
        front_ends.append(http)
    grpc_front_end = await _grpc(options, service, health, max_connections)
    if grpc_front_end is not None:
        front_ends.append(grpc_front_end)
    return front_ends


async def _http(
    options: ServerOptions,
    service: Service,
    metrics: Metrics,
    health: HealthApi,
    max_connections: int,
) -> HttpFrontEnd | None:
    metrics_path = await _prometheus_path(options)
    if options.rest_api_port == 0:
        if metrics_path is not None:
            log.warning("Prometheus metrics need --rest_api_port; not exported")
        return None
    if options.rest_api_port == options.port:
        log.error("--rest_api_port equals --port (%d): REST API disabled", options.port)
        return None
    timeout_ms = options.rest_api_timeout_in_ms
    routes = [
        *RestApi(service, timeout_ms=timeout_ms).routes(),
        *health.routes(),
        *V2RestApi(service, timeout_ms=timeout_ms).routes(),
    ]
    if metrics_path is not None:
        routes.append(Route(metrics_path, _page(metrics.render, api="metrics"), access="metrics"))
    app = HttpApp(
        service,
        routes,
        HttpOptions(
            max_body_bytes=options.rest_api_max_body_bytes,
            cors=options.rest_api_enable_cors_support,
        ),
    )
    host, port = options.rest_api_host, options.rest_api_port
    try:
        sock = bind(host, port)
    except OSError as e:
        raise StartupError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    tls = None
    if options.rest_api_ssl_certfile:
        tls = TlsOptions(
            certfile=options.rest_api_ssl_certfile,
            keyfile=options.rest_api_ssl_keyfile,
            client_ca_file=options.rest_api_ssl_ca_file,
        )
    limits = ConnectionLimits(
        header_timeout_s=options.rest_api_header_timeout_seconds,
        keepalive_s=options.rest_api_keepalive_seconds,
        max_connections=max_connections,
    )
    return HttpFrontEnd(app, sock, tls=tls, limits=limits, server=options.rest_server)


async def _grpc(
    options: ServerOptions, service: Service, health: HealthApi, max_connections: int
) -> FrontEnd | None:
    if not options.port and not options.grpc_socket_path:
        return None
    methods = TfServingApi(
        service, tensor_content=options.enable_serialization_as_tensor_content
    ).methods()
    methods += V2GrpcApi(service).methods()
    if options.enable_grpc_healthcheck_service:
        methods += health.methods()
    if options.enable_profiler:
        methods += ProfilerApi(service).methods()
    addresses = []
    if options.port:
        addresses.append((f"{options.grpc_host}:{options.port}", await _ssl_credentials(options)))
    if options.grpc_socket_path:
        addresses.append((f"unix:{options.grpc_socket_path}", None))
    if options.grpc_server == "native":
        given = dict(options.grpc_channel_arguments)
        if options.max_connections:
            given.setdefault("grpc.max_allowed_incoming_connections", options.max_connections)
        why = grpc_native.unsupported(addresses, given)
        if not why:
            return grpc_native.NativeGrpcFrontEnd(
                service, methods, addresses=addresses, options=_grpc_limits(given)
            )
        log.info("gRPC: grpcio serves, since the native server does not support %s", why)
    server_options = _grpc_server_options(options, max_connections)
    return GrpcFrontEnd(service, methods, addresses=addresses, options=server_options)


async def _prometheus_path(options: ServerOptions) -> str | None:
    """The REST path of the Prometheus page, if --monitoring_config_file enables it."""
    message = monitoring_config_pb2.MonitoringConfig
    config = await read_proto(options, "monitoring_config_file", message)
    if config is None or not config.prometheus_config.enable:
        return None
    return config.prometheus_config.path or DEFAULT_METRICS_PATH


def _page(render: Callable[[], str], *, api: str) -> Callable[..., Any]:
    async def page(request: HttpRequest) -> HttpResponse:
        request.record.api = api
        return HttpResponse(render().encode(), content_type=TEXT)

    return page


async def _ssl_credentials(options: ServerOptions) -> grpc.ServerCredentials | None:
    ssl = await read_proto(options, "ssl_config_file", ssl_config_pb2.SSLConfig)
    if ssl is None:
        return None
    return grpc.ssl_server_credentials(
        [(ssl.server_key.encode(), ssl.server_cert.encode())],
        root_certificates=ssl.custom_ca.encode() or None,
        require_client_auth=ssl.client_verify,
    )


def _grpc_limits(given: dict[str, int | str]) -> dict[str, int | str]:
    """The native server's options: TF Serving's message limits unless configured lower."""
    return {
        "grpc.max_send_message_length": 2**31 - 1,
        "grpc.max_receive_message_length": 2**31 - 1,
        "grpc.keepalive_time_ms": 60_000,
        "grpc.keepalive_timeout_ms": 20_000,
        **given,
    }


def _grpc_server_options(
    options: ServerOptions, max_connections: int
) -> list[tuple[str, int | str]]:
    """aserve's defaults, which --grpc_channel_arguments may override one by one."""
    given = dict(options.grpc_channel_arguments)
    defaults = {
        # TF Serving: 2 GiB - 1 both ways unless configured lower
        "grpc.max_send_message_length": 2**31 - 1,
        "grpc.max_receive_message_length": 2**31 - 1,
        # connections over the cap are closed as they open
        "grpc.max_allowed_incoming_connections": max_connections,
        # idle connections close after 5 minutes; dead peers are found by pings
        "grpc.max_connection_idle_ms": 300_000,
        "grpc.keepalive_time_ms": 60_000,
        "grpc.keepalive_timeout_ms": 20_000,
    }
    return list({**defaults, **given}.items())

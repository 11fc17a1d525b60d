"""Which front ends a server runs, the protocols each serves, and their listeners, from flags.

    front_ends = await frontends.build(options, service, metrics)  # sockets bound here
    for front_end in front_ends.listeners: await front_end.start()
    supervisor.spawn(...) for front_ends.background                # e.g. gRPC health tracking
    await asyncio.gather(*(f.stop(deadline) for f in front_ends.listeners))

Today: HTTP (TF Serving's REST API and the Prometheus page) and gRPC (TF Serving's
PredictionService and ModelService, and gRPC health). A new protocol adds its routes or
methods here and its translation in one module of its own.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from aserve._proto import monitoring_config_pb2, ssl_config_pb2
from aserve.flags import ServerOptions
from aserve.grpc_api import Health, TfServingApi
from aserve.grpc_server import GrpcFrontEnd
from aserve.http import TEXT, HttpApp, HttpFrontEnd, HttpOptions, HttpRequest, HttpResponse, Route
from aserve.metrics import Metrics
from aserve.rest import RestApi
from aserve.service import Service
from aserve.startup import StartupError, read_proto

log = logging.getLogger("aserve")

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"


class FrontEnd(Protocol):
    @property
    def endpoint(self) -> str:
        """Where it listens, for the log: "REST on 0.0.0.0:8501"."""
        ...

    async def start(self) -> None: ...

    async def stop(self, deadline: float) -> None: ...


@dataclass
class FrontEnds:
    listeners: list[FrontEnd] = field(default_factory=list)
    # long-lived tasks the protocols need, by name, for the supervisor
    background: dict[str, Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=dict)


async def build(options: ServerOptions, service: Service, metrics: Metrics) -> FrontEnds:
    """Every front end the flags ask for, listening sockets bound; StartupError if one fails."""
    built = FrontEnds()
    http = await _http(options, service, metrics)
    if http is not None:
        built.listeners.append(http)
    grpc_front_end = await _grpc(options, service, built)
    if grpc_front_end is not None:
        built.listeners.append(grpc_front_end)
    return built


async def _http(options: ServerOptions, service: Service, metrics: Metrics) -> HttpFrontEnd | None:
    metrics_path = await _prometheus_path(options)
    if options.rest_api_port == 0:
        if metrics_path is not None:
            log.warning("Prometheus metrics need --rest_api_port; not exported")
        return None
    if options.rest_api_port == options.port:
        log.error("--rest_api_port equals --port (%d): REST API disabled", options.port)
        return None
    routes = RestApi(service, timeout_ms=options.rest_api_timeout_in_ms).routes()
    if metrics_path is not None:
        routes.append(Route(metrics_path, _page(metrics.render, api="metrics")))
    app = HttpApp(
        service,
        routes,
        HttpOptions(
            max_body_bytes=options.rest_api_max_body_bytes,
            cors=options.rest_api_enable_cors_support,
        ),
    )
    return HttpFrontEnd(app, _listen(options.rest_api_host, options.rest_api_port))


async def _grpc(options: ServerOptions, service: Service, built: FrontEnds) -> GrpcFrontEnd | None:
    if not options.port and not options.grpc_socket_path:
        return None
    methods = TfServingApi(
        service, tensor_content=options.enable_serialization_as_tensor_content
    ).methods()
    if options.enable_grpc_healthcheck_service:
        health = Health()
        methods += health.methods()
        built.background["grpc-health"] = lambda: health.track(service)
    front_end = GrpcFrontEnd(service, methods, options=_grpc_server_options(options))
    addresses = []
    if options.port:
        addresses.append((f"{options.grpc_host}:{options.port}", await _ssl_credentials(options)))
    if options.grpc_socket_path:
        addresses.append((f"unix:{options.grpc_socket_path}", None))
    for address, credentials in addresses:
        try:
            front_end.add_port(address, credentials)
        except (RuntimeError, OSError) as e:
            raise StartupError(f"cannot listen on {address}: {e}") from None
    return front_end


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


def _grpc_server_options(options: ServerOptions) -> list[tuple[str, int | str]]:
    given = dict(options.grpc_channel_arguments)
    defaults = {  # TF Serving: 2 GiB - 1 both ways unless configured lower
        "grpc.max_send_message_length": 2**31 - 1,
        "grpc.max_receive_message_length": 2**31 - 1,
    }
    return list({**defaults, **given}.items())


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=1024)
    except OSError as e:
        raise StartupError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by connections
    sock.setblocking(False)
    return sock

"""Liveness and readiness for probes and load balancers, over REST and gRPC.

    GET /v2/health/live    200 {"live": true} while the process serves at all
    GET /v2/health/ready   200 {"ready": true}, or 503 {"ready": false, "draining": ...,
                           "not_ready": {"<model>": "<why>"}}
    grpc.health.v1.Health  Check and Watch: SERVING exactly when ready

Ready means: every configured model has at least one AVAILABLE version and the server is
not draining (it turns false at once on SIGTERM). The REST paths are those of KServe's Open
Inference Protocol, which Kubernetes probes and KServe already use. Neither needs a model
name, and both stay open when authentication is on.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Final

import orjson
from grpc_health.v1 import health_pb2

from aserve.errors import Code, ServingError
from aserve.grpc_calls import Context, Method
from aserve.http import HttpRequest, HttpResponse, Route
from aserve.records import RequestRecord
from aserve.service import Service

HEALTH_SERVICE: Final = "grpc.health.v1.Health"
# the service names gRPC health answers for: the server as a whole and TF Serving's services
SERVICES: Final = (
    "",
    "PredictionService",
    "ModelService",
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
)
_LIVE: Final = orjson.dumps({"live": True})
_READY: Final = orjson.dumps({"ready": True})
_SERVING: Final = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING: Final = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthApi:
    def __init__(self, service: Service) -> None:
        self._service = service

    # -- REST -------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/v2/health/live", self._live, access="open"),
            Route("/v2/health/ready", self._ready, access="open"),
        ]

    async def _live(self, request: HttpRequest) -> HttpResponse:
        request.record.api = "live"
        return HttpResponse(_LIVE)

    async def _ready(self, request: HttpRequest) -> HttpResponse:
        request.record.api = "ready"
        service = self._service
        if service.ready():
            return HttpResponse(_READY)
        body = {"ready": False, "draining": service.draining, "not_ready": service.not_ready()}
        return HttpResponse(orjson.dumps(body), status=503)

    # -- gRPC -------------------------------------------------------------------------------

    def methods(self) -> list[Method]:
        request = health_pb2.HealthCheckRequest
        return [
            Method(HEALTH_SERVICE, "Check", request, self.Check, access="open"),
            Method(HEALTH_SERVICE, "Watch", request, self.Watch, stream=True, access="open"),
        ]

    async def Check(self, request: Any, context: Context, record: RequestRecord) -> Any:
        if request.service not in SERVICES:
            raise ServingError(Code.NOT_FOUND, "unknown service")  # as gRPC's own servicer
        return health_pb2.HealthCheckResponse(status=self._status())

    async def Watch(
        self, request: Any, context: Context, record: RequestRecord
    ) -> AsyncGenerator[Any, None]:
        if request.service not in SERVICES:
            yield health_pb2.HealthCheckResponse(
                status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            )
            return
        last = None
        while True:
            status = self._status()
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await self._service.readiness_changed()

    def _status(self) -> int:
        return int(_SERVING if self._service.ready() else _NOT_SERVING)

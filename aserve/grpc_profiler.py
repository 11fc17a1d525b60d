"""TensorFlow's ``tensorflow.ProfilerService`` on the gRPC port, as TF Serving serves it.

``Profile`` traces the server for the requested duration with TensorFlow's profiler and
returns the XSpace as the ``xplane.pb`` tool data, which the client (TensorBoard's capture,
``tf.profiler.experimental.client.trace``) saves as ``<logdir>/plugins/profile/<session>/
<host>_<port>.xplane.pb``; the server writes nothing to its own disk. ``Terminate`` ends a
running trace early; ``Monitor`` is UNIMPLEMENTED, as in TensorFlow's own server. All three
need the admin token when ``--admin_token_file`` is set.
"""

from __future__ import annotations

from typing import Any, Final

from aserve._proto import profiler_service_pb2 as pb
from aserve.errors import Code, ServingError
from aserve.grpc_calls import Context, Method
from aserve.records import RequestRecord
from aserve.service import Service

PROFILER_SERVICE: Final = "tensorflow.ProfilerService"
XPLANE_TOOL: Final = "xplane.pb"
# TSL's ProfilerSession defaults when the request's options carry no version
DEFAULT_LEVELS: Final = {"host_tracer_level": 2, "device_tracer_level": 1, "python_tracer_level": 0}


class ProfilerApi:
    def __init__(self, service: Service) -> None:
        self._service = service

    def methods(self) -> list[Method]:
        s = PROFILER_SERVICE
        return [
            Method(s, "Profile", pb.ProfileRequest, self.Profile, access="admin"),
            Method(s, "Terminate", pb.TerminateRequest, self.Terminate, access="admin"),
            Method(s, "Monitor", pb.MonitorRequest, self.Monitor, access="admin"),
        ]

    async def Profile(self, request: Any, context: Context, record: RequestRecord) -> Any:
        options = request.opts
        levels = dict(DEFAULT_LEVELS)
        if options.version:
            levels = {
                "host_tracer_level": options.host_tracer_level,
                "device_tracer_level": options.device_tracer_level,
                "python_tracer_level": options.python_tracer_level,
            }
        duration_ms = options.duration_ms or request.duration_ms
        data = await self._service.profile(record, duration_ms, levels, request.session_id)
        response = pb.ProfileResponse(empty_trace=data is None)
        if data is not None:
            response.tool_data.add(name=XPLANE_TOOL, data=data)
        return response

    async def Terminate(self, request: Any, context: Context, record: RequestRecord) -> Any:
        self._service.end_profile(request.session_id)
        return pb.TerminateResponse()

    async def Monitor(self, request: Any, context: Context, record: RequestRecord) -> Any:
        raise ServingError(Code.UNIMPLEMENTED, "unimplemented.")

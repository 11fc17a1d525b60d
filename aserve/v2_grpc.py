"""The Open Inference Protocol (KServe V2) over gRPC: ``inference.GRPCInferenceService``,
with Triton's repository RPCs, on the gRPC port of TF Serving's API.

ModelInfer takes inputs as typed ``contents`` or as ``raw_input_contents`` (one entry per
input, in order) and answers in kind: raw outputs for raw inputs (and whenever an output is
FP16 or BF16, which have no typed field), typed ``contents`` otherwise. The signature is
named by the ``signature_name`` parameter (a ``string_param``). Methods the service does not
have (ModelConfig, ModelStatistics, the shared-memory RPCs, ...) answer UNIMPLEMENTED, as
every unregistered method does (:mod:`aserve.grpc_server`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from aserve import v2
from aserve._proto import grpc_predict_v2_pb2 as pb
from aserve.errors import ServingError, invalid_argument
from aserve.grpc_api import leading_field, timeout_ms
from aserve.grpc_calls import Context, Method
from aserve.ids import ServableRequest
from aserve.records import RequestRecord
from aserve.service import Encoding, Service
from aserve.tensors import costs, v2_codec

V2_SERVICE: Final = "inference.GRPCInferenceService"
_NO_TYPED_FIELD: Final = frozenset({"FP16", "BF16"})


class V2GrpcApi:
    """``inference.GRPCInferenceService``, one instance per server."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def methods(self) -> list[Method]:
        s = V2_SERVICE
        return [
            Method(s, "ServerLive", pb.ServerLiveRequest, self.ServerLive, access="open"),
            Method(s, "ServerReady", pb.ServerReadyRequest, self.ServerReady, access="open"),
            Method(s, "ModelReady", pb.ModelReadyRequest, self.ModelReady),
            Method(s, "ServerMetadata", pb.ServerMetadataRequest, self.ServerMetadata),
            Method(s, "ModelMetadata", pb.ModelMetadataRequest, self.ModelMetadata),
            Method(s, "ModelInfer", pb.ModelInferRequest, self.ModelInfer, admission=_model_of),
            Method(s, "RepositoryIndex", pb.RepositoryIndexRequest, self.RepositoryIndex),
            Method(
                s,
                "RepositoryModelLoad",
                pb.RepositoryModelLoadRequest,
                self.RepositoryModelLoad,
                access="admin",
            ),
            Method(
                s,
                "RepositoryModelUnload",
                pb.RepositoryModelUnloadRequest,
                self.RepositoryModelUnload,
                access="admin",
            ),
        ]

    # -- server and models ------------------------------------------------------------------

    async def ServerLive(self, request: Any, context: Context, record: RequestRecord) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Context, record: RequestRecord) -> Any:
        return pb.ServerReadyResponse(ready=self._service.ready())

    async def ModelReady(self, request: Any, context: Context, record: RequestRecord) -> Any:
        spec = v2.servable_request(request.name, request.version)
        return pb.ModelReadyResponse(ready=v2.model_ready(self._service, record, spec))

    async def ServerMetadata(self, request: Any, context: Context, record: RequestRecord) -> Any:
        return pb.ServerMetadataResponse(
            name=v2.SERVER_NAME,
            version=v2.server_version(),
            extensions=v2.extensions(self._service),
        )

    async def ModelMetadata(self, request: Any, context: Context, record: RequestRecord) -> Any:
        spec = v2.servable_request(request.name, request.version)
        metadata = v2.model_metadata(self._service, record, spec)
        response = pb.ModelMetadataResponse(
            name=metadata.name, versions=metadata.versions, platform=metadata.platform
        )
        for t in metadata.inputs:
            response.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        for t in metadata.outputs:
            response.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        return response

    # -- inference --------------------------------------------------------------------------

    async def ModelInfer(self, request: Any, context: Context, record: RequestRecord) -> Any:
        spec = v2.servable_request(request.model_name, request.model_version)
        record.model = spec.name
        raw = len(request.raw_input_contents) > 0
        for output in request.outputs:
            if "classification" in output.parameters:
                raise invalid_argument("The classification extension is not supported")
        infer = v2.V2Request(
            request.id,
            _string_parameter(request.parameters, v2.SIGNATURE_PARAMETER),
            _inputs(request, raw),
            [output.name for output in request.outputs],
            record.bytes_in * costs.PROTO_DECODE_US_PER_BYTE / 2,
        )
        encode = functools.partial(_response, request, raw)
        encoding = Encoding(encode, costs.PROTO_ENCODE_US_PER_BYTE)
        return await self._service.predict(
            record, infer.predict(spec, timeout_ms(context)), encoding
        )

    # -- the repository extension --------------------------------------------------------------

    async def RepositoryIndex(self, request: Any, context: Context, record: RequestRecord) -> Any:
        entries = v2.repository_index(self._service, record, ready_only=request.ready)
        response = pb.RepositoryIndexResponse()
        for e in entries:
            response.models.add(name=e.name, version=e.version, state=e.state, reason=e.reason)
        return response

    async def RepositoryModelLoad(
        self, request: Any, context: Context, record: RequestRecord
    ) -> Any:
        config = v2.load_config(_parameter_values(request.parameters))
        await self._service.load_model(record, request.model_name, config)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: Any, context: Context, record: RequestRecord
    ) -> Any:
        await self._service.unload_model(record, request.model_name)
        return pb.RepositoryModelUnloadResponse()


def _inputs(request: Any, raw: bool) -> list[v2.V2Tensor]:
    if raw and len(request.raw_input_contents) != len(request.inputs):
        raise invalid_argument(
            f"{len(request.raw_input_contents)} raw_input_contents for {len(request.inputs)} "
            "inputs: give one per input, in order, or none"
        )
    tensors = []
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        datatype = v2_codec.check_datatype(tensor.datatype, name)
        shape = v2_codec.check_shape(list(tensor.shape), name)
        if raw and tensor.HasField("contents"):
            raise invalid_argument(f"Input '{name}' has contents, beside raw_input_contents")
        if raw:
            data, form = request.raw_input_contents[index], "binary"
        else:
            data, form = tensor.contents, "contents"
        tensors.append(v2.V2Tensor(name, datatype, shape, data, form))
    return tensors


def _response(request: Any, raw: bool, version: int, arrays: Mapping[str, np.ndarray]) -> Any:
    outputs = v2.outputs_of(arrays)
    raw = raw or any(o.datatype in _NO_TYPED_FIELD for o in outputs)
    response = pb.ModelInferResponse(
        model_name=request.model_name, model_version=str(version), id=request.id
    )
    for output in outputs:
        entry = response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        if raw:
            response.raw_output_contents.append(v2_codec.array_to_binary(output.array))
        else:
            v2_codec.fill_contents(output.array, output.datatype, entry.contents)
    return response


def _string_parameter(parameters: Any, name: str) -> str:
    if name not in parameters:
        return ""
    parameter = parameters[name]
    if parameter.WhichOneof("parameter_choice") != "string_param":
        raise invalid_argument(f"Parameter {name} must be a string_param")
    return str(parameter.string_param)


def _parameter_values(parameters: Any) -> dict[str, Any]:
    values = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = None if choice is None else getattr(parameter, choice)
    return values


def _model_of(data: bytes) -> ServableRequest | None:
    """The model a serialized ModelInferRequest names, read from its first fields
    (model_name = 1, model_version = 2, which serializers write first) without parsing the
    rest; None when it does not start that way (the full parse then tells what is wrong)."""
    name = leading_field(data, 0x0A)
    if name is None:
        return None
    version = leading_field(data, 0x12, name[1])
    try:
        return v2.servable_request(name[0].decode(), version[0].decode() if version else "")
    except (UnicodeDecodeError, ServingError):
        return None

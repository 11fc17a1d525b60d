"""TF Serving's gRPC API (PredictionService, ModelService), translated for the service.

Each method turns its request into a neutral one, makes one service call and builds the
response; :mod:`aserve.grpc_server` registers them, parses requests, serializes answers,
maps errors and records every call.

The client's deadline bounds the model run (TF Serving's RunOptions timeout); a client
that cancels, or whose deadline passes, cancels the handler, and a run that has not
started in the worker pool yet never starts.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Mapping
from typing import Any, Final

import numpy as np
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from aserve import inference, tensors
from aserve.errors import Code, ServingError, invalid_argument
from aserve.grpc_calls import Context, Method
from aserve.ids import ServableRequest
from aserve.records import RequestRecord
from aserve.service import Encoding, Examples, MultiInference, Predict, Service
from aserve.signatures import CLASSIFY_METHOD, REGRESS_METHOD, Signature
from aserve.tensors import costs
from aserve.tensors.budget import Budget
from aserve.tensors.proto import length_delimited, tensor_wire, varint

PREDICTION_SERVICE: Final = "tensorflow.serving.PredictionService"
MODEL_SERVICE: Final = "tensorflow.serving.ModelService"
RELOAD_RESPONSE_KEY: Final = "tensorflow.serving.reloadconfigresponse-bin"


class TfServingApi:
    """``tensorflow.serving.PredictionService`` and ``ModelService``."""

    def __init__(self, service: Service, *, tensor_content: bool = False) -> None:
        self._service = service
        self._tensor_content = tensor_content

    def methods(self) -> list[Method]:
        p, m = PREDICTION_SERVICE, MODEL_SERVICE
        return [
            Method(p, "Predict", predict_pb2.PredictRequest, self.Predict, admission=_spec_of),
            Method(
                p,
                "Classify",
                classification_pb2.ClassificationRequest,
                self.Classify,
                admission=_spec_of,
            ),
            Method(
                p, "Regress", regression_pb2.RegressionRequest, self.Regress, admission=_spec_of
            ),
            Method(p, "MultiInference", inference_pb2.MultiInferenceRequest, self.MultiInference),
            Method(
                p,
                "GetModelMetadata",
                get_model_metadata_pb2.GetModelMetadataRequest,
                self.GetModelMetadata,
            ),
            Method(
                m, "GetModelStatus", get_model_status_pb2.GetModelStatusRequest, self.GetModelStatus
            ),
            Method(
                m,
                "HandleReloadConfigRequest",
                model_management_pb2.ReloadConfigRequest,
                self.HandleReloadConfigRequest,
                access="admin",
            ),
        ]

    # -- PredictionService -------------------------------------------------------------------

    def Predict(self, request: Any, context: Context, record: RequestRecord) -> Awaitable[Any]:
        # hands back the service's coroutine, not awaited: one frame less to resume
        predict = Predict(
            _servable_request(request),
            request.model_spec.signature_name,
            _ProtoInputs(request.inputs, record.bytes_in * costs.PROTO_DECODE_US_PER_BYTE / 2),
            request.output_filter,
            timeout_ms=timeout_ms(context),
        )
        encode = functools.partial(self._predict_response, request.model_spec)
        encoding = Encoding(encode, costs.PROTO_ENCODE_US_PER_BYTE)
        return self._service.predict(record, predict, encoding)

    def _predict_response(
        self, requested: Any, version: int, outputs: Mapping[str, np.ndarray]
    ) -> Any:
        """The PredictResponse: serialized directly when every output can be (the float
        outputs of most models; ~10 µs less a one-value answer), else as a message."""
        wire = _predict_response_wire(requested, version, outputs, self._tensor_content)
        if wire is not None:
            return wire
        response = predict_pb2.PredictResponse()
        _echo(response.model_spec, requested, version)
        for alias, array in outputs.items():
            tensors.array_to_proto(
                array, as_content=self._tensor_content, into=response.outputs[alias]
            )
        return response

    async def Classify(self, request: Any, context: Context, record: RequestRecord) -> Any:
        response = classification_pb2.ClassificationResponse()
        return await self._examples(request, context, record, CLASSIFY_METHOD, response)

    async def Regress(self, request: Any, context: Context, record: RequestRecord) -> Any:
        response = regression_pb2.RegressionResponse()
        return await self._examples(request, context, record, REGRESS_METHOD, response)

    async def _examples(
        self, request: Any, context: Context, record: RequestRecord, method: str, response: Any
    ) -> Any:
        examples = Examples(
            _servable_request(request),
            method,
            request.model_spec.signature_name,
            request.input,
            timeout_ms=timeout_ms(context),
        )

        def encode(version: int, result: Any) -> Any:
            response.result.CopyFrom(result)
            _echo(response.model_spec, request.model_spec, version)
            return response

        encoding = Encoding(encode, costs.PROTO_ENCODE_US_PER_BYTE)
        return await self._service.classify_or_regress(record, examples, encoding)

    async def MultiInference(self, request: Any, context: Context, record: RequestRecord) -> Any:
        first = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        multi = MultiInference(
            _from_model_spec(first),
            [t.model_spec.name for t in request.tasks],
            [(t.model_spec.signature_name, t.method_name) for t in request.tasks],
            request.input,
            timeout_ms=timeout_ms(context),
        )

        def encode(version: int, results: list[Any]) -> Any:
            response = inference_pb2.MultiInferenceResponse()
            for task, result in zip(request.tasks, results, strict=True):
                entry = response.results.add()
                _echo(entry.model_spec, task.model_spec, version)
                if task.method_name == CLASSIFY_METHOD:
                    entry.classification_result.CopyFrom(result)
                else:
                    entry.regression_result.CopyFrom(result)
            return response

        encoding = Encoding(encode, costs.PROTO_ENCODE_US_PER_BYTE)
        return await self._service.multi_inference(record, multi, encoding)

    async def GetModelMetadata(self, request: Any, context: Context, record: RequestRecord) -> Any:
        spec = _servable_request(request)
        if not request.metadata_field:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid_argument(f"Metadata field {field} is not supported")
        version, signature_map = self._service.metadata(record, spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(signature_map)
        return response

    # -- ModelService -------------------------------------------------------------------------

    async def GetModelStatus(self, request: Any, context: Context, record: RequestRecord) -> Any:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        return self._service.model_status(record, spec.name, version)

    async def HandleReloadConfigRequest(
        self, request: Any, context: Context, record: RequestRecord
    ) -> Any:
        response = model_management_pb2.ReloadConfigResponse()
        try:
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported"
                )
            await self._service.reload_config(record, request.config)
        except ServingError as e:
            # TF Serving puts the failure in the response *and* fails the RPC; gRPC sends no
            # message with a failed call, so the response travels in the trailing metadata.
            response.status.error_code = int(e.code)
            response.status.error_message = e.message
            context.set_trailing_metadata(((RELOAD_RESPONSE_KEY, response.SerializeToString()),))
            raise
        return response


class _ProtoInputs:
    """A PredictRequest's ``inputs`` map, converted to arrays (no signature needed)."""

    __slots__ = ("_tensors", "cost_us")

    def __init__(self, tensors_by_alias: Any, cost_us: float) -> None:
        self._tensors = tensors_by_alias
        self.cost_us = cost_us

    def missing_signature(self, name: str) -> ServingError:
        return inference.missing_predict_signature(name)

    def decode(self, signature: Signature, budget: Budget) -> dict[str, np.ndarray]:
        # by key: a protobuf map's items() is the Mapping ABC's ItemsView, in Python (~1.5 µs)
        tensors = self._tensors
        return {alias: _array(alias, tensors[alias], budget) for alias in tensors}


def _spec_of(data: bytes) -> ServableRequest | None:
    """The ModelSpec of a serialized Predict/Classify/Regress request, read from its first
    field (field 1, which every serializer writes first) without parsing the rest; None when
    the bytes do not start that way (the full parse then reports what is wrong)."""
    field = leading_field(data, 0x0A)  # field 1, length-delimited
    if field is None:
        return None
    try:
        return _from_model_spec(model_pb2.ModelSpec.FromString(field[0]))
    except (DecodeError, ServingError):
        return None


def leading_field(data: bytes, tag: int, pos: int = 0) -> tuple[bytes, int] | None:
    """The length-delimited field whose key byte is ``tag`` (0x0A: field 1) if one starts at
    ``pos`` of a serialized message, and where it ends; None when none starts there."""
    if pos >= len(data) or data[pos] != tag:
        return None
    length, shift, pos = 0, 0, pos + 1
    while pos < len(data) and shift < 35:
        byte = data[pos]
        length |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            break
    if pos + length > len(data):
        return None
    return data[pos : pos + length], pos + length


def _servable_request(request: Any) -> ServableRequest:
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    return _from_model_spec(request.model_spec)


def _from_model_spec(spec: Any) -> ServableRequest:
    if not spec.name:
        raise invalid_argument("ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return ServableRequest.specific(spec.name, spec.version.value)
    if choice == "version_label":
        return ServableRequest.labeled(spec.name, spec.version_label)
    return ServableRequest.latest(spec.name)


def _echo(target: Any, requested: Any, version: int) -> None:
    """TF's MakeModelSpec: name as asked, signature defaulted, the version actually used."""
    target.name = requested.name
    target.signature_name = inference.signature_name(requested.signature_name)
    target.version.value = version


def _predict_response_wire(
    requested: Any, version: int, outputs: Mapping[str, np.ndarray], as_content: bool
) -> bytes | None:
    """The PredictResponse's wire bytes, field by field as ``_echo`` and ``array_to_proto``
    fill the message (outputs = 1, model_spec = 2); None when an output's tensor cannot be
    written directly (tensors.proto.tensor_wire)."""
    if version < 0:
        return None
    entries = []
    for alias, array in outputs.items():
        tensor = tensor_wire(array, as_content=as_content)
        if tensor is None:
            return None
        entry = length_delimited(1, alias.encode()) + length_delimited(2, tensor)
        entries.append(length_delimited(1, entry))
    name, signature = requested.name, inference.signature_name(requested.signature_name)
    spec = length_delimited(1, name.encode()) if name else b""
    spec += length_delimited(2, b"\x08" + varint(version) if version else b"")  # Int64Value
    spec += length_delimited(3, signature.encode())
    return b"".join(entries) + length_delimited(2, spec)


def _array(alias: str, tensor: Any, budget: Budget) -> Any:
    try:
        return tensors.array_from_proto(tensor, budget)
    except ServingError as e:
        if e.refused:  # over the request budget: say so, not "parsing error"
            raise
        raise invalid_argument(f"tensor parsing error: {alias}") from None


def timeout_ms(context: Context) -> int:
    """The client's deadline as a model-run timeout in ms (0: none); DEADLINE_EXCEEDED if past."""
    remaining = context.time_remaining()
    if remaining is None:
        return 0
    if remaining <= 0:
        raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
    return max(1, int(remaining * 1000))

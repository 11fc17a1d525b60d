"""TF Serving's gRPC API on grpc.aio: PredictionService, ModelService and health.

Each method decodes its request, calls :mod:`aserve.service`, and encodes the
answer. Every method is wrapped once, at class definition, by :func:`_guarded`,
which turns a :class:`~aserve.errors.ServingError` into the call's status
(code mapped by :func:`aserve.errors.grpc_code`, message cut at 1024
characters) and anything unexpected into INTERNAL, so no method can forget.
The same adapter counts PredictionService calls and times the successful ones
(TF Serving's ``request_count`` and ``request_latency``, entrypoint ``GRPC``).

The client's deadline bounds the model run (TF Serving's RunOptions timeout);
a client that cancels, or whose deadline passes, cancels the handler, and a
run that has not started in the worker pool yet never starts.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from aserve import inference, tensors
from aserve.errors import Code, ServingError, grpc_code, grpc_message, invalid_argument
from aserve.ids import ServableRequest
from aserve.service import Service
from aserve.signatures import CLASSIFY_METHOD, REGRESS_METHOD

log = logging.getLogger("aserve.grpc")

T = TypeVar("T")
Context: TypeAlias = Any  # grpc.aio.ServicerContext; grpcio ships no type stubs
RELOAD_RESPONSE_KEY = "tensorflow.serving.reloadconfigresponse-bin"
HEALTH_SERVICES = (
    "",
    "PredictionService",
    "ModelService",
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
)


def _guarded(cls: type[T]) -> type[T]:
    """Wrap every RPC method of ``cls`` in the one error-mapping adapter."""
    for name, method in list(vars(cls).items()):
        if inspect.iscoroutinefunction(method) and name[0].isupper():
            setattr(cls, name, _adapt(method))
    return cls


def _adapt(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    api = method.__name__
    metered = api in _METERED

    @functools.wraps(method)
    async def call(self: Any, request: Any, context: Context) -> Any:
        start = time.perf_counter()

        def record(code: Code) -> None:  # before answering: a client may scrape right after
            if metered:
                elapsed = time.perf_counter() - start
                self.metrics.record_request(_model_name(request), api, "GRPC", code, elapsed)

        try:
            response = await method(self, request, context)
        except ServingError as e:
            record(e.code)
            await context.abort(grpc_code(e.code), grpc_message(e.message))
        except grpc.aio.AbortError:  # a method that aborted on its own has answered already
            raise
        except asyncio.CancelledError:
            record(Code.CANCELLED)
            raise
        except Exception as e:
            record(Code.INTERNAL)
            log.exception("internal error in %s", api)
            await context.abort(grpc.StatusCode.INTERNAL, grpc_message(f"{type(e).__name__}: {e}"))
        record(Code.OK)
        return response

    return call


_METERED = frozenset({"Predict", "Classify", "Regress", "MultiInference"})


def _model_name(request: Any) -> str:
    if isinstance(request, inference_pb2.MultiInferenceRequest):
        return request.tasks[0].model_spec.name if request.tasks else ""
    return request.model_spec.name  # type: ignore[no-any-return]


@_guarded
class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, service: Service, *, tensor_content: bool = False) -> None:
        self._service = service
        self.metrics = service.metrics
        self._tensor_content = tensor_content

    async def Predict(self, request: Any, context: Context) -> Any:
        spec = _servable_request(request)
        with self._service.acquire(spec) as servable:
            signature = inference.predict_signature(
                servable.model.signatures, request.model_spec.signature_name
            )
            inputs = {alias: _array(alias, tensor) for alias, tensor in request.inputs.items()}
            outputs = await self._service.predict(
                servable, signature, inputs, request.output_filter, timeout_ms=_timeout_ms(context)
            )
        response = predict_pb2.PredictResponse()
        _echo(response.model_spec, request.model_spec, servable.id.version)
        for alias, array in outputs.items():
            tensors.array_to_proto(
                array, as_content=self._tensor_content, into=response.outputs[alias]
            )
        return response

    async def Classify(self, request: Any, context: Context) -> Any:
        response = classification_pb2.ClassificationResponse()
        return await self._examples(request, context, CLASSIFY_METHOD, response)

    async def Regress(self, request: Any, context: Context) -> Any:
        response = regression_pb2.RegressionResponse()
        return await self._examples(request, context, REGRESS_METHOD, response)

    async def _examples(self, request: Any, context: Context, method: str, response: Any) -> Any:
        spec = _servable_request(request)
        with self._service.acquire(spec) as servable:
            result = await self._service.classify_or_regress(
                servable,
                method,
                request.model_spec.signature_name,
                request.input,
                timeout_ms=_timeout_ms(context),
            )
        response.result.CopyFrom(result)
        _echo(response.model_spec, request.model_spec, servable.id.version)
        return response

    async def MultiInference(self, request: Any, context: Context) -> Any:
        first = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        spec = _from_model_spec(first)
        with self._service.acquire(spec) as servable:
            inference.check_multi_inference_models([t.model_spec.name for t in request.tasks])
            tasks = [(t.model_spec.signature_name, t.method_name) for t in request.tasks]
            results = await self._service.multi_inference(
                servable, tasks, request.input, timeout_ms=_timeout_ms(context)
            )
        response = inference_pb2.MultiInferenceResponse()
        for task, result in zip(request.tasks, results, strict=True):
            entry = response.results.add()
            _echo(entry.model_spec, task.model_spec, servable.id.version)
            if task.method_name == CLASSIFY_METHOD:
                entry.classification_result.CopyFrom(result)
            else:
                entry.regression_result.CopyFrom(result)
        return response

    async def GetModelMetadata(self, request: Any, context: Context) -> Any:
        spec = _servable_request(request)
        if not request.metadata_field:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid_argument(f"Metadata field {field} is not supported")
        with self._service.acquire(spec) as servable:
            signature_map = self._service.signature_def_map(servable)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.id.name
        response.model_spec.version.value = servable.id.version
        response.metadata["signature_def"].Pack(signature_map)
        return response


@_guarded
class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, service: Service) -> None:
        self._service = service

    async def GetModelStatus(self, request: Any, context: Context) -> Any:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        return self._service.model_status(spec.name, version)

    async def HandleReloadConfigRequest(self, request: Any, context: Context) -> Any:
        response = model_management_pb2.ReloadConfigResponse()
        try:
            if request.config.WhichOneof("config") != "model_config_list":
                raise invalid_argument(
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported"
                )
            await self._service.reload_config(request.config)
        except ServingError as e:
            # TF Serving puts the failure in the response *and* fails the RPC; gRPC sends no
            # message with a failed call, so the response travels in the trailing metadata.
            response.status.error_code = int(e.code)
            response.status.error_message = e.message
            context.set_trailing_metadata(((RELOAD_RESPONSE_KEY, response.SerializeToString()),))
            raise
        return response


class Health:
    """``grpc.health.v1.Health``: SERVING once every configured model has an AVAILABLE version."""

    def __init__(self) -> None:
        self.servicer = health_aio.HealthServicer()
        self._serving: bool | None = None

    async def set_serving(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in HEALTH_SERVICES:
            await self.servicer.set(name, status)


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


def _array(alias: str, tensor: Any) -> Any:
    try:
        return tensors.array_from_proto(tensor)
    except ServingError:
        raise invalid_argument(f"tensor parsing error: {alias}") from None


def _timeout_ms(context: Context) -> int:
    remaining = context.time_remaining()
    if remaining is None:
        return 0
    if remaining <= 0:
        raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
    return max(1, int(remaining * 1000))


def add_to_server(server: grpc.aio.Server, service: Service, *, tensor_content: bool) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(service, tensor_content=tensor_content), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(service), server)

"""The Open Inference Protocol (KServe V2): what its REST and its gRPC front end share.

Both front ends (:mod:`aserve.v2_rest`, :mod:`aserve.v2_grpc`) translate their wire format
into a :class:`V2Request` and make the same service calls as TF Serving's API does, on the
same registry, batchers and request pipeline:

    spec = servable_request(model_name, model_version)   # "" = the served version
    request = V2Request(id, signature_name, inputs, outputs)
    answer = await service.predict(record, request.predict(spec, timeout_ms), encoding)
    ...  # the encoding renders outputs_of(arrays) in the front end's format

The rules both follow: a version is named by its number only, and none means the served
one, the highest AVAILABLE version (as for TF Serving's API); the signature is
``serving_default`` unless the request's parameters name another (``signature_name``);
the outputs are the signature's, in alias order, unless the request lists some (then in its
order). Metadata describes the ``serving_default`` signature of the version asked for.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from aserve.errors import ServingError, invalid_argument, not_found
from aserve.ids import ServableRequest
from aserve.records import RequestRecord
from aserve.service import Predict, Service
from aserve.signatures import DEFAULT_SIGNATURE, Signature
from aserve.tensors import v2_codec
from aserve.tensors.budget import Budget

SERVER_NAME: Final = "aserve"
PLATFORM: Final = "tensorflow_savedmodel"
BINARY_EXTENSION: Final = "binary_tensor_data"
REPOSITORY_EXTENSION: Final = "model_repository"
SIGNATURE_PARAMETER: Final = "signature_name"
# TF Serving's public states in the repository index's words (Triton's)
INDEX_STATES: Final = {
    "": "UNAVAILABLE",
    "START": "LOADING",
    "LOADING": "LOADING",
    "AVAILABLE": "READY",
    "UNLOADING": "UNLOADING",
    "END": "UNAVAILABLE",
}
_MAX_INT64: Final = 2**63 - 1


def servable_request(name: str, version: str) -> ServableRequest:
    """What ``model_name`` and ``model_version`` name: a number, or "" for the served one."""
    if not name:
        raise invalid_argument("The request names no model")
    if not version:
        return ServableRequest.latest(name)
    if not (version.isascii() and version.isdigit()) or int(version) > _MAX_INT64:
        raise invalid_argument(f"Invalid model version {version!r}: V2 names versions by number")
    return ServableRequest.specific(name, int(version))


def server_version() -> str:
    try:
        return importlib.metadata.version("aserve")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a checkout
        return "unknown"


def extensions(service: Service) -> list[str]:
    return [BINARY_EXTENSION, *([REPOSITORY_EXTENSION] if service.model_management else [])]


# -- inference ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class V2Tensor:
    """One input as the wire gave it; decoded once the model's signature is known.

    ``form`` says what ``data`` is: "json" (the JSON ``data`` value), "binary" (bytes of the
    binary form) or "contents" (a gRPC ``InferTensorContents`` message).
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any
    form: str

    def decode(self, budget: Budget) -> np.ndarray:
        decode = _DECODERS[self.form]
        return decode(self.name, self.datatype, self.shape, self.data, budget)


_DECODERS: Final = {
    "json": v2_codec.array_from_json,
    "binary": v2_codec.array_from_binary,
    "contents": v2_codec.array_from_contents,
}


@dataclass(frozen=True, slots=True)
class V2Request:
    id: str
    signature_name: str  # "" = serving_default
    inputs: Sequence[V2Tensor]
    outputs: Sequence[str] = ()  # the outputs asked for, in order; () = every output
    cost_us: float = 0.0  # about what decoding the inputs costs

    def predict(self, spec: ServableRequest, timeout_ms: int) -> Predict:
        inputs = V2Inputs(self.inputs, self.cost_us)
        return Predict(spec, self.signature_name, inputs, self.outputs, timeout_ms=timeout_ms)


class V2Inputs:
    """A V2 request's inputs, checked against the signature (names, datatypes) and decoded."""

    __slots__ = ("_tensors", "cost_us")

    def __init__(self, tensors: Sequence[V2Tensor], cost_us: float) -> None:
        self._tensors = tensors
        self.cost_us = cost_us

    def missing_signature(self, name: str) -> ServingError:
        return invalid_argument(
            f"The model has no signature '{name}' (parameters.{SIGNATURE_PARAMETER})"
        )

    def decode(self, signature: Signature, budget: Budget) -> Mapping[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for tensor in self._tensors:
            spec = signature.inputs.get(tensor.name)
            if spec is None:
                raise invalid_argument(
                    f"Unexpected inference input '{tensor.name}': the signature's inputs are "
                    f"{', '.join(signature.inputs) or 'none'}"
                )
            if tensor.name in arrays:
                raise invalid_argument(f"Input '{tensor.name}' is given twice")
            expected = v2_codec.datatype_of(spec.dtype)
            if tensor.datatype != expected:
                raise invalid_argument(
                    f"Input '{tensor.name}' is {tensor.datatype}; the model expects {expected}"
                )
            arrays[tensor.name] = tensor.decode(budget)
        return arrays


@dataclass(frozen=True, slots=True)
class V2Output:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray


def outputs_of(arrays: Mapping[str, np.ndarray]) -> list[V2Output]:
    return [
        V2Output(name, v2_codec.array_datatype(array, name), list(array.shape), array)
        for name, array in arrays.items()
    ]


# -- readiness and metadata ------------------------------------------------------------------------


def model_ready(service: Service, record: RequestRecord, spec: ServableRequest) -> bool:
    available = service.available_versions(record, spec.name)
    return spec.version in available if spec.version is not None else bool(available)


def not_ready(spec: ServableRequest) -> ServingError:
    if spec.version is None:
        return not_found(f"Model {spec.name} has no AVAILABLE version")
    return not_found(f"Version {spec.version} of model {spec.name} is not AVAILABLE")


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: list[int]  # -1: unknown size; [-1] for an unknown rank


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: list[str]  # every AVAILABLE version
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


def model_metadata(service: Service, record: RequestRecord, spec: ServableRequest) -> ModelMetadata:
    """The ``serving_default`` signature of the version ``spec`` names (none: no tensors)."""
    _, signature_map = service.metadata(record, spec)
    versions = [str(v) for v in service.available_versions(record, spec.name)]
    signature = signature_map.signature_def.get(DEFAULT_SIGNATURE)
    if signature is None:
        return ModelMetadata(spec.name, versions, PLATFORM, [], [])
    return ModelMetadata(
        spec.name, versions, PLATFORM, _tensors(signature.inputs), _tensors(signature.outputs)
    )


def _tensors(infos: Any) -> list[TensorMetadata]:
    return [
        TensorMetadata(alias, v2_codec.datatype_of(infos[alias].dtype), _shape(infos[alias]))
        for alias in sorted(infos)
    ]


def _shape(info: Any) -> list[int]:
    shape = info.tensor_shape
    if shape.unknown_rank:
        return [-1]
    return [d.size for d in shape.dim]


# -- the repository extension ------------------------------------------------------------------


def load_config(parameters: Mapping[str, Any]) -> str | None:
    """The ModelConfig text of a load request's parameters ("config"), if it has one."""
    files = [key for key in parameters if key.startswith("file:")]
    if files:
        raise invalid_argument(
            f"Model files in the request ({', '.join(files)}) are not supported: aserve loads "
            "a model from the base_path of its config"
        )
    config = parameters.get("config")
    if config is not None and type(config) is not str:
        raise invalid_argument("parameters.config must be a string: a ModelConfig text proto")
    return config


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str  # "" for a model with no version
    state: str  # READY, LOADING, UNLOADING, UNAVAILABLE
    reason: str


def repository_index(
    service: Service, record: RequestRecord, *, ready_only: bool = False
) -> list[IndexEntry]:
    entries = [
        IndexEntry(
            e.name, "" if e.version is None else str(e.version), INDEX_STATES[e.state], e.reason
        )
        for e in service.repository_index(record)
    ]
    return [e for e in entries if e.state == "READY"] if ready_only else entries

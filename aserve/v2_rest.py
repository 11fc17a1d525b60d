"""The Open Inference Protocol (KServe V2) over REST, with Triton's binary tensor data and
model repository extensions, on the HTTP port of TF Serving's REST API:

    GET  /v2                                           server metadata
    GET  /v2/models/{m}[/versions/{v}]                 model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready           200 when it serves, else 404
    POST /v2/models/{m}[/versions/{v}]/infer           inference
    POST /v2/repository/index                          every model and version, with its state
    POST /v2/repository/models/{m}/load | /unload      (--enable_model_management; admin)

(``/v2/health/live`` and ``/v2/health/ready`` are :mod:`aserve.health`'s.) An inference
body is a JSON object, optionally followed by binary tensor data: then the
``Inference-Header-Content-Length`` header gives the JSON's length, each binary input
carries ``parameters.binary_data_size``, and the inputs' data follow in their order. The
answer is JSON (``application/json``), or JSON followed by the binary outputs
(``application/octet-stream``, with the same header) when ``binary_data_output`` or an
output's ``binary_data`` asks for binary. Errors are ``{"error": "<message>"}`` with the
HTTP status of TF Serving's table, rendered by :mod:`aserve.http`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote

import numpy as np
import orjson

from aserve import v2
from aserve.errors import Code, ServingError, invalid_argument
from aserve.http import HttpRequest, HttpResponse, Route
from aserve.ids import ServableRequest
from aserve.service import Encoding, Service
from aserve.tensors import costs, v2_codec

HEADER_LENGTH: Final = b"inference-header-content-length"
BINARY: Final = b"application/octet-stream"
_MODEL: Final = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer))?")
_REPOSITORY: Final = re.compile(r"/v2/repository/models/([^/]+)/(load|unload)")
_NUMPY: Final = orjson.OPT_SERIALIZE_NUMPY


class V2RestApi:
    """V2's REST routes, one instance per server."""

    def __init__(self, service: Service, *, timeout_ms: int = 30_000) -> None:
        self._service = service
        self._timeout_ms = timeout_ms  # --rest_api_timeout_in_ms; <= 0: no limit

    def routes(self) -> list[Route]:
        return [
            Route("/v2", self._server_metadata),
            Route("/v2/repository/index", self._index),
            Route("/v2/repository/models/", self._manage, prefix=True, access="admin"),
            Route("/v2/", self._model, prefix=True),
        ]

    # -- server and models ------------------------------------------------------------------

    async def _server_metadata(self, request: HttpRequest) -> HttpResponse:
        request.record.api = "server_metadata"
        _method(request, "GET")
        body = {"name": v2.SERVER_NAME, "version": v2.server_version()}
        return _json({**body, "extensions": v2.extensions(self._service)})

    async def _model(self, request: HttpRequest) -> HttpResponse:
        match = _MODEL.fullmatch(request.path)
        if match is None:
            raise ServingError(Code.NOT_FOUND, f"Not found: {request.method} {request.path}")
        name, version, action = unquote(match[1]), match[2], match[3]
        spec = v2.servable_request(name, unquote(version or ""))
        request.record.model = name
        if action == "infer":
            request.record.api = "infer"
            _method(request, "POST")
            return await self._infer(request, spec)
        _method(request, "GET")
        if action == "ready":
            request.record.api = "model_ready"
            if not v2.model_ready(self._service, request.record, spec):
                raise v2.not_ready(spec)
            return _json({"name": name, "ready": True})
        request.record.api = "model_metadata"
        return _json(_metadata_json(v2.model_metadata(self._service, request.record, spec)))

    # -- inference --------------------------------------------------------------------------

    async def _infer(self, request: HttpRequest, spec: ServableRequest) -> HttpResponse:
        service = self._service
        request.admit(spec)  # an overloaded model: refused unread
        body = await request.body()
        header = request.header(HEADER_LENGTH)
        split = _header_length(header, len(body))
        cost = split * costs.JSON_DECODE_US_PER_BYTE
        doc = await service.transcode(cost / 2, _parse, memoryview(body)[:split])
        parsed = _InferBody(doc, memoryview(body)[split:], bool(header))
        infer = v2.V2Request(
            parsed.id,
            parsed.signature_name,
            parsed.inputs,
            parsed.outputs,
            cost / 2 + (len(body) - split) * costs.V2_BINARY_US_PER_BYTE,
        )
        del doc, body
        encode = functools.partial(_encode, spec.name, parsed.id, parsed.binary)
        encoding = Encoding(encode, costs.V2_JSON_ENCODE_US_PER_BYTE)
        content, json_length = await service.predict(
            request.record, infer.predict(spec, self._timeout_ms), encoding
        )
        if json_length is None:
            return HttpResponse(content)
        length = str(json_length).encode()
        return HttpResponse(content, content_type=BINARY, headers=[(HEADER_LENGTH, length)])

    # -- the repository extension --------------------------------------------------------------

    async def _index(self, request: HttpRequest) -> HttpResponse:
        request.record.api = "repository_index"
        _method(request, "POST")
        ready = _object(await _optional_json(request), "the request").get("ready", False)
        if type(ready) is not bool:
            raise invalid_argument("'ready' must be true or false")
        entries = v2.repository_index(self._service, request.record, ready_only=ready)
        return _json([_index_json(e) for e in entries])

    async def _manage(self, request: HttpRequest) -> HttpResponse:
        match = _REPOSITORY.fullmatch(request.path)
        if match is None:
            raise ServingError(Code.NOT_FOUND, f"Not found: {request.method} {request.path}")
        name, action = unquote(match[1]), match[2]
        request.record.api, request.record.model = f"repository_{action}", name
        _method(request, "POST")
        parameters = _parameters(_object(await _optional_json(request), "the request"))
        if action == "unload":
            await self._service.unload_model(request.record, name)
        else:
            await self._service.load_model(request.record, name, v2.load_config(parameters))
        return HttpResponse(b"", content_type=b"")


class _InferBody:
    """An inference request's JSON header, with the binary data that follows it."""

    __slots__ = ("id", "signature_name", "inputs", "outputs", "binary")

    def __init__(self, doc: Any, binary: memoryview, has_header: bool) -> None:
        doc = _object(doc, "the request")
        parameters = _parameters(doc)
        self.id = _string(doc.get("id", ""), "'id'")
        self.signature_name = _string(parameters.get(v2.SIGNATURE_PARAMETER, ""), "signature")
        self.inputs = _inputs(doc.get("inputs"), binary, has_header)
        requested = _list(doc.get("outputs", []), "'outputs'")
        default = _flag(parameters, "binary_data_output")
        self.binary: dict[str, bool] = {}
        for entry in requested:
            entry = _object(entry, "an output")
            name = _string(entry.get("name"), "an output's 'name'")
            output_parameters = _parameters(entry)
            if "classification" in output_parameters:
                raise invalid_argument("The classification extension is not supported")
            self.binary[name] = _flag(output_parameters, "binary_data", default)
        self.outputs = tuple(self.binary)
        self.binary.setdefault("", default)  # every output, when none is listed


def _inputs(value: Any, binary: memoryview, has_header: bool) -> list[v2.V2Tensor]:
    tensors, offset = [], 0
    for entry in _list(value, "'inputs'"):
        entry = _object(entry, "an input")
        name = _string(entry.get("name"), "an input's 'name'")
        datatype = v2_codec.check_datatype(entry.get("datatype"), name)
        shape = v2_codec.check_shape(entry.get("shape"), name)
        size = _parameters(entry).get("binary_data_size")
        if size is None:
            if "data" not in entry:
                raise invalid_argument(f"Input '{name}' has neither 'data' nor binary data")
            tensors.append(v2.V2Tensor(name, datatype, shape, entry["data"], "json"))
            continue
        if not has_header:
            raise invalid_argument(
                f"Input '{name}' has binary data (binary_data_size), but the request has no "
                "Inference-Header-Content-Length header"
            )
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise invalid_argument(
                f"Input '{name}': binary_data_size {size!r} does not fit the {len(binary)} "
                "bytes of binary data after the JSON"
            )
        data = binary[offset : offset + size]
        tensors.append(v2.V2Tensor(name, datatype, shape, data, "binary"))
        offset += size
    if offset != len(binary):
        raise invalid_argument(
            f"The inputs' binary_data_size add up to {offset} bytes, but {len(binary)} bytes "
            "of binary data follow the JSON"
        )
    return tensors


def _encode(
    model: str,
    request_id: str,
    binary: Mapping[str, bool],
    version: int,
    arrays: Mapping[str, np.ndarray],
) -> tuple[bytes, int | None]:
    """(body, JSON length when binary outputs follow it, else None)."""
    outputs, chunks = [], []
    for output in v2.outputs_of(arrays):
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        if binary.get(output.name, binary[""]):
            data = v2_codec.array_to_binary(output.array)
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = v2_codec.json_data(output.array, output.name)
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": str(version)}
    if request_id:
        doc["id"] = request_id
    doc["outputs"] = outputs
    header = orjson.dumps(doc, option=_NUMPY)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


# -- JSON helpers ----------------------------------------------------------------------------


def _json(value: Any) -> HttpResponse:
    return HttpResponse(orjson.dumps(value))


def _metadata_json(metadata: v2.ModelMetadata) -> dict[str, Any]:
    def tensors(items: list[v2.TensorMetadata]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in items]

    return {
        "name": metadata.name,
        "versions": metadata.versions,
        "platform": metadata.platform,
        "inputs": tensors(metadata.inputs),
        "outputs": tensors(metadata.outputs),
    }


def _index_json(entry: v2.IndexEntry) -> dict[str, str]:
    out = {"name": entry.name}
    if entry.version:
        out["version"] = entry.version
    out["state"] = entry.state
    if entry.reason:
        out["reason"] = entry.reason
    return out


def _method(request: HttpRequest, method: str) -> None:
    if request.method != method:
        raise ServingError(
            Code.UNIMPLEMENTED,
            f"Method {request.method} not allowed on {request.path}: use {method}",
            http=405,
        )


def _header_length(value: bytes, body_length: int) -> int:
    """Where the JSON ends: Inference-Header-Content-Length, or the whole body without it."""
    if not value:
        return body_length
    if not value.isdigit() or int(value) > body_length:
        raise invalid_argument(
            f"Inference-Header-Content-Length {value.decode('latin-1')!r} is not a length "
            f"within the body of {body_length} bytes"
        )
    return int(value)


def _parse(text: bytes | memoryview) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise invalid_argument(f"Failed to parse the request's JSON: {e}") from None


async def _optional_json(request: HttpRequest) -> Any:
    body = await request.body()
    return _parse(body) if body.strip() else {}


def _object(value: Any, what: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise invalid_argument(f"JSON of {what} must be an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if type(value) is not list:
        raise invalid_argument(f"{what} must be a list")
    return value


def _string(value: Any, what: str) -> str:
    if type(value) is not str:
        raise invalid_argument(f"{what} must be a string")
    return value


def _parameters(doc: Mapping[str, Any]) -> dict[str, Any]:
    return _object(doc.get("parameters", {}), "'parameters'")


def _flag(parameters: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = parameters.get(name, default)
    if type(value) is not bool:
        raise invalid_argument(f"parameters.{name} must be true or false")
    return value

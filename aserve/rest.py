"""TF Serving's REST API (``/v1``): URL shapes and JSON bodies, translated for the service.

Routing follows TF Serving's own regular expressions (``http_rest_api_util.cc``),
matched on the still-percent-encoded path, so the same URLs (and the same
"Malformed request" answers) work. Every ``/v1`` answer is JSON; errors are
``{"error": "<message>"}`` (rendered by :mod:`aserve.http`). Each handler decodes its
body into a neutral request, makes one service call, and encodes the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

import numpy as np
from google.protobuf import json_format

from aserve import tensors
from aserve.errors import ServingError, invalid_argument
from aserve.http import HttpRequest, HttpResponse, Route
from aserve.ids import ServableRequest
from aserve.service import Encoding, Examples, Predict, Service
from aserve.signatures import CLASSIFY_METHOD, REGRESS_METHOD, Signature
from aserve.tensors import costs
from aserve.tensors.budget import Budget

_PREDICT: Final = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS: Final = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_VERBS: Final = frozenset({"predict", "classify", "regress"})
_MAX_INT64: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class _Route:
    """A parsed ``/v1`` request: the servable it names and what to do with it."""

    spec: ServableRequest
    action: str  # predict | classify | regress (POST); status | metadata (GET)


class RestApi:
    """TF Serving's ``/v1`` API, one instance per server."""

    def __init__(self, service: Service, *, timeout_ms: int = 30_000) -> None:
        self._service = service
        self._timeout_ms = timeout_ms  # --rest_api_timeout_in_ms; <= 0: no limit

    def routes(self) -> list[Route]:
        return [Route("/v1/", self.handle, prefix=True)]

    def handle(self, request: HttpRequest) -> Awaitable[HttpResponse]:
        """The action's coroutine (handed back, not awaited: one frame less to resume)."""
        route = _route(request.method, request.path)
        record = request.record
        record.api, record.model = route.action, route.spec.name
        if route.action == "predict":
            return self._predict(request, route.spec)
        if route.action == "status":
            return _answered(self._status(request, route.spec))
        if route.action == "metadata":
            return self._metadata(request, route.spec)
        return self._classify_or_regress(request, route)

    async def _predict(self, request: HttpRequest, spec: ServableRequest) -> HttpResponse:
        request.admit(spec)  # an overloaded model: refused unread
        body = await request.body()
        cost = len(body) * costs.JSON_DECODE_US_PER_BYTE
        doc = await self._service.transcode(cost / 2, tensors.parse_json, body)  # half parsing
        inputs = _JsonInputs(doc, cost / 2)  # ... and half conversion to arrays
        name = tensors.signature_name_from_json(doc)
        del doc, body  # else the parsed lists live through the wait and every GC rescans them
        predict = Predict(spec, name, inputs, timeout_ms=self._timeout_ms)
        encoding = Encoding(inputs.encode, costs.JSON_ENCODE_US_PER_BYTE)
        return HttpResponse(await self._service.predict(request.record, predict, encoding))

    async def _classify_or_regress(self, request: HttpRequest, route: _Route) -> HttpResponse:
        request.admit(route.spec)
        body = await request.body()
        cost = len(body) * costs.JSON_DECODE_US_PER_BYTE
        name, input = await self._service.transcode(cost, _examples, body)
        del body
        classify = route.action == "classify"
        examples = Examples(
            route.spec,
            CLASSIFY_METHOD if classify else REGRESS_METHOD,
            name,
            input,
            timeout_ms=self._timeout_ms,
        )
        encode = _classification_json if classify else _regression_json
        encoding = Encoding(encode, costs.JSON_ENCODE_US_PER_BYTE)
        answer: bytes = await self._service.classify_or_regress(request.record, examples, encoding)
        return HttpResponse(answer)

    def _status(self, request: HttpRequest, spec: ServableRequest) -> bytes:
        # TF Serving answers a status request for a label with every version (label ignored).
        response = self._service.model_status(request.record, spec.name, spec.version)
        return _proto_json(response).encode()

    async def _metadata(self, request: HttpRequest, spec: ServableRequest) -> HttpResponse:
        version, signature_map = self._service.metadata(request.record, spec)
        model_spec = {"name": spec.name, "signature_name": "", "version": str(version)}
        cost = signature_map.ByteSize() * costs.PROTO_JSON_US_PER_BYTE
        signature_json = await self._service.transcode(cost, _proto_json, signature_map)
        return HttpResponse(
            (
                '{\n"model_spec": '
                + json.dumps(model_spec, indent=1)
                + ',\n"metadata": {"signature_def": '
                + signature_json
                + "}\n}\n"
            ).encode()
        )


async def _answered(body: bytes) -> HttpResponse:
    return HttpResponse(body)


class _JsonInputs:
    """A ``:predict`` body's tensors, converted once the signature (and its dtypes) is known."""

    __slots__ = ("_doc", "cost_us", "_row_format")

    def __init__(self, doc: dict[str, Any], cost_us: float) -> None:
        self._doc: dict[str, Any] | None = doc
        self.cost_us = cost_us
        self._row_format = False

    def missing_signature(self, name: str) -> ServingError:
        return invalid_argument(f'Serving signature name: "{name}" not found in signature def')

    def decode(self, signature: Signature, budget: Budget) -> Mapping[str, np.ndarray]:
        doc, self._doc = self._doc, None  # decoded once; the document is not kept
        assert doc is not None
        inputs, self._row_format = tensors.predict_inputs_from_json(doc, signature.inputs)
        for array in inputs.values():  # the body limit bounds the document; this the arrays
            budget.take(array.size, array.nbytes)
        return inputs

    def encode(self, version: int, outputs: Mapping[str, np.ndarray]) -> bytes:
        return tensors.predict_outputs_to_json(outputs, self._row_format)


def _examples(body: bytes) -> tuple[str, Any]:
    """A ``:classify`` / ``:regress`` body -> (signature name, tensorflow.serving.Input)."""
    doc = tensors.parse_json(body)
    return tensors.signature_name_from_json(doc), tensors.input_from_json(doc)


def _classification_json(version: int, result: Any) -> bytes:
    return tensors.classification_result_to_json(result)


def _regression_json(version: int, result: Any) -> bytes:
    return tensors.regression_result_to_json(result)


_ROUTES: dict[tuple[str, str], _Route] = {}  # parsed paths: clients repeat a handful
_ROUTES_KEPT: Final = 1024


def _route(method: str, path: str) -> _Route:
    key = (method, path)
    route = _ROUTES.get(key)
    if route is None:
        route = _parse_route(method, path)
        if len(_ROUTES) >= _ROUTES_KEPT:
            _ROUTES.clear()
        _ROUTES[key] = route
    return route


def _parse_route(method: str, path: str) -> _Route:
    if method == "POST" and (match := _PREDICT.fullmatch(path)):
        name, version, label, verb = match.groups()
        spec = _servable_request(name, version, label)
        if verb in _VERBS:  # the pattern ignores case, the verb check does not (as in TF)
            return _Route(spec, verb)
    if method == "GET" and (match := _STATUS.fullmatch(path)):
        name, version, label, subresource = match.groups()
        if not name:
            raise invalid_argument("Missing model name in request.")
        action = "metadata" if subresource else "status"
        return _Route(_servable_request(name, version, label), action)
    raise invalid_argument(f"Malformed request: {method} {path}")


def _servable_request(name: str, version: str | None, label: str | None) -> ServableRequest:
    name = unquote(name)
    if version is not None:
        number = int(version)
        if number > _MAX_INT64:
            raise invalid_argument(f"Failed to convert version: {version} to numeric.")
        return ServableRequest.specific(name, number)
    if label is not None:
        return ServableRequest.labeled(name, unquote(label))
    return ServableRequest.latest(name)


def _proto_json(message: Any) -> str:
    return str(
        json_format.MessageToJson(
            message,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            indent=1,
        )
    )

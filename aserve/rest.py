"""TF Serving's REST API on Starlette and uvicorn: URL shapes, JSON bodies, error format.

Routing follows TF Serving's own regular expressions (``http_rest_api_util.cc``),
matched on the still-percent-encoded path, so the same URLs (and the same
"Malformed request" answers) work. Every ``/v1`` answer is JSON; errors are
``{"error": "<message>"}`` with the HTTP status of :func:`aserve.errors.http_status`.
Every request that names a model is counted, and the successful predict, classify
and regress calls timed (TF Serving's ``request_count`` and ``request_latency``,
entrypoint ``REST``). With Prometheus enabled, ``GET <path>`` answers the metrics page.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import math
import re
import socket
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aserve import tensors
from aserve.errors import Code, ServingError, http_status, invalid_argument
from aserve.ids import ServableRequest
from aserve.inference import signature_name
from aserve.service import Service
from aserve.signatures import CLASSIFY_METHOD, REGRESS_METHOD

log = logging.getLogger("aserve.rest")

_PREDICT = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_ORIGIN = re.compile(r"https?://.*")
_MAX_INT64 = 2**63 - 1
_GZIP_LIMIT = 100 * 1024 * 1024
_JSON = b"application/json"
_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}
_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


@dataclass(frozen=True, slots=True)
class RestOptions:
    timeout_ms: int = 30_000  # --rest_api_timeout_in_ms; <= 0: no limit
    max_body_bytes: int = 64 * 1024 * 1024
    cors: bool = False
    metrics_path: str | None = None  # the Prometheus page, if enabled


class _TooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Route:
    """A parsed ``/v1`` request: the servable it names and what to do with it."""

    spec: ServableRequest
    action: str  # predict | classify | regress (POST); status | metadata (GET)


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class RestApi:
    """The ``/v1`` endpoint, one instance per server.

    A plain ASGI app behind Starlette's router: the hot path builds no Request or Response
    objects (measured on uvicorn, a trivial endpoint: 16,700 requests/s through Starlette's
    request/response layer, 26,500 as plain ASGI, i.e. ~22 µs a request).
    """

    def __init__(self, service: Service, options: RestOptions) -> None:
        self._service = service
        self._options = options
        self._cors = [(k.lower().encode(), v.encode()) for k, v in _CORS_HEADERS.items()]
        if not options.cors:
            self._cors = []

    def routes(self) -> list[Route]:
        routes = [Route("/v1/{path:path}", self, methods=_METHODS)]
        if self._options.metrics_path:
            routes.append(Route(self._options.metrics_path, self._metrics_page, methods=["GET"]))
        return routes

    async def _metrics_page(self, request: Request) -> PlainTextResponse:
        return PlainTextResponse(self._service.metrics.render())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS":
            await self._send(send, self._preflight(scope), b"", json=False)
            return
        status, body = await self._answer(scope, receive)
        await self._send(send, status, body)

    async def _answer(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        start = time.perf_counter()
        route = None
        code = Code.OK
        try:
            route = _route(scope)
            return 200, await self._handle(route, scope, receive)
        except ServingError as e:
            code = e.code
            return http_status(e.code), tensors.error_json(e.message)
        except asyncio.CancelledError:  # the client went away
            code = Code.CANCELLED
            raise
        except _TooLarge:
            code = Code.RESOURCE_EXHAUSTED
            limit = self._options.max_body_bytes
            message = f"Request body exceeds the limit of {limit} bytes (--rest_api_max_body_bytes)"
            return 413, tensors.error_json(message)
        except Exception as e:  # never let one request take anything else down
            code = Code.INTERNAL
            log.exception("internal error serving %s %s", scope["method"], scope["path"])
            return 500, tensors.error_json(f"Internal error: {type(e).__name__}: {e}")
        finally:
            if route is not None:
                self._service.metrics.record_request(
                    route.spec.name,
                    route.action if route.action in _TIMED else "",
                    "REST",
                    code,
                    time.perf_counter() - start,
                )

    async def _send(self, send: Send, status: int, body: bytes, *, json: bool = True) -> None:
        headers = [(b"content-length", str(len(body)).encode()), *self._cors]
        if json:
            headers.append((b"content-type", _JSON))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _preflight(self, scope: Scope) -> int:
        origin = _header(scope, b"origin").decode("latin-1")
        return 200 if _ORIGIN.fullmatch(origin) else 400

    async def _handle(self, route: _Route, scope: Scope, receive: Receive) -> bytes:
        spec, action = route.spec, route.action
        if action == "status":
            return self._status(spec)
        if action == "metadata":
            return self._metadata(spec)
        body = await self._body(scope, receive)
        if action == "predict":
            return await self._predict(spec, body)
        return await self._classify_or_regress(spec, body, action)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self._options.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            raise _TooLarge
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if _header(scope, b"content-encoding").lower() == b"gzip":
            body = _gunzip(body)
        return body

    async def _predict(self, spec: ServableRequest, body: bytes) -> bytes:
        doc = tensors.parse_json(body)
        name = signature_name(tensors.signature_name_from_json(doc))
        with self._service.acquire(spec) as servable:
            signature = servable.model.signatures.get(name)
            if signature is None:
                raise invalid_argument(
                    f'Serving signature name: "{name}" not found in signature def'
                )
            if not signature.inputs:
                raise invalid_argument(f"Failed to get input map for signature: {name}")
            inputs, row_format = tensors.predict_inputs_from_json(doc, signature.inputs)
            del doc  # else its lists live through the wait and every GC pass rescans them
            outputs = await self._service.predict(
                servable, signature, inputs, timeout_ms=self._options.timeout_ms
            )
        return tensors.predict_outputs_to_json(outputs, row_format)

    async def _classify_or_regress(self, spec: ServableRequest, body: bytes, verb: str) -> bytes:
        doc = tensors.parse_json(body)
        name = tensors.signature_name_from_json(doc)
        input = tensors.input_from_json(doc)
        del doc  # nothing below needs it, and it must not live through the wait
        timeout = self._options.timeout_ms
        with self._service.acquire(spec) as servable:
            method = CLASSIFY_METHOD if verb == "classify" else REGRESS_METHOD
            result = await self._service.classify_or_regress(
                servable, method, name, input, timeout_ms=timeout
            )
        if verb == "classify":
            return tensors.classification_result_to_json(result)
        return tensors.regression_result_to_json(result)

    def _status(self, spec: ServableRequest) -> bytes:
        # TF Serving answers a status request for a label with every version (label ignored).
        response = self._service.model_status(spec.name, spec.version)
        return _proto_json(response).encode()

    def _metadata(self, spec: ServableRequest) -> bytes:
        with self._service.acquire(spec) as servable:
            model_spec = {
                "name": spec.name,
                "signature_name": "",
                "version": str(servable.id.version),
            }
            signature_map = _proto_json(self._service.signature_def_map(servable))
        return (
            '{\n"model_spec": '
            + _dumps(model_spec)
            + ',\n"metadata": {"signature_def": '
            + signature_map
            + "}\n}\n"
        ).encode()


class RestServer:
    """The REST listener: the Starlette app on uvicorn (httptools parser) on the running loop.

    uvicorn rather than the design card's hypercorn, because of a measurement: on these 2-core
    machines a trivial Starlette endpoint answers ~4,500 requests/s on hypercorn and ~16,700 on
    uvicorn with httptools (wrk, 32 connections), and HTTP parsing was the largest cost per request.
    """

    def __init__(self, app: Starlette, sock: socket.socket, *, grace_seconds: float) -> None:
        config = uvicorn.Config(
            app,
            http="httptools",
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=math.ceil(grace_seconds),  # uvicorn takes whole seconds
            timeout_keep_alive=75,
        )
        self._server = _Uvicorn(config)
        self._socket = sock
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raises what stopped it

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: aserve owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def create_app(
    service: Service, options: RestOptions, extra_routes: list[Route] | None = None
) -> Starlette:
    api = RestApi(service, options)
    return Starlette(routes=[*api.routes(), *(extra_routes or [])])


_TIMED = frozenset({"predict", "classify", "regress"})


def _route(scope: Scope) -> _Route:
    method = scope["method"]
    path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
    if method == "POST" and (match := _PREDICT.fullmatch(path)):
        name, version, label, verb = match.groups()
        spec = _servable_request(name, version, label)
        if verb in _TIMED:  # the pattern ignores case, the verb check does not (as in TF)
            return _Route(spec, verb)
    if method == "GET" and (match := _STATUS.fullmatch(path)):
        name, version, label, subresource = match.groups()
        if not name:
            raise invalid_argument("Missing model name in request.")
        action = "metadata" if subresource else "status"
        return _Route(_servable_request(name, version, label), action)
    raise invalid_argument(f"Malformed request: {method} {path}")


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return b""


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


def _gunzip(body: bytes) -> bytes:
    try:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        data = decompressor.decompress(body, _GZIP_LIMIT)
    except (zlib.error, gzip.BadGzipFile) as e:
        raise invalid_argument(f"Failed to decompress gzip request body: {e}") from None
    if decompressor.unconsumed_tail:
        raise ServingError(Code.INVALID_ARGUMENT, "Decompressed request body exceeds 100 MB")
    return data


def _proto_json(message: Any) -> str:
    return str(
        json_format.MessageToJson(
            message,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            indent=1,
        )
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=1)

"""The gRPC front end: one grpc.aio server serving the methods of every gRPC protocol.

Protocol modules describe their RPCs as :class:`Method` records (full name, request type,
handler); this module registers them all through one adapter, which for every call:

* opens the call's record (``x-request-id`` metadata or a new id, the peer, bytes in);
* parses the request itself (the server hands it raw bytes; a large message is parsed in a
  codec thread, and one that does not parse is INVALID_ARGUMENT, not UNKNOWN);
* awaits the handler, serializes the response itself (so the record knows bytes out);
* turns a :class:`~aserve.errors.ServingError` into the call's status (code mapped by
  :func:`grpc_code`, message cut at 1024 characters as TF Serving cuts them) and anything else
  into INTERNAL, so no method can forget;
* hands the finished record to the service's observers, before answering.

A method nobody registered is answered UNIMPLEMENTED through the same adapter, so unknown
calls are recorded too. The client's deadline is the handler's to read
(``context.time_remaining()``); a call whose client cancels or whose deadline passes is
cancelled, and its record says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from aserve.errors import Code, ServingError, invalid_argument
from aserve.ids import ServableRequest
from aserve.records import RequestRecord
from aserve.service import Service
from aserve.tensors import costs

GRPC_MESSAGE_LIMIT: Final = 1024
Context: TypeAlias = Any  # grpc.aio.ServicerContext; grpcio ships no type stubs
UnaryHandler = Callable[[Any, Context, RequestRecord], Awaitable[Any]]
StreamHandler = Callable[[Any, Context, RequestRecord], AsyncIterator[Any]]


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC: ``/package.Service/Name``, its request message type, and its handler.

    A unary handler returns the response message; a server-streaming one (``stream``) is
    an async generator of response messages.
    """

    service: str  # "tensorflow.serving.PredictionService"
    name: str  # "Predict"; also the record's ``api``
    request_type: Any
    handler: UnaryHandler | StreamHandler
    stream: bool = False
    access: str = "predict"  # who may call it: aserve.auth.ACCESS_LEVELS
    # the servable a request names, read from its raw bytes without parsing the message, so
    # an overloaded model refuses it before anything is parsed or decoded (None: no check)
    admission: Callable[[bytes], ServableRequest | None] | None = None


Address = tuple[str, Any]  # ("host:port" or "unix:path", grpc.ServerCredentials or None)


class GrpcFrontEnd:
    """The gRPC listener: a grpc.aio server listening on its addresses from :meth:`start`.

    grpc listens as soon as a port is added, so ports are added only when starting: before
    that, connections are refused, not queued.
    """

    def __init__(
        self,
        service: Service,
        methods: Sequence[Method],
        *,
        addresses: Sequence[Address],
        options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        self._service = service
        self._server = grpc.aio.server(options=list(options))
        self._server.add_generic_rpc_handlers(
            (*self._handlers(methods), _Unimplemented(self._unary(_UNKNOWN)))
        )
        self._addresses = list(addresses)
        self.port = 0
        self.endpoint = ", ".join(f"gRPC on {address}" for address, _ in addresses)

    async def start(self) -> None:
        """Listen on every address (OSError if one cannot be bound), then serve."""
        endpoints = []
        for address, credentials in self._addresses:
            try:
                if credentials is None:
                    port = self._server.add_insecure_port(address)
                else:
                    port = self._server.add_secure_port(address, credentials)
            except RuntimeError as e:
                raise OSError(f"cannot listen on {address}: {e}") from None
            if not address.startswith("unix:"):
                if port == 0:
                    raise OSError(f"cannot listen on {address}")
                self.port, address = port, f"{address.rpartition(':')[0]}:{port}"
            endpoints.append(f"gRPC on {address}")
        self.endpoint = ", ".join(endpoints)
        await self._server.start()

    async def stop(self, deadline: float) -> None:
        """Refuse new calls (GOAWAY); let calls in flight finish until ``deadline``."""
        remaining = deadline - asyncio.get_running_loop().time()
        await self._server.stop(max(remaining, 0.0))

    def _handlers(self, methods: Sequence[Method]) -> list[grpc.GenericRpcHandler]:
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for method in methods:
            handler = self._stream(method) if method.stream else self._unary(method)
            by_service.setdefault(method.service, {})[method.name] = handler
        return [grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items()]

    def _unary(self, method: Method) -> grpc.RpcMethodHandler:
        service, handler, api = self._service, method.handler, method.name
        parse = method.request_type.FromString

        access, admission = method.access, method.admission

        async def call(data: bytes, context: Context) -> bytes:
            record, authorization = _begin(service, context, api, data)
            try:
                service.authorize(record, access, authorization)
                if admission is not None and (named := admission(data)) is not None:
                    service.admit(record, named)
                cost = len(data) * costs.PROTO_DECODE_US_PER_BYTE / 2  # half parsing
                request = await service.transcode(cost, _parse, parse, data)
                response = await handler(request, context, record)  # type: ignore[misc]
                answer: bytes = response.SerializeToString()
            except BaseException as e:
                await _fail(service, record, context, e)
                raise AssertionError("unreachable") from None
            record.bytes_out = len(answer)
            service.finish(record)  # before answering: a client may read the metrics right after
            return answer

        return grpc.unary_unary_rpc_method_handler(call)

    def _stream(self, method: Method) -> grpc.RpcMethodHandler:
        service, handler, api = self._service, method.handler, method.name
        parse = method.request_type.FromString

        access = method.access

        async def call(data: bytes, context: Context) -> AsyncIterator[bytes]:
            record, authorization = _begin(service, context, api, data, tracked=False)
            try:
                service.authorize(record, access, authorization)
                request = _parse(parse, data)
                async for response in handler(request, context, record):  # type: ignore[union-attr]
                    answer = response.SerializeToString()
                    record.bytes_out += len(answer)
                    yield answer
            except BaseException as e:
                await _fail(service, record, context, e)
            service.finish(record)

        return grpc.unary_stream_rpc_method_handler(call)


def _begin(
    service: Service, context: Context, api: str, data: bytes, *, tracked: bool = True
) -> tuple[RequestRecord, bytes]:
    """The call's record, and the value of its ``authorization`` metadata (b"" if none)."""
    request_id, authorization = "", b""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            request_id = value
        elif key == "authorization":
            authorization = value.encode("latin-1", "replace")
    record = service.begin(
        "grpc", request_id=request_id, peer=context.peer(), bytes_in=len(data), tracked=tracked
    )
    record.api = api
    return record, authorization


async def _fail(
    service: Service, record: RequestRecord, context: Context, error: BaseException
) -> None:
    """Record the failure and answer it: abort with its status, or re-raise a cancellation."""
    serving = service.failed(record, error)
    if serving.code is Code.CANCELLED:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            record.code = Code.DEADLINE_EXCEEDED
        service.finish(record)
        raise error
    service.finish(record)
    await context.abort(grpc_code(serving.code), grpc_message(serving.message))


def grpc_code(code: Code) -> grpc.StatusCode:
    """The gRPC status of a canonical code: the same code (absl and gRPC share them)."""
    return grpc.StatusCode[code.name]


def grpc_message(message: str) -> str:
    """TF Serving cuts gRPC error messages at 1024 characters (grpc_status_util.cc)."""
    if len(message) <= GRPC_MESSAGE_LIMIT:
        return message
    return message[:GRPC_MESSAGE_LIMIT] + "...TRUNCATED"


def _parse(parse: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        return parse(data)
    except DecodeError as e:
        raise invalid_argument(f"Failed to parse the request message: {e}") from None


async def _unknown(request: bytes, context: Context, record: RequestRecord) -> Any:
    raise ServingError(Code.UNIMPLEMENTED, "Method not found!")


class _Raw:
    """Any bytes, as they are: the request type of methods nobody registered."""

    FromString = staticmethod(bytes)


_UNKNOWN = Method("", "", _Raw, _unknown)


class _Unimplemented(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The last handler: answers every method the others do not know, through the adapter."""

    def __init__(self, handler: grpc.RpcMethodHandler) -> None:
        self._handler = handler

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        return self._handler

"""The gRPC front end: the methods of every gRPC protocol, on one of two servers.

Protocol modules describe their RPCs as :class:`Method` records (full name, request type,
handler). :class:`Calls` is what every call goes through, whichever server carries it:

* opens the call's record (``x-request-id`` metadata or a new id, the peer, bytes in);
* authorizes it, and refuses it before parsing when the model it names is overloaded;
* parses the request itself (the server hands it raw bytes; a large message is parsed in a
  codec thread, and one that does not parse is INVALID_ARGUMENT, not UNKNOWN);
* awaits the handler, serializes the response itself (so the record knows bytes out);
* turns a :class:`~aserve.errors.ServingError` into the call's status (code mapped by
  :func:`grpc_code`, message cut at 1024 characters as TF Serving cuts them) and anything else
  into INTERNAL, so no method can forget;
* hands the finished record to the service's observers, before answering.

The servers only carry bytes: grpc.aio here (:class:`GrpcFrontEnd`, ``--grpc_server=grpcio``)
or pygrpc-native's Rust HTTP/2 server (:mod:`aserve.grpc_native`, the default). A handler
sees its call as a :class:`CallContext` on both. A method nobody registered is answered
UNIMPLEMENTED through the same path, so unknown calls are recorded too. The client's
deadline is the handler's to read (``call.time_remaining()``); a call whose client cancels or
whose deadline passes is cancelled, and its record says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from aserve.errors import Code, ServingError, invalid_argument
from aserve.ids import ServableRequest
from aserve.records import RequestRecord
from aserve.service import ADMIT_BEFORE_DECODING_BYTES, Service
from aserve.tensors import costs

GRPC_MESSAGE_LIMIT: Final = 1024
Metadata: TypeAlias = Sequence[tuple[str, str | bytes]]


class CallContext:
    """What a handler knows of its call, on either server."""

    __slots__ = ("peer", "metadata", "deadline", "trailing_metadata")

    def __init__(self, peer: str, metadata: Metadata, time_remaining: float | None) -> None:
        self.peer = peer
        self.metadata = metadata
        self.deadline = None if time_remaining is None else time.monotonic() + time_remaining
        self.trailing_metadata: Metadata = ()

    def time_remaining(self) -> float | None:
        """Seconds until the client's deadline; None if it set none."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def set_trailing_metadata(self, metadata: Metadata) -> None:
        """Sent with the call's status, whether it succeeds or fails."""
        self.trailing_metadata = metadata


Context: TypeAlias = CallContext
UnaryHandler = Callable[[Any, CallContext, RequestRecord], Awaitable[Any]]
StreamHandler = Callable[[Any, CallContext, RequestRecord], AsyncIterator[Any]]


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


class GrpcFailure(Exception):
    """How a call ends when it does not succeed: its status, message and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, message: str, trailing: Metadata = ()) -> None:
        super().__init__(message)
        self.code, self.message, self.trailing = code, message, trailing


class Calls:
    """What every call goes through, on either server (the module's docstring)."""

    def __init__(self, service: Service) -> None:
        self._service = service

    async def unary(self, method: Method, data: bytes, call: CallContext) -> bytes:
        """The serialized response; GrpcFailure, or CancelledError if the client left."""
        service = self._service
        record, authorization = self._begin(method, call, data, tracked=True)
        try:
            service.authorize(record, method.access, authorization)
            if (
                len(data) > ADMIT_BEFORE_DECODING_BYTES
                and method.admission is not None
                and (named := method.admission(data)) is not None
            ):
                service.admit(record, named)  # refused, if it is, before parsing
            cost = len(data) * costs.PROTO_DECODE_US_PER_BYTE / 2  # half parsing
            request = await service.transcode(cost, _parse, method.request_type.FromString, data)
            response = await method.handler(request, call, record)  # type: ignore[misc]
            answer: bytes = response.SerializeToString()
        except BaseException as e:
            raise self._failure(record, call, e) from None
        record.bytes_out = len(answer)
        service.finish(record)  # before answering: a client may read the metrics right after
        return answer

    async def stream(self, method: Method, data: bytes, call: CallContext) -> AsyncIterator[bytes]:
        """The serialized responses; then GrpcFailure, or CancelledError if the client left."""
        service = self._service
        record, authorization = self._begin(method, call, data, tracked=False)
        try:
            service.authorize(record, method.access, authorization)
            request = _parse(method.request_type.FromString, data)
            async for response in method.handler(request, call, record):  # type: ignore[union-attr]
                answer = response.SerializeToString()
                record.bytes_out += len(answer)
                yield answer
        except BaseException as e:
            raise self._failure(record, call, e) from None
        service.finish(record)

    def _begin(
        self, method: Method, call: CallContext, data: bytes, *, tracked: bool
    ) -> tuple[RequestRecord, bytes]:
        """The call's record, and the value of its ``authorization`` metadata (b"" if none)."""
        request_id, authorization = "", b""
        for key, value in call.metadata:
            if key == "x-request-id":
                request_id = _bytes(value).decode("latin-1")
            elif key == "authorization":
                authorization = _bytes(value)
        record = self._service.begin(
            "grpc", request_id=request_id, peer=call.peer, bytes_in=len(data), tracked=tracked
        )
        record.api = method.name
        return record, authorization

    def _failure(
        self, record: RequestRecord, call: CallContext, error: BaseException
    ) -> BaseException:
        """Record the failure; what to raise: the CancelledError, or the call's GrpcFailure."""
        service = self._service
        serving = service.failed(record, error)
        if serving.code is Code.CANCELLED:
            remaining = call.time_remaining()
            if remaining is not None and remaining <= 0:
                record.code = Code.DEADLINE_EXCEEDED
            service.finish(record)
            return error if isinstance(error, asyncio.CancelledError) else asyncio.CancelledError()
        service.finish(record)
        code, message = grpc_code(serving.code), grpc_message(serving.message)
        return GrpcFailure(code, message, call.trailing_metadata)


class GrpcFrontEnd:
    """The gRPC listener on grpc.aio (``--grpc_server=grpcio``): listening on its addresses
    from :meth:`start`.

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
        self._calls = Calls(service)
        self._server = grpc.aio.server(options=list(options))
        by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        for method in methods:
            handler = self._stream(method) if method.stream else self._unary(method)
            by_service.setdefault(method.service, {})[method.name] = handler
        self._server.add_generic_rpc_handlers(
            (
                *(grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items()),
                _Unimplemented(self._unary(UNKNOWN)),
            )
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
            endpoints.append(f"gRPC on {address} (grpcio)")
        self.endpoint = ", ".join(endpoints)
        await self._server.start()

    async def stop(self, deadline: float) -> None:
        """Refuse new calls (GOAWAY); let calls in flight finish until ``deadline``."""
        remaining = deadline - asyncio.get_running_loop().time()
        await self._server.stop(max(remaining, 0.0))

    def _unary(self, method: Method) -> grpc.RpcMethodHandler:
        calls = self._calls

        async def call(data: bytes, context: Any) -> bytes:
            try:
                return await calls.unary(method, data, _context(context))
            except GrpcFailure as failure:
                await _abort(context, failure)
                raise AssertionError("unreachable") from None

        return grpc.unary_unary_rpc_method_handler(call)

    def _stream(self, method: Method) -> grpc.RpcMethodHandler:
        calls = self._calls

        async def call(data: bytes, context: Any) -> AsyncIterator[bytes]:
            try:
                async for answer in calls.stream(method, data, _context(context)):
                    yield answer
            except GrpcFailure as failure:
                await _abort(context, failure)

        return grpc.unary_stream_rpc_method_handler(call)


def _context(context: Any) -> CallContext:
    return CallContext(
        context.peer(), context.invocation_metadata() or (), context.time_remaining()
    )


def _bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1", "replace") if isinstance(value, str) else value


async def _abort(context: Any, failure: GrpcFailure) -> None:
    if failure.trailing:
        context.set_trailing_metadata(failure.trailing)
    await context.abort(failure.code, failure.message)


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


async def _unknown(request: bytes, call: CallContext, record: RequestRecord) -> Any:
    raise ServingError(Code.UNIMPLEMENTED, "Method not found!")


class _Raw:
    """Any bytes, as they are: the request type of methods nobody registered."""

    FromString = staticmethod(bytes)


UNKNOWN: Final = Method("", "", _Raw, _unknown)  # the method of every unknown path


class _Unimplemented(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The last handler: answers every method the others do not know, through the adapter."""

    def __init__(self, handler: grpc.RpcMethodHandler) -> None:
        self._handler = handler

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        return self._handler

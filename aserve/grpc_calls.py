"""What every gRPC call goes through, on either server: the methods' records and the call path.

Protocol modules describe their RPCs as :class:`Method` records (full name, request type,
handler). :class:`Calls` is what every call goes through, whichever server carries it
(pygrpc-native's, :mod:`aserve.grpc_native`, or grpc.aio's, :mod:`aserve.grpc_server`):

* opens the call's record (``x-request-id`` metadata or a new id, the peer, bytes in);
* authorizes it, and refuses it before parsing when the model it names is overloaded;
* parses the request itself (the server hands it raw bytes; a large message is parsed in a
  codec thread, and one that does not parse is INVALID_ARGUMENT, not UNKNOWN);
* awaits the handler, serializes the response itself (so the record knows bytes out);
* turns a :class:`~aserve.errors.ServingError` into the call's status (code mapped by
  :func:`grpc_code`, message cut at 1024 characters as TF Serving cuts them) and anything else
  into INTERNAL, so no method can forget;
* hands the finished record to the service's observers, before answering.

A handler sees its call as a :class:`CallContext` on both servers. A method nobody
registered is answered UNIMPLEMENTED (:data:`UNKNOWN`) through the same path, so unknown
calls are recorded too. The client's deadline is the handler's to read
(``call.time_remaining()``); a call whose client cancels or whose deadline passes is
cancelled, and its record says so.

This module is on the request path and compiled (:data:`aserve.COMPILED`), so it has no
async generator: a stream's answers go to the ``send`` coroutine its server passes in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
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
StreamHandler = Callable[[Any, CallContext, RequestRecord], AsyncGenerator[Any, None]]


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
            # a message, or one the handler has serialized itself
            answer: bytes = response if type(response) is bytes else response.SerializeToString()
        except BaseException as e:
            raise self._failure(record, call, e) from None
        record.bytes_out = len(answer)
        service.finish(record)  # before answering: a client may read the metrics right after
        return answer

    async def stream(
        self,
        method: Method,
        data: bytes,
        call: CallContext,
        send: Callable[[bytes], Awaitable[bool]],
    ) -> None:
        """Each serialized response to ``send`` (which says False once the client has gone,
        and the stream ends there); GrpcFailure, or CancelledError if the client left."""
        service = self._service
        record, authorization = self._begin(method, call, data, tracked=False)
        try:
            service.authorize(record, method.access, authorization)
            request = _parse(method.request_type.FromString, data)
            responses: AsyncGenerator[Any, None] = method.handler(request, call, record)  # type: ignore[assignment]
            try:
                async for response in responses:
                    answer = response.SerializeToString()
                    record.bytes_out += len(answer)
                    if not await send(answer):
                        raise asyncio.CancelledError  # the client has gone
            finally:
                await responses.aclose()
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


def grpc_code(code: Code) -> grpc.StatusCode:
    """The gRPC status of a canonical code: the same code (absl and gRPC share them)."""
    return grpc.StatusCode[code.name]


def grpc_message(message: str) -> str:
    """TF Serving cuts gRPC error messages at 1024 characters (grpc_status_util.cc)."""
    if len(message) <= GRPC_MESSAGE_LIMIT:
        return message
    return message[:GRPC_MESSAGE_LIMIT] + "...TRUNCATED"


def _bytes(value: str | bytes) -> bytes:
    return value.encode("latin-1", "replace") if isinstance(value, str) else value


def _parse(parse: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        return parse(data)
    except DecodeError as e:
        raise invalid_argument(f"Failed to parse the request message: {e}") from None


async def _unknown(request: bytes, call: CallContext, record: RequestRecord) -> Any:
    raise ServingError(Code.UNIMPLEMENTED, "Method not found!")


class _Raw:
    """Any bytes, as they are: the request type of methods nobody registered."""

    @staticmethod
    def FromString(data: bytes) -> bytes:  # noqa: N802 (protobuf's name)
        return bytes(data)


UNKNOWN: Final = Method("", "", _Raw, _unknown)  # the method of every unknown path

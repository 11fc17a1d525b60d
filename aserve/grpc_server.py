"""The gRPC server on grpc.aio (``--grpc_server=grpcio``): the mature fallback of
pygrpc-native's (:mod:`aserve.grpc_native`, the default). It also serves what the native
server cannot (TLS, connection limits and ages), and every method nobody registered.

It only carries bytes: every call goes through :class:`~aserve.grpc_calls.Calls`, as on the
native server. Not compiled: it is not on the default request path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc

from aserve.grpc_calls import UNKNOWN, Address, CallContext, Calls, GrpcFailure, Method
from aserve.service import Service


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

        async def call(data: bytes, context: Any) -> None:
            async def send(answer: bytes) -> bool:
                await context.write(answer)  # a client that has gone cancels the call
                return True

            try:
                await calls.stream(method, data, _context(context), send)
            except GrpcFailure as failure:
                await _abort(context, failure)

        return grpc.unary_stream_rpc_method_handler(call)


def _context(context: Any) -> CallContext:
    return CallContext(
        context.peer(), context.invocation_metadata() or (), context.time_remaining()
    )


async def _abort(context: Any, failure: GrpcFailure) -> None:
    if failure.trailing:
        context.set_trailing_metadata(failure.trailing)
    await context.abort(failure.code, failure.message)


class _Unimplemented(grpc.GenericRpcHandler):  # type: ignore[misc]
    """The last handler: answers every method the others do not know, through the adapter."""

    def __init__(self, handler: grpc.RpcMethodHandler) -> None:
        self._handler = handler

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        return self._handler

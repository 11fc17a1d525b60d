"""The default gRPC server (``--grpc_server=native``): pygrpc-native's HTTP/2 in Rust.

    front_end = NativeGrpcFrontEnd(service, methods, addresses=[("0.0.0.0:8500", None)])
    await front_end.start()
    await front_end.stop(deadline)

pygrpc-native runs HTTP/2, gRPC framing, flow control, deadlines and cancellation on a
tokio runtime outside the GIL, and hands each call to Python as an event (call id, method,
request bytes, metadata, peer, time remaining), in batches. One thread here waits for
those batches and passes each to the event loop in one ``call_soon_threadsafe``; every
call then runs as a task through :class:`~aserve.grpc_calls.Calls`, exactly as on
grpc.aio, and is answered by id (``respond`` / ``fail``, or ``stream_*`` for streams).
Measured with a trivial handler on these machines: ~9-13 µs of server CPU per call
against grpc.aio 1.75's ~79 µs (shared/MEASUREMENTS.md).

What it cannot do, aserve leaves to grpc.aio (:func:`unsupported` says why, and the server
logs it): TLS, a connection cap (``--max_connections``), and closing connections by age
or idleness. A method nobody registered goes to a small grpc.aio server on a private
UNIX socket, so unknown calls are answered UNIMPLEMENTED and recorded as on grpc.aio.
The receive and send message limits (``grpc.max_receive_message_length``,
``grpc.max_send_message_length``) are checked here, with grpc's own messages.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Final

import grpc
from pygrpc_native import EVENT_CANCEL, STREAM_CLOSED, STREAM_FULL, NativeGrpcFront

from aserve.grpc_calls import Address, CallContext, Calls, GrpcFailure, Method
from aserve.grpc_server import GrpcFrontEnd
from aserve.service import Service

_BATCH: Final = 256  # events taken from the front per trip across the GIL
_FLUSH_S: Final = 1.0  # at most this long for the last answers to be written out when stopping
# server options only grpc.aio honours: with any of them set, grpc.aio serves
_GRPCIO_ONLY: Final = (
    "grpc.max_connection_idle_ms",
    "grpc.max_connection_age_ms",
    "grpc.max_connection_age_grace_ms",
    "grpc.max_allowed_incoming_connections",
)
_FRONT_OPTIONS: Final = {
    "grpc.keepalive_time_ms": "keepalive_time_ms",
    "grpc.keepalive_timeout_ms": "keepalive_timeout_ms",
    "grpc.keepalive_permit_without_calls": "keepalive_permit_without_calls",
    "grpc.max_concurrent_streams": "max_concurrent_streams",
    "grpc.max_metadata_size": "max_metadata_size",
}
_DEFAULT_RECEIVE_LIMIT: Final = 4 * 1024 * 1024  # grpc's


def unsupported(addresses: Sequence[Address], options: Mapping[str, int | str]) -> str:
    """Why the native server cannot serve this configuration ("" if it can)."""
    if any(credentials is not None for _, credentials in addresses):
        return "TLS (--ssl_config_file)"
    given = [key for key in _GRPCIO_ONLY if options.get(key)]
    if given:
        return ", ".join(given)
    return ""


class NativeGrpcFrontEnd:
    """The gRPC listener on pygrpc-native: one native front per address."""

    def __init__(
        self,
        service: Service,
        methods: Sequence[Method],
        *,
        addresses: Sequence[Address],
        options: Mapping[str, int | str],
    ) -> None:
        self._calls = Calls(service)
        self._methods = list(methods)
        self._addresses = [address for address, _ in addresses]
        self._front_args: dict[str, Any] = {
            name: int(options[key]) for key, name in _FRONT_OPTIONS.items() if key in options
        }
        self._receive_limit = _limit(options.get("grpc.max_receive_message_length"))
        self._send_limit = _limit(options.get("grpc.max_send_message_length"), default=None)
        self._fronts: list[NativeGrpcFront] = []
        self._unknown: GrpcFrontEnd | None = None
        self._unknown_dir = ""
        self._service = service
        self._tasks: dict[tuple[int, int], asyncio.Task[None]] = {}
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self.endpoint = ", ".join(f"gRPC on {address}" for address in self._addresses)

    async def start(self) -> None:
        """Listen on every address (OSError if one cannot be bound), then serve."""
        self._loop = asyncio.get_running_loop()
        self._unknown_dir = tempfile.mkdtemp(prefix="aserve-grpc-")
        unknown_socket = os.path.join(self._unknown_dir, "unknown.sock")
        self._unknown = GrpcFrontEnd(
            self._service, [], addresses=[(f"unix:{unknown_socket}", None)]
        )
        await self._unknown.start()
        paths = [(f"/{m.service}/{m.name}", m.stream) for m in self._methods]
        endpoints = []
        for address in self._addresses:
            try:
                front = NativeGrpcFront(
                    address, paths, call_details=True, metrics=True, **self._front_args
                )
            except OSError as e:
                raise OSError(f"cannot listen on {address}: {e}") from None
            front.set_fallback(unknown_socket)
            if not address.startswith("unix:"):
                self.port, address = (
                    front.bound_port,
                    f"{address.rpartition(':')[0]}:{front.bound_port}",
                )
            endpoints.append(f"gRPC on {address} (native)")
            self._fronts.append(front)
        self.endpoint = ", ".join(endpoints)
        for index, front in enumerate(self._fronts):
            front.start()
            threading.Thread(
                target=self._receive, args=(index, front), name="grpc-events", daemon=True
            ).start()

    async def stop(self, deadline: float) -> None:
        """Refuse new calls; let calls in flight finish until ``deadline``; then close."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=max(deadline - loop.time(), 0.0))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        flushed_by = min(deadline, loop.time() + _FLUSH_S)
        for front in self._fronts:
            while not _all_answered(front) and loop.time() < flushed_by:
                await asyncio.sleep(0.005)  # answers given but not yet written out
            await loop.run_in_executor(None, front.close)
        if self._unknown is not None:
            await self._unknown.stop(deadline)
        shutil.rmtree(self._unknown_dir, ignore_errors=True)

    # -- calls ------------------------------------------------------------------------------

    def _receive(self, index: int, front: NativeGrpcFront) -> None:
        """The events thread of one front: batches of events, each handed to the loop."""
        loop = self._loop
        assert loop is not None
        taken = threading.Lock()  # held from a batch's hand-off until the loop has run it
        while (events := front.recv_batch_details(_BATCH)) is not None:
            # one batch per turn of the loop: under a flood, new calls wait in the front
            # instead of making every turn longer, so answers (and the worker threads fed
            # by them) are not starved by the requests arriving behind them
            taken.acquire()
            try:
                loop.call_soon_threadsafe(self._on_events, index, front, events, taken)
            except RuntimeError:  # the loop has closed
                return

    def _on_events(
        self, index: int, front: NativeGrpcFront, events: list[Any], taken: threading.Lock
    ) -> None:
        loop, methods, tasks = self._loop, self._methods, self._tasks
        assert loop is not None
        loop.call_soon(taken.release)  # the next batch once this turn's callbacks have run
        for kind, call_id, method_id, payload, _, details in events:
            key = (index, call_id)
            if kind == EVENT_CANCEL:  # the client left, or its deadline passed
                task = tasks.pop(key, None)  # a task cancelled before it started has no
                if task is not None:  # finally to forget itself in
                    task.cancel()
                continue
            if self._stopping:
                front.fail(call_id, _UNAVAILABLE, "Server is shutting down")
                continue
            metadata, peer, time_remaining = details
            call = CallContext(peer, metadata, time_remaining)
            method = methods[method_id]
            run = self._stream if method.stream else self._unary
            # the call forgets its own task when it ends (a done callback per call cost ~2 µs)
            tasks[key] = loop.create_task(run(front, key, method, payload, call))

    async def _unary(
        self,
        front: NativeGrpcFront,
        key: tuple[int, int],
        method: Method,
        data: bytes,
        call: CallContext,
    ) -> None:
        call_id = key[1]
        try:
            self._check_size(len(data), self._receive_limit, "Received")
            answer = await self._calls.unary(method, data, call)
            self._check_size(len(answer), self._send_limit, "Sent")
        except GrpcFailure as failure:
            front.fail(call_id, failure.code.value[0], failure.message, _list(failure.trailing))
        except asyncio.CancelledError:
            if self._stopping:  # cut short at the shutdown deadline
                front.fail(call_id, _UNAVAILABLE, "Server is shutting down")
            # else the client has gone (pygrpc-native has answered a deadline itself)
        else:
            front.respond(call_id, answer, trailing_metadata=_list(call.trailing_metadata))
        finally:
            self._tasks.pop(key, None)

    async def _stream(
        self,
        front: NativeGrpcFront,
        key: tuple[int, int],
        method: Method,
        data: bytes,
        call: CallContext,
    ) -> None:
        call_id = key[1]

        async def send(answer: bytes) -> bool:
            sent = front.stream_try_send(call_id, answer)
            if sent == STREAM_FULL:  # the client is behind: wait for room off the loop
                loop = asyncio.get_running_loop()
                return bool(await loop.run_in_executor(None, front.stream_send, call_id, answer))
            return sent != STREAM_CLOSED

        try:
            await self._calls.stream(method, data, call, send)
        except GrpcFailure as failure:
            front.fail(call_id, failure.code.value[0], failure.message, _list(failure.trailing))
        except asyncio.CancelledError:
            if self._stopping:  # a stream (health Watch) still open at the deadline
                front.fail(call_id, _UNAVAILABLE, "Server is shutting down")
        else:
            front.stream_end(call_id, trailing_metadata=_list(call.trailing_metadata))
        finally:
            self._tasks.pop(key, None)

    @staticmethod
    def _check_size(size: int, limit: int | None, what: str) -> None:
        if limit is not None and size > limit:
            raise GrpcFailure(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{what} message larger than max ({size} vs. {limit})",
            )


_UNAVAILABLE: Final = grpc.StatusCode.UNAVAILABLE.value[0]


def _all_answered(front: NativeGrpcFront) -> bool:
    """Every call the front started has its status on the wire (its metrics say so)."""
    methods = (front.metrics() or {}).get("methods", {})
    started = sum(m["started"] for m in methods.values())
    ended = sum(s["count"] for m in methods.values() for s in m["status"].values())
    return bool(ended >= started)


def _limit(value: int | str | None, default: int | None = _DEFAULT_RECEIVE_LIMIT) -> int | None:
    if not isinstance(value, int):
        return default
    return None if value < 0 else value


def _list(metadata: Sequence[tuple[str, str | bytes]]) -> list[tuple[str, str | bytes]] | None:
    return list(metadata) if metadata else None

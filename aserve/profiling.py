"""TensorFlow's profiler, on demand: one trace of the whole process at a time.

What ``tensorflow.ProfilerService/Profile`` (TensorBoard's "capture profile",
``tf.profiler.experimental.client.trace``) asks of the server::

    xspace = await profiler.trace(duration_ms=2000, levels={...}, session_id="...")
    profiler.terminate(session_id)   # from another call: end that trace early

A trace starts TensorFlow's in-process profiler (host, device and Python tracers at the
levels asked), lets requests run for ``duration_ms`` and returns the collected XSpace,
serialized (None when it holds no event); TensorFlow writes it to a scratch folder, which is
read back and removed. Starting and stopping block and run in an I/O thread; the wait is on
the event loop. A trace already running refuses another with
UNAVAILABLE (the profiler client retries), as TensorFlow has one profiler session at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aserve.errors import Code, ServingError

IoRunner = Callable[..., Awaitable[Any]]  # WorkerPool.io


class Profiler:
    def __init__(self, io: IoRunner) -> None:
        self._io = io
        self._active: asyncio.Event | None = None
        self._session_id = ""

    async def trace(
        self, duration_ms: int, levels: Mapping[str, int], session_id: str = ""
    ) -> bytes | None:
        if self._active is not None:
            raise ServingError(Code.UNAVAILABLE, "Another profiling session is active")
        self._active, self._session_id = asyncio.Event(), session_id
        try:
            session = await self._io(_start, dict(levels))
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._active.wait(), max(duration_ms, 1) / 1000)
            finally:  # stopped even when the caller has gone: the profiler must not stay on
                stopping = asyncio.ensure_future(self._io(_stop, session))
                data, empty = await asyncio.shield(stopping)
        finally:
            self._active = None
        return None if empty else data

    def terminate(self, session_id: str) -> None:
        """End the running trace now if it is ``session_id``'s (or any, for "")."""
        if self._active is not None and session_id in ("", self._session_id):
            self._active.set()


def _start(levels: dict[str, int]) -> tuple[Any, str]:
    """A running profiler session, and the scratch folder it will write its XSpace to."""
    from tensorflow.python.profiler.internal import _pywrap_profiler

    scratch = tempfile.mkdtemp(prefix="aserve-profile-")
    session = _pywrap_profiler.ProfilerSession()
    try:
        session.start(scratch, levels)
    except Exception as e:
        shutil.rmtree(scratch, ignore_errors=True)
        raise ServingError(Code.UNAVAILABLE, f"Cannot start the profiler: {e}") from None
    return session, scratch


def _stop(started: tuple[Any, str]) -> tuple[bytes, bool]:
    """The XSpace collected, serialized, and whether it holds no event (TSL's IsEmpty).

    The session's ``stop()`` answers trace events, not the XSpace; ``export_to_tb()`` writes
    the XSpace as ``<scratch>/plugins/profile/<run>/<host>.xplane.pb``, read back here.
    """
    session, scratch = started
    try:
        session.export_to_tb()
        written = glob.glob(os.path.join(scratch, "plugins", "profile", "*", "*.xplane.pb"))
        if not written:
            return b"", True
        with open(written[0], "rb") as f:
            data = f.read()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return data, count_events(data) == 0


def count_events(xspace: bytes) -> int:
    """The trace events in a serialized ``tensorflow.profiler.XSpace``."""
    from aserve._proto.profiler_service_pb2 import XSpaceEvents

    space = XSpaceEvents.FromString(xspace)
    return sum(len(line.events) for plane in space.planes for line in plane.lines)

"""The server's long-lived tasks, supervised: one that dies takes the server down, loudly.

The reconciler, the version poller, the config watcher, the token-file watcher, the
event-loop lag sampler and every batch scheduler run forever (the start-up report and the
one-time heap freeze run under it too, and end). If one of them raised and
stopped silently, the server would go on answering from stale state. So each runs under the
one :class:`Supervisor`: a task that ends with an exception is logged with its traceback,
:attr:`Supervisor.failed` is set, the server shuts down in order, and the process exits with
status 1 so that systemd or Kubernetes restarts it. Errors a task is meant to survive (a bad
config file, an unreadable folder) are caught inside the task and never reach here.

    supervisor = Supervisor()
    supervisor.spawn(manager.run(), name="reconciler")
    await supervisor.failed.wait()    # or the stop signal, whichever comes first
    await supervisor.cancel()         # at shutdown: stop them all
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("aserve")


class TaskDied(Exception):
    """A supervised task ended with an exception; the server stops with exit status 1."""


class Supervisor:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failed = asyncio.Event()
        self.failure: TaskDied | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a supervised task. A task may also end normally."""
        task = asyncio.get_running_loop().create_task(coro, name=f"aserve-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.critical("%s died; stopping the server", task.get_name(), exc_info=error)
        if self.failure is None:
            self.failure = TaskDied(f"{task.get_name()} died: {type(error).__name__}: {error}")
        self.failed.set()

    async def cancel(self) -> None:
        """Cancel every task still running and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

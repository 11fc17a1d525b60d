"""Pieces of ``bench.py --only speed``: runs side by side, and what a server spent on them.

    (rest, grpc), steal = together(run_rest, run_grpc)     # both loads at once
    result, cpu = measured(pid, run)                        # CPU the server spent on it

A server's CPU comes from ``/proc``: the whole process, and its main thread, which is
aserve's event loop (every request's Python runs there; TensorFlow runs in worker
threads). Per request = CPU during the window / requests in the window.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from loadtests.stats import LoadResult, stolen_during

T = TypeVar("T")
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cpu:
    """Server CPU per request (µs): the event loop's thread, and the whole process."""

    loop_us: float = math.nan
    process_us: float = math.nan


def _seconds(stat_path: str) -> float:
    try:
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(main thread, process) CPU seconds so far."""
    return _seconds(f"/proc/{pid}/task/{pid}/stat"), _seconds(f"/proc/{pid}/stat")


def measured(pid: int, run: Callable[[], LoadResult]) -> tuple[LoadResult, Cpu]:
    """``run()``, and the CPU server ``pid`` spent per request meanwhile (NaN if pid is 0)."""
    if not pid:
        return run(), Cpu()
    loop0, process0 = cpu_seconds(pid)
    result = run()
    loop1, process1 = cpu_seconds(pid)
    n = max(result.requests - result.errors, 1)
    return result, Cpu((loop1 - loop0) / n * 1e6, (process1 - process0) / n * 1e6)


def together(*runs: Callable[[], T]) -> tuple[list[T], float]:
    """Every run at once, each in a thread of its own; their results, and the CPU steal."""

    def all_of_them() -> list[T]:
        results: list[T | None] = [None] * len(runs)
        errors: list[BaseException] = []

        def one(index: int) -> None:
            try:
                results[index] = runs[index]()
            except BaseException as e:  # re-raised below, in the caller's thread
                errors.append(e)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(runs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return [r for r in results if r is not None]

    return stolen_during(all_of_them)

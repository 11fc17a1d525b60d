"""The process's memory: keep the garbage collector off TensorFlow's heap, give memory back.

The policies live here, and only here:

* :func:`freeze_heap_at_start` (a supervised task) moves every object alive when the server
  starts serving (TensorFlow's ~280k modules, functions and protos among them) into the
  collector's permanent generation, *once*. Measured: with TF imported, each full
  collection took ~180 ms (collecting nothing) and stalled every request in flight (REST
  p99 157 ms at 32 connections); with that heap frozen, ~1 ms. Frozen objects are never
  collected, so freezing again after each load (as before) made every unloaded version keep
  its Python graph, and the TF graph that owns, forever: +0.5 to 0.7 MB per load/unload of
  the MLP, linear, and a whole model's size per cycle when its weights are graph constants.
  Versions loaded after the freeze stay collectable; the collector scans them, which is
  cheap (hundreds to thousands of objects per SavedModel, against TensorFlow's 280k).
* :func:`reclaim` runs in the unload thread once a version has been unloaded and every
  reference to it dropped: a collection frees the version's reference cycles (TensorFlow
  graphs are full of them: reference counting alone never frees them), then
  ``malloc_trim(0)`` (glibc) hands the freed heap back to the operating system.
* Two allocator settings, made when this module is imported (before TensorFlow allocates
  anything: the server imports it before it loads a model), each skipped when its variable
  is already set, so an operator can choose otherwise:

  - ``TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1``. TensorFlow's oneDNN CPU allocator (on by default
    on x86) keeps every tensor it ever allocated in a pool it never returns, so a version's
    weights stayed in the process after it unloaded (reused by the next load, never given
    back: +281 MB for good after one load of a 281 MB model). With it, tensors come from
    malloc and go back with their version (measured: no throughput change on the bench
    models).
  - at most one glibc malloc arena per CPU (``mallopt(M_ARENA_MAX)``, as
    ``MALLOC_ARENA_MAX``; glibc's default is 8 per CPU). Weights are allocated by whichever
    TensorFlow thread restores them; freed memory at the top of a thread's arena is not
    returned by ``malloc_trim`` and each arena kept up to a model's worth (measured: RSS
    +130 to +160 MB after 20 to 60 MLP cycles with the default, +29 MB and flat with one
    arena per CPU).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import time
from typing import Any

from aserve.cpus import usable_cpus

log = logging.getLogger("aserve.memory")

SYSTEM_ALLOCATOR = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"
ARENA_MAX = "MALLOC_ARENA_MAX"
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name is not None else None


def _configure_allocators() -> str:
    """Set the allocator policies (see the module doc); returns what is in force, for the log."""
    os.environ.setdefault(SYSTEM_ALLOCATOR, "1")
    arenas = os.environ.get(ARENA_MAX)
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None  # glibc only
    if arenas is None and mallopt is not None:
        arenas = str(usable_cpus().usable)  # affinity and cgroup quota, not the host
        mallopt(_M_ARENA_MAX, int(arenas))
    allocator = os.environ[SYSTEM_ALLOCATOR]
    return f"{SYSTEM_ALLOCATOR}={allocator}, malloc arenas at most {arenas or '?'}"


_ALLOCATORS = _configure_allocators()


async def freeze_heap_at_start() -> None:
    """Freeze the heap once, now (a supervised task that ends at once).

    Started with the server's other tasks, after the start-up config is applied and before
    the load tasks it caused have run, so the start-up versions stay collectable (with
    several models, one whose load had already begun in a load thread may have part of its
    graph frozen: at most once per start-up model).
    """
    started = time.perf_counter()
    gc.freeze()
    log.info(
        "heap frozen: %d objects in %.1f ms, later ones stay collectable; %s",
        gc.get_freeze_count(),
        (time.perf_counter() - started) * 1000,
        _ALLOCATORS,
    )


def reclaim() -> None:
    """Collect the unloaded version's cycles, give freed memory back to the operating system.

    Blocking: run it in the unload thread. The collection holds the GIL while it scans what
    is not frozen (about a millisecond with the bench models loaded) and while TensorFlow
    deletes the version's graph (~50 ms for a graph holding 281 MB of constants); the trim
    releases the GIL.
    """
    before = _rss_mb()
    started = time.perf_counter()
    collected = gc.collect()
    collected_at = time.perf_counter()
    unfrozen = len(gc.get_objects())
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None  # glibc only
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim(0)
    done = time.perf_counter()
    log.info(
        "memory after unload: RSS %s -> %s MB (collected %d of %d unfrozen objects in "
        "%.1f ms, malloc_trim %.1f ms)",
        _mb(before),
        _mb(_rss_mb()),
        collected,
        unfrozen + collected,
        (collected_at - started) * 1000,
        (done - collected_at) * 1000,
    )


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None  # not Linux


def _mb(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"

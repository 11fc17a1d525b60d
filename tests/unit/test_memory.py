"""The heap is frozen once; what is made later (a version loaded after start-up) is collected."""

import asyncio
import gc
import logging
import os
import threading
import weakref

import pytest

from aserve import memory


class Graph:
    """Stands for a loaded version's Python graph: full of reference cycles."""

    def __init__(self) -> None:
        self.ops = [self]


def test_a_version_loaded_after_the_freeze_is_collected_once_unloaded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        asyncio.run(memory.freeze_heap_at_start())  # ends: it freezes once, not per load
        assert gc.get_freeze_count() > 0
        frozen = gc.get_freeze_count()
        made_since = [[n] for n in range(1000)]  # what a second freeze would take in
        version = Graph()
        alive = weakref.ref(version)
        del version  # unloaded, last reference dropped: only the cycle keeps it
        assert alive() is not None
        with caplog.at_level(logging.INFO, logger="aserve.memory"):
            memory.reclaim()
        assert alive() is None
        # reclaiming froze nothing more (frozen objects that other tests' threads free
        # meanwhile only lower the count; freezing again would raise it by ~1000)
        assert gc.get_freeze_count() < frozen + len(made_since)
        here = threading.get_ident()  # a server of another test may log from its threads
        [line] = [r.getMessage() for r in caplog.records if r.thread == here]
        assert line.startswith("memory after unload: RSS ")
    finally:
        gc.unfreeze()


def test_an_operators_allocator_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(memory.SYSTEM_ALLOCATOR, "0")
    monkeypatch.setenv(memory.ARENA_MAX, "8")
    assert memory._configure_allocators() == (
        "TF_ONEDNN_USE_SYSTEM_ALLOCATOR=0, malloc arenas at most 8"
    )
    assert os.environ[memory.SYSTEM_ALLOCATOR] == "0"

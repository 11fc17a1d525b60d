"""The latency-during-swap run: steady load while versions are swapped, again and again.

A version swap here is what a deployment does: copy version N+1 into the model's base path,
wait until aserve serves it (N+1 AVAILABLE, N unloaded), remove folder N. The run measures
the same closed-loop load twice for the same length of time, once with no swaps (steady
state) and once while swaps follow one another without pause, and reports failed requests
(which must be 0) and p99 latency during swaps against steady state.

    report = await swap_run(url=..., status_url=..., base=base, source=v1_dir, swaps=20)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from loadtests.loadgen import run_rest
from loadtests.stats import LoadResult


@dataclass(frozen=True, slots=True)
class SwapReport:
    steady: LoadResult
    swapping: LoadResult
    swaps: int  # swaps completed inside the swapping window
    swap_seconds: float  # mean time from copying a version in to the old one being unloaded

    @property
    def p99_ratio(self) -> float:
        return self.swapping.p99_ms / self.steady.p99_ms


def copy_version(source: Path, base: Path, version: int) -> None:
    staging = base / f".staging-{version}"
    shutil.copytree(source, staging)
    os.rename(staging, base / str(version))  # appears at once, as a deploy tool would do it


def served_states(status_url: str) -> dict[int, str]:
    with urllib.request.urlopen(status_url, timeout=10) as response:
        body = json.load(response)
    return {int(v["version"]): v["state"] for v in body["model_version_status"]}


async def swap_once(base: Path, source: Path, status_url: str, old: int) -> int:
    new = old + 1
    await asyncio.to_thread(copy_version, source, base, new)
    while True:
        states = await asyncio.to_thread(served_states, status_url)
        if states.get(new) == "AVAILABLE" and states.get(old) == "END":
            break
        if states.get(new) == "END":
            raise RuntimeError(f"version {new} failed to load: {states}")
        await asyncio.sleep(0.05)
    await asyncio.to_thread(shutil.rmtree, base / str(old))
    return new


async def swap_run(
    *,
    url: str,
    body: bytes,
    status_url: str,
    base: Path,
    source: Path,
    current: int,
    swaps: int = 20,
    concurrency: int = 8,
) -> SwapReport:
    """``current``: the version served now (its folder is ``base/current``)."""
    started = time.perf_counter()
    current = await swap_once(base, source, status_url, current)  # calibration
    one_swap = time.perf_counter() - started
    window = 1.25 * swaps * one_swap
    steady = await run_rest(url, body, concurrency=concurrency, duration_s=window, warmup_s=1)
    stop = asyncio.Event()

    async def keep_swapping() -> tuple[int, float]:
        nonlocal current
        count, began = 0, time.perf_counter()
        while not stop.is_set():
            current = await swap_once(base, source, status_url, current)
            count += 1
        return count, (time.perf_counter() - began) / max(count, 1)

    swapper = asyncio.create_task(keep_swapping())
    swapping = await run_rest(url, body, concurrency=concurrency, duration_s=window, warmup_s=0)
    stop.set()
    count, mean = await swapper
    return SwapReport(steady, swapping, count, mean)

"""Does a big request stall the small ones? Mixed REST load, and the event loop's lag.

Large requests (32 CNN images per request, ~200 KB of JSON each way) flow beside tiny
half_plus_two requests against one aserve; the run reports the tiny requests' latency and
the server's own ``:aserve:event_loop_lag`` histogram (how late its loop woke a 100 ms
sleeper), read from its Prometheus page before and after the window. ``bench.py`` runs it
with aserve's codec threads on (the default) and off (``--codec_offload_us`` huge: every
decode and encode on the loop, as before codec threads existed).
"""

from __future__ import annotations

import asyncio
import math
import re
import urllib.request
from dataclasses import dataclass
from typing import Final

from loadtests import loadgen
from loadtests.stats import LoadResult

LAG_METRIC: Final = ":aserve:event_loop_lag"


@dataclass(frozen=True)
class MixedResult:
    tiny: LoadResult
    large: LoadResult
    lag_p99_ms: float  # upper bound of the bucket holding the 99th percentile
    lag_max_ms: float  # upper bound of the highest non-empty bucket
    lag_samples: int
    steal: float = math.nan  # share of the machine's CPU stolen during the run


def lag_buckets(page: str) -> dict[float, float]:
    """Cumulative counts of the loop-lag histogram by upper bound (µs; +Inf as inf)."""
    buckets = {}
    pattern = rf'^{LAG_METRIC}_bucket{{le="([^"]+)"}} (\S+)$'
    for bound, count in re.findall(pattern, page, re.MULTILINE):
        buckets[math.inf if bound == "+Inf" else float(bound)] = float(count)
    return buckets


def lag_summary(before: dict[float, float], after: dict[float, float]) -> tuple[float, float, int]:
    """(p99 ms, max ms, samples) of the lag samples taken between two readings."""
    counts = {b: after[b] - before.get(b, 0.0) for b in sorted(after)}
    total = counts.get(math.inf, 0.0)
    if total <= 0:
        return math.nan, math.nan, 0
    p99 = next(b for b, c in counts.items() if c >= 0.99 * total)
    previous, highest = 0.0, 0.0
    for bound, cumulative in counts.items():
        if cumulative > previous:
            highest = bound
        previous = cumulative
    return p99 / 1000, highest / 1000, int(total)


def _read(metrics_url: str) -> dict[float, float]:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        return lag_buckets(response.read().decode())


async def _both(
    rest_url: str, tiny: tuple[str, bytes], large: tuple[str, bytes], duration_s: float
) -> tuple[LoadResult, LoadResult]:
    small = loadgen.run_rest(
        f"{rest_url}/v1/models/{tiny[0]}:predict", tiny[1], concurrency=8, duration_s=duration_s
    )
    big = loadgen.run_rest(
        f"{rest_url}/v1/models/{large[0]}:predict",
        large[1],
        concurrency=4,
        duration_s=duration_s,
        examples_per_request=32,
    )
    small_result, big_result = await asyncio.gather(small, big)
    return small_result, big_result


def mixed_run(
    rest_url: str,
    metrics_url: str,
    *,
    tiny: tuple[str, bytes],
    large: tuple[str, bytes],
    duration_s: float,
) -> MixedResult:
    """8 tiny and 4 large closed-loop REST clients, one client loop, for ``duration_s``;
    ``tiny`` and ``large`` are (model name, request body)."""
    import uvloop

    before = _read(metrics_url)
    tiny_result, large_result = uvloop.run(_both(rest_url, tiny, large, duration_s))
    p99, highest, samples = lag_summary(before, _read(metrics_url))
    return MixedResult(tiny_result, large_result, p99, highest, samples)

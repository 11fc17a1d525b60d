"""Results of one load run, and a text table to compare several.

A :class:`LoadResult` is what every engine returns (the Python generator in
:mod:`loadtests.loadgen`, ``wrk`` and ``h2load`` in :mod:`loadtests.engines`), so a
benchmark can mix them in one table::

    rows = [("rest c=1", await run_rest(...)), ("rest c=32 wrk", run_wrk(...))]
    print(table(rows))

On a virtual machine the hypervisor may run other guests on "our" cores; that time
is *stolen* and, during a run, it looks like a slower server. :class:`CpuTimes` reads
the machine's CPU clock so a run can say how much of it was stolen (``steal``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

NAN = math.nan
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency summary in milliseconds, for engines that report no per-request latencies."""

    p50: float = NAN
    p90: float = NAN
    p99: float = NAN
    max: float = NAN


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One measured window of load.

    ``requests`` counts every request that belongs to the window (scheduled or sent
    inside it), successful or not; ``errors`` is the failed part of it (non-200, gRPC
    status other than OK, broken connection, or no answer by the end of the drain).
    Rates count successes only: ``rps`` is good requests per second of the window.

    ``latencies_ms`` holds one latency per successful request when the engine can
    give them (the Python generator; h2load, whose list includes errors, see
    :mod:`loadtests.engines`); otherwise it is empty and ``reported`` carries the
    engine's own percentiles. The ``*_ms`` properties always answer, NaN when unknown.
    """

    engine: str
    requests: int
    errors: int
    duration_s: float
    examples_per_request: int
    latencies_ms: tuple[float, ...] = ()
    error_samples: tuple[str, ...] = ()
    reported: Percentiles = Percentiles()
    steal: float = NAN  # share of the machine's CPU time stolen during the run, see CpuTimes

    @property
    def ok(self) -> int:
        return self.requests - self.errors

    @property
    def rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else NAN

    @property
    def examples_per_s(self) -> float:
        return self.rps * self.examples_per_request

    @property
    def p50_ms(self) -> float:
        return self._percentile(50, self.reported.p50)

    @property
    def p90_ms(self) -> float:
        return self._percentile(90, self.reported.p90)

    @property
    def p99_ms(self) -> float:
        return self._percentile(99, self.reported.p99)

    @property
    def max_ms(self) -> float:
        return max(self.latencies_ms) if self.latencies_ms else self.reported.max

    def _percentile(self, q: float, fallback: float) -> float:
        if not self.latencies_ms:
            return fallback
        return percentile(sorted(self.latencies_ms), q)


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """The machine's CPU clock in jiffies, from the first line of Linux's ``/proc/stat``.

    ``total`` counts every state (user, system, idle, ... steal); ``steal`` the time the
    hypervisor gave our virtual CPUs to someone else. Guest time is already part of user
    time there, so it is not added again.
    """

    total: int
    steal: int

    @classmethod
    def parse(cls, text: str) -> CpuTimes:
        fields = text.split("\n", 1)[0].split()
        if not fields or fields[0] != "cpu":
            raise ValueError(f"not a /proc/stat cpu line: {text[:80]!r}")
        values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
        values += [0] * (8 - len(values))
        return cls(total=sum(values), steal=values[7])

    @classmethod
    def now(cls) -> CpuTimes | None:
        """The clock now, or None where there is no ``/proc/stat`` (not Linux)."""
        try:
            with open("/proc/stat") as f:
                return cls.parse(f.readline())
        except (OSError, ValueError):
            return None

    def steal_since(self, earlier: CpuTimes | None) -> float:
        """Share (0..1) of the CPU time since ``earlier`` that was stolen; NaN if unknown."""
        if earlier is None or self.total <= earlier.total:
            return NAN
        return (self.steal - earlier.steal) / (self.total - earlier.total)


def stolen_during(
    run: Callable[[], T], clock: Callable[[], CpuTimes | None] = CpuTimes.now
) -> tuple[T, float]:
    """``run()``'s result and the share of the machine's CPU stolen meanwhile (NaN: unknown)."""
    before = clock()
    result = run()
    after = clock()
    return result, after.steal_since(before) if after is not None else NAN


def percentile(ordered: list[float] | tuple[float, ...], q: float) -> float:
    """The q-th percentile (0..100) of sorted values, nearest-rank; NaN for no values."""
    if not ordered:
        return NAN
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def error_samples(texts: list[str] | tuple[str, ...], limit: int = 5) -> tuple[str, ...]:
    """Up to ``limit`` distinct texts, in first-seen order, each cut to 300 characters."""
    distinct = dict.fromkeys(text[:300] for text in texts)
    return tuple(distinct)[:limit]


_HEADER = ("label", "engine", "req/s", "examples/s", "p50 ms", "p90 ms", "p99 ms", "max ms")


def table(rows: list[tuple[str, LoadResult]]) -> str:
    """An aligned text table, one line per (label, result); then errors/requests and the
    share of the CPU stolen during the run ("-" when not measured)."""
    cells = [[*_HEADER, "errors", "CPU stolen"]]
    cells += [_cells(label, result) for label, result in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _cells(label: str, result: LoadResult) -> list[str]:
    latencies = (result.p50_ms, result.p90_ms, result.p99_ms, result.max_ms)
    return [
        label,
        result.engine,
        _number(result.rps, 0),
        _number(result.examples_per_s, 0),
        *(_number(value, 2) for value in latencies),
        f"{result.errors}/{result.requests}",
        "-" if math.isnan(result.steal) else f"{result.steal:.0%}",
    ]


def _number(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"

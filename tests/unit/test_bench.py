"""bench.py's peer comparison (medians and per-round ratios) and its CPU-steal repeats."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import pytest

import bench
from loadtests.stats import CpuTimes, LoadResult


def result(rps: float, errors: int = 0, engine: str = "wrk", steal: float = math.nan) -> LoadResult:
    requests = int(rps * 10)
    return LoadResult(
        engine, requests + errors, errors, 10.0, 1, latencies_ms=(1.0, 2.0, 3.0), steal=steal
    )


def test_ratios_are_taken_within_each_round_per_protocol_and_peer() -> None:
    rounds = [
        {
            "aserve gRPC": result(3000),
            "aserve REST": result(4000),
            "MLServer 1.7.1 gRPC": result(1000),
        },
        {
            "aserve gRPC": result(1500),
            "aserve REST": result(4000),
            "MLServer 1.7.1 gRPC": result(600),
        },
        {
            "aserve gRPC": result(2000),
            "aserve REST": result(4000),
            "Triton 2.51.0 REST": result(8000),
        },
    ]
    assert bench.peer_ratios(rounds) == {
        ("gRPC", "MLServer 1.7.1"): [3.0, 2.5],
        ("REST", "Triton 2.51.0"): [0.5],
    }


def test_table_shows_each_servers_median_run_and_the_median_ratio() -> None:
    rounds = [
        {"aserve gRPC": result(3000), "MLServer 1.7.1 gRPC": result(1000, errors=2)},
        {"aserve gRPC": result(1500), "MLServer 1.7.1 gRPC": result(600)},
        {"aserve gRPC": result(2400), "MLServer 1.7.1 gRPC": result(800, steal=0.031)},
    ]
    table = bench.peers_table(bench.PeerRounds(rounds, ["triton: skipped (not installed)"]))
    assert "Median of 3 interleaved rounds" in table
    assert "| aserve gRPC (wrk) | 2,400 | 1,500 - 3,000 |" in table
    (mlserver,) = [line for line in table.splitlines() if line.startswith("| MLServer")]
    assert mlserver.startswith("| MLServer 1.7.1 gRPC (wrk) | 800 | 600 - 1,000 |")
    assert mlserver.endswith("| 2 | 3% |")  # errors summed over the rounds; the median's steal
    assert "- gRPC, MLServer 1.7.1: **3.0x** (3.0, 2.5, 3.0)" in table
    assert table.endswith("- triton: skipped (not installed)")


def test_a_single_round_without_peers_has_no_ratio_lines() -> None:
    table = bench.peers_table(bench.PeerRounds([{"aserve REST": result(4000)}], []))
    assert "Median of 1 interleaved round;" in table
    assert "aserve / peer" not in table


# -- CPU stolen by the hypervisor ------------------------------------------------------------


def test_cpu_times_read_the_steal_column_of_proc_stat() -> None:
    line = "cpu  100 5 50 800 10 1 4 30 7 0\ncpu0 1 2 3 4 5 6 7 8\n"
    times = CpuTimes.parse(line)
    assert times == CpuTimes(total=1000, steal=30)  # guest (7) is inside user already
    later = CpuTimes(total=1400, steal=130)
    assert later.steal_since(times) == 0.25
    assert math.isnan(later.steal_since(None))
    with pytest.raises(ValueError):
        CpuTimes.parse("intr 12 0 0\n")


def test_this_machine_has_a_cpu_clock_that_moves() -> None:
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc/stat here")
    before = CpuTimes.now()
    assert before is not None
    deadline = time.monotonic() + 5
    while (after := CpuTimes.now()) is not None and after.total == before.total:
        assert time.monotonic() < deadline, "the CPU clock did not move in 5 s"
        time.sleep(0.01)
    assert after is not None and 0.0 <= after.steal_since(before) <= 1.0


def scripted_clock(steals: list[float]) -> Callable[[], CpuTimes]:
    """A CPU clock whose every (before, after) pair shows the next share of steal."""
    readings = []
    total = steal = 0
    for share in steals:
        readings.append(CpuTimes(total, steal))
        total, steal = total + 1000, steal + round(share * 1000)
        readings.append(CpuTimes(total, steal))
    return iter(readings).__next__


def test_a_run_with_stolen_cpu_is_repeated_and_the_least_stolen_attempt_kept() -> None:
    runs = iter([result(1000), result(2500), result(1800)])
    index, best = bench.least_stolen(
        lambda: next(runs), max_steal=0.05, retries=2, clock=scripted_clock([0.4, 0.02, 0.3])
    )
    assert (index, best.rps, best.steal) == (1, 2500, 0.02)  # stopped after a clean attempt
    assert next(runs).rps == 1800  # ... so the third run never happened


def test_repeats_stop_after_the_retries_with_the_least_stolen_attempt() -> None:
    runs = iter([result(1000), result(2000), result(1500)])
    index, best = bench.least_stolen(
        lambda: next(runs), max_steal=0.05, retries=2, clock=scripted_clock([0.4, 0.1, 0.3])
    )
    assert (index, best.rps, best.steal) == (1, 2000, 0.1)


def test_unknown_steal_never_repeats_a_run() -> None:
    calls = []
    index, best = bench.least_stolen(
        lambda: calls.append(1) or result(1000), max_steal=0.05, retries=2, clock=lambda: None
    )
    assert (index, len(calls)) == (0, 1) and math.isnan(best.steal)
    assert bench._steal_cell(best) == ""


def test_loop_lag_summary_from_two_readings_of_the_histogram() -> None:
    from loadtests.looplag import lag_buckets, lag_summary

    def page(counts: list[int]) -> str:
        bounds = ["1000", "10000", "100000", "+Inf"]
        return "".join(
            f':aserve:event_loop_lag_bucket{{le="{b}"}} {c}\n'
            for b, c in zip(bounds, counts, strict=True)
        )

    before = lag_buckets(page([5, 5, 5, 5]))
    after = lag_buckets(page([95, 104, 105, 105]))  # 100 new samples: 90, 9 and 1 per bucket
    assert lag_summary(before, after) == (10.0, 100.0, 100)
    assert lag_summary(after, after)[2] == 0

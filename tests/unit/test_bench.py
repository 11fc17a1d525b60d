"""bench.py's peer comparison: medians and per-round ratios from measured rounds."""

from __future__ import annotations

import bench
from loadtests.stats import LoadResult


def result(rps: float, errors: int = 0, engine: str = "wrk") -> LoadResult:
    requests = int(rps * 10)
    return LoadResult(engine, requests + errors, errors, 10.0, 1, latencies_ms=(1.0, 2.0, 3.0))


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
        {"aserve gRPC": result(2400), "MLServer 1.7.1 gRPC": result(800)},
    ]
    table = bench.peers_table(bench.PeerRounds(rounds, ["triton: skipped (not installed)"]))
    assert "Median of 3 interleaved rounds" in table
    assert "| aserve gRPC (wrk) | 2,400 | 1,500 - 3,000 |" in table
    (mlserver,) = [line for line in table.splitlines() if line.startswith("| MLServer")]
    assert mlserver.startswith("| MLServer 1.7.1 gRPC (wrk) | 800 | 600 - 1,000 |")
    assert mlserver.endswith("| 2 |")  # errors summed over the rounds
    assert "- gRPC, MLServer 1.7.1: **3.0x** (3.0, 2.5, 3.0)" in table
    assert table.endswith("- triton: skipped (not installed)")


def test_a_single_round_without_peers_has_no_ratio_lines() -> None:
    table = bench.peers_table(bench.PeerRounds([{"aserve REST": result(4000)}], []))
    assert "Median of 1 interleaved round;" in table
    assert "aserve / peer" not in table

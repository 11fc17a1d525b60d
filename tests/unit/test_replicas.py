"""The replica run's balancer config, answer checking and accounting (no server, no timing)."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import pytest

from loadtests.replicas import (
    TICKS,
    Replica,
    Restart,
    Tally,
    Usage,
    _shares,
    haproxy_config,
    restart_table,
    version_of,
)
from loadtests.soak import Machine
from loadtests.stats import CpuTimes


def replicas(tmp_path: Path) -> list[Replica]:
    return [Replica(i, tmp_path, tmp_path, (), 9000 + i, 9100 + i) for i in range(3)]


def test_the_balancer_checks_readiness_and_speaks_http2_to_the_grpc_ports(tmp_path: Path) -> None:
    config = haproxy_config(replicas(tmp_path), 8001, 8002, tmp_path / "sock")
    assert "option httpchk GET /v2/health/ready" in config
    assert "    server r1 127.0.0.1:9001 check inter 500ms fall 1 rise 2\n" in config
    assert (
        "    server g1 127.0.0.1:9101 proto h2 check inter 500ms fall 1 rise 2 port 9001 "
        "check-proto h1\n" in config
    )
    assert "bind 127.0.0.1:8002 proto h2" in config


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs Debian's haproxy")
def test_haproxy_accepts_the_config(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(haproxy_config(replicas(tmp_path), 8001, 8002, tmp_path / "sock"))
    check = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_answer_is_counted_with_the_version_that_gave_it() -> None:
    tally = Tally()
    for outcome in [version_of(2.5), version_of(3.5), version_of(2.5), version_of(9.0)]:
        tally.record(outcome)
    tally.record("UNAVAILABLE: draining")
    assert tally.ok == {1: 2, 2: 1}
    assert tally.failed == 2 and tally.texts == ["unexpected answer 9.0", "UNAVAILABLE: draining"]
    assert tally.requests == 5
    assert tally.first_seen[1] <= tally.last_seen[1]


def test_shares_are_each_replicas_part_of_the_requests_it_answered() -> None:
    before = [{"REST": 10, "GRPC": 0}, {"REST": 0, "GRPC": 0}]
    after = [{"REST": 40, "GRPC": 5}, {"REST": 30, "GRPC": 15}]
    assert _shares(before, after, "REST") == (0.5, 0.5)
    assert _shares(before, after, "GRPC") == (0.25, 0.75)


def test_other_processes_are_the_machines_busy_time_beyond_ours() -> None:
    before = Usage(Machine(1000, 200, 0), CpuTimes(1000, 0), 1.0, 0.5, 0.5)
    after = Usage(Machine(2000, 900, 0), CpuTimes(2000, 100), 3.0, 1.0, 1.5)  # ours: 3.5 s
    spent = after.since(before)
    assert (spent.aserve, spent.haproxy, spent.client) == (2.0, 0.5, 1.0)
    assert math.isclose(spent.others, (700 - 3.5 * TICKS) / 1000)
    assert math.isclose(spent.steal, 0.1)


def test_restarts_are_one_row_each() -> None:
    table = restart_table([Restart(0, 0.31, 2.35, 0, 4.2)])
    assert table.splitlines() == [
        "| replica | SIGTERM -> out of the balancer | SIGTERM -> exit | exit status "
        "| start -> back in the balancer |",
        "| --- | --- | --- | --- | --- |",
        "| 0 | 0.31 s | 2.35 s | 0 | 4.20 s |",
    ]

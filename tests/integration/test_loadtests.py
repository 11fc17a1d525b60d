"""The Python load generator against a real server: successes and errors are counted
right, for REST and gRPC, closed and open loop (about 1 s each; good and bad requests
run side by side)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest

from loadtests import loadgen, payloads
from loadtests.stats import LoadResult
from support import HALF_PLUS_TWO, RunningServer, run_server

DURATION = 1.0
RATE = 150.0
Run = Coroutine[Any, Any, LoadResult]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_server("--model_name=m", f"--model_base_path={HALF_PLUS_TWO}") as server:
        server.wait_for_versions("m", {123})
        yield server


def _both(good: Run, bad: Run) -> tuple[LoadResult, LoadResult]:
    async def main() -> tuple[LoadResult, LoadResult]:
        first, second = await asyncio.gather(good, bad)
        return first, second

    return asyncio.run(main())


def _load(closed: bool) -> dict[str, Any]:
    load = {"concurrency": 4} if closed else {"rate": RATE}
    return {**load, "duration_s": DURATION, "warmup_s": 0.2, "drain_s": 2}


def _check(good: LoadResult, bad: LoadResult, closed: bool, error_text: str) -> None:
    assert good.errors == 0, good.error_samples
    assert len(good.latencies_ms) == good.requests > 0
    assert bad.errors == bad.requests > 0 and bad.latencies_ms == ()
    assert bad.rps == 0 and good.rps > 0
    assert any(error_text in sample for sample in bad.error_samples), bad.error_samples
    if not closed:  # every slot of the window is counted, answered or not
        for result in (good, bad):
            assert abs(result.requests - RATE * DURATION) <= 1


@pytest.mark.parametrize("closed", [True, False], ids=["closed", "open"])
def test_rest(server: RunningServer, closed: bool) -> None:
    body = payloads.rest_body(1.0, batch=2)
    good, bad = _both(
        loadgen.run_rest(f"{server.url}/v1/models/m:predict", body, **_load(closed)),
        loadgen.run_rest(f"{server.url}/v1/models/nope:predict", body, **_load(closed)),
    )
    _check(good, bad, closed, "HTTP 404")
    assert good.examples_per_s == good.rps  # examples_per_request defaults to 1


@pytest.mark.parametrize("closed", [True, False], ids=["closed", "open"])
def test_grpc(server: RunningServer, closed: bool) -> None:
    good, bad = _both(
        loadgen.run_grpc(server.grpc_target, payloads.predict_request("m", 1.0), **_load(closed)),
        loadgen.run_grpc(
            server.grpc_target, payloads.predict_request("nope", 1.0), **_load(closed)
        ),
    )
    _check(good, bad, closed, "NOT_FOUND")


def test_refuses_non_loopback_hosts() -> None:
    with pytest.raises(ValueError, match="non-loopback"):
        asyncio.run(loadgen.run_rest("http://10.0.0.1:8501/", b"{}", concurrency=1))


def test_the_command_line_prints_a_row_per_load_with_the_cpu_stolen(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["rest", f"--url={server.url}", "--model=m", "--concurrency", "1", "2"]
    assert loadgen.main([*argv, "--duration=0.5", "--warmup=0.1"]) == 0
    header, rule, *rows = capsys.readouterr().out.strip().splitlines()
    assert header.split()[-3:] == ["errors", "CPU", "stolen"] and set(rule) <= {"-", " "}
    assert [row.split()[:2] for row in rows] == [["rest", "c=1"], ["rest", "c=2"]]
    for row in rows:
        errors, stolen = row.split()[-2:]
        assert errors.startswith("0/") and errors != "0/0"
        assert stolen == "-" or 0 <= int(stolen.rstrip("%")) <= 100


@pytest.mark.parametrize("engine", ["python", "auto"])
def test_bench_loads_every_v2_protocol(server: RunningServer, engine: str) -> None:
    """bench.py's KServe V2 rows (REST JSON, REST binary, gRPC) against a real server: with
    the Python generator, and with wrk / h2load where they are installed."""
    import argparse

    import bench
    from loadtests.models import BenchModel

    model = BenchModel("m", "x", (1,), "half_plus_two")
    served = bench.Served(server.url, server.grpc_target)
    args = argparse.Namespace(duration=0.5, warmup=0, engine=engine)
    for protocol in bench.V2_PROTOCOLS:
        result = bench.load(model, served, protocol, 2, args, examples=3)
        assert result.errors == 0 and result.requests > 0, (protocol, result.error_samples)
        assert result.examples_per_s == pytest.approx(3 * result.rps)

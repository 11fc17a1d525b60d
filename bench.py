#!/usr/bin/env python
"""aserve's benchmark: one command, one table per model, served figures against the ceiling.

    python bench.py                 # everything (about 10 minutes on 2 cores)
    python bench.py --quick         # shorter runs, for a smoke check
    python bench.py --plot          # also write bench-results/latency_vs_throughput.png
    python bench.py --only soak      # only memory over load/unload cycles (~4 min)
    python bench.py --only isolation # only tiny p99 while a 281 MB model loads (~2 min)
    python bench.py --only speed     # only front ends vs Triton, fairness, hot path (~8 min)
    python bench.py --only replicas  # only 3 replicas behind HAProxy (~2 min)

For each model (``tiny`` half_plus_two, a Fashion-MNIST-sized ``cnn``, a compute-heavy
``mlp``; built here with TensorFlow, see loadtests/models.py) it measures, in one run:

(a) the in-process ceiling: the SavedModel called directly in this process, one caller,
    at batch 1, 8, 32 and 128, both through TensorFlow 2's signature call and through the
    TF1 session's C-level run call that aserve uses; the faster of the two is the ceiling;
(b) aserve over REST and gRPC at concurrency 1, 8 and 64, one example per request, with
    and without server-side batching (aserve runs as a separate process); for the cnn and
    the mlp also requests of 32 examples at concurrency 64, batching on; for the tiny model
    and the cnn also KServe V2 beside TF Serving's API, on the same server in the same run:
    V2 REST with JSON data, V2 REST with binary data both ways, and V2 gRPC (raw contents);
(c) every served figure as a ratio of the ceiling: examples/s against the ceiling's at
    batch 32, and p50 latency minus the ceiling's batch-1 latency.

Then the mixed run (loadtests/looplag.py): 32-image CNN REST requests beside tiny ones,
with aserve's codec threads on and off, reporting the tiny requests' p99 and the server's
event-loop lag p99. Then half_plus_two on the peer servers (NVIDIA Triton, Seldon
MLServer; skipped with a note when not installed, see loadtests/PEERS.md) at 32
connections, side by side with aserve, in interleaved rounds (``--peer-rounds``, default
3): each server's median, and aserve's ratio to each peer taken within each round; and the
latency-during-swap run (loadtests/swap.py). REST load comes from wrk, gRPC load from
h2load when they are installed (the Python generator otherwise); all traffic stays on
127.0.0.1.

On a virtual machine the hypervisor can take the cores away from us for seconds at a
time (steal time), which looks exactly like a slow server. Every load run reports the
share of the machine's CPU that was stolen while it ran; a run with more than
``--max-steal`` percent is run again (at most ``--steal-retries`` times) and the attempt
with the least stolen time is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from loadtests import engines, loadgen, looplag, payloads, speed
from loadtests.models import MODELS, BenchModel, build
from loadtests.stats import CpuTimes, LoadResult, stolen_during

CEILING_BATCHES = (1, 8, 32, 128)
PROTOCOLS = ("REST", "gRPC")  # TF Serving's API
V2_PROTOCOLS = ("V2 REST", "V2 REST binary", "V2 gRPC")  # KServe V2, same server, same run
V2_MODELS = ("tiny", "cnn")
V2_METHOD = "/inference.GRPCInferenceService/ModelInfer"
CONCURRENCIES = (1, 8, 64)
PEER_CONCURRENCY = 32
MULTI_EXAMPLE = 32
METRICS_PATH = "/monitoring/prometheus/metrics"
BATCHING = """\
max_batch_size { value: 64 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
"""


# -- progress --------------------------------------------------------------------------------


class Progress:
    """One status line on stderr: where a long run is and about how long is left."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()

    def step(self, what: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        left = (
            elapsed / max(self.done - 1, 1) * (self.total - self.done + 1) if self.done > 1 else 0
        )
        print(
            f"\r\x1b[K[{self.done:3d}/{self.total}] {what}  (~{left / 60:.0f} min left)",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        print(f"\r\x1b[Kdone in {(time.monotonic() - self.started) / 60:.1f} min", file=sys.stderr)


# -- (a) the in-process ceiling ----------------------------------------------------------------


@dataclass(frozen=True)
class CeilingRow:
    batch: int
    method: str
    examples_per_s: float
    p50_ms: float
    steal: float = float("nan")  # as LoadResult.steal: a ceiling measured while robbed flatters


def measure_ceiling(model: BenchModel, path: Path, args: argparse.Namespace) -> list[CeilingRow]:
    """Call the SavedModel directly, one caller, both ways, at each batch size."""
    import tensorflow as tf

    from aserve import loader

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    session = loader.load(str(path), loader.LoadOptions(intra_op_threads=0))
    spec = session.signatures["serving_default"]
    feed_name = spec.inputs[model.input_name].name
    fetch_names = [s.name for s in spec.outputs.values()]
    rows = []
    for batch in CEILING_BATCHES:
        x = model.batch(batch)
        tensor = tf.constant(x)
        calls: dict[str, Callable[[], object]] = {
            "TF2 signature call": functools.partial(signature, **{model.input_name: tensor}),
            "TF1 session run (aserve's path)": functools.partial(
                session.run, {feed_name: x}, fetch_names
            ),
        }
        for method, call in calls.items():
            _, row = least_stolen(
                functools.partial(_time_calls, call, batch, method, args.ceiling_seconds),
                **_steal_policy(args, f"{model.name} in-process {method}, batch {batch}"),
            )
            rows.append(row)
    session.close()
    return rows


def _time_calls(call: Callable[[], object], batch: int, method: str, seconds: float) -> CeilingRow:
    for _ in range(20):
        call()
    latencies = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        call()
        latencies.append(time.perf_counter() - start)
    rate = len(latencies) / sum(latencies) * batch
    return CeilingRow(batch, method, rate, float(np.median(latencies)) * 1000)


def ceiling_at(rows: list[CeilingRow], batch: int) -> CeilingRow:
    return max((r for r in rows if r.batch == batch), key=lambda r: r.examples_per_s)


# -- CPU stolen by the hypervisor --------------------------------------------------------------


Measured = TypeVar("Measured", LoadResult, CeilingRow, looplag.MixedResult)


def least_stolen(
    run: Callable[[], Measured],
    *,
    max_steal: float,
    retries: int,
    what: str = "run",
    clock: Callable[[], CpuTimes | None] = CpuTimes.now,
) -> tuple[int, Measured]:
    """Run; while more than ``max_steal`` (0..1) of the CPU was stolen, run again, at
    most ``retries`` more times. Returns (attempt index, result) of the attempt with the
    least stolen time, its ``steal`` filled in. Unknown steal (NaN) never repeats a run.
    """
    attempts: list[Measured] = []
    for attempt in range(1 + retries):
        result, steal = stolen_during(run, clock)
        attempts.append(replace(result, steal=steal))
        if not steal > max_steal:
            break
        then = "running it again" if attempt < retries else "keeping the least stolen attempt"
        print(f"\n{what}: {steal:.0%} of the CPU was stolen; {then}", file=sys.stderr)
    best = min(range(len(attempts)), key=lambda i: _stolen_or_none(attempts[i]) or 0.0)
    return best, attempts[best]


def _stolen_or_none(result: LoadResult | CeilingRow | looplag.MixedResult) -> float | None:
    return None if result.steal != result.steal else result.steal  # NaN: not measured


def _steal_cell(result: LoadResult | CeilingRow | looplag.MixedResult) -> str:
    steal = _stolen_or_none(result)
    return "" if steal is None else f"{steal:.0%}"


def _steal_policy(args: argparse.Namespace, what: str) -> dict[str, Any]:
    return {"max_steal": args.max_steal / 100, "retries": args.steal_retries, "what": what}


# -- (b) aserve, served ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Served:
    rest: str  # http://127.0.0.1:port
    grpc: str  # 127.0.0.1:port
    pid: int = 0

    def batches(self, model: str) -> tuple[float, float]:
        """(examples, batches) run so far for ``model``, from aserve's own Prometheus page."""
        with urllib.request.urlopen(self.rest + METRICS_PATH, timeout=10) as response:
            page = response.read().decode()
        found = dict.fromkeys(("sum", "count"), 0.0)
        pattern = rf'^:aserve:batching:batch_size_(sum|count){{model_name="{model}"}} (\S+)$'
        for kind, value in re.findall(pattern, page, re.MULTILINE):
            found[kind] = float(value)
        return found["sum"], found["count"]


@contextlib.contextmanager
def aserve(
    work: Path,
    models: list[BenchModel],
    *,
    batching: bool,
    extra: tuple[str, ...] = (),
    batching_text: str = BATCHING,
    env: Mapping[str, str] | None = None,
) -> Iterator[Served]:
    config = work / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{m.name}" base_path: "{work / "models" / m.name}" '
            'model_platform: "tensorflow" }\n'
            for m in models
        )
        + "}\n"
    )
    monitoring = work / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    rest, grpc = free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "aserve",
        f"--model_config_file={config}",
        f"--monitoring_config_file={monitoring}",
        "--host=127.0.0.1",
        f"--rest_api_port={rest}",
        f"--port={grpc}",
        *extra,
    ]
    if batching:
        (work / "batching.config").write_text(batching_text)
        argv += ["--enable_batching", f"--batching_parameters_file={work / 'batching.config'}"]
    log = open(work / f"aserve-{'batching' if batching else 'direct'}.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )
    served = Served(f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc}", process.pid)
    try:
        for m in models:
            wait_available(f"{served.rest}/v1/models/{m.name}", process)
        yield served
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def wait_available(status_url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"aserve exited with {process.returncode}")
        with (
            contextlib.suppress(OSError, ValueError, KeyError, IndexError),
            urllib.request.urlopen(status_url, timeout=2) as response,
        ):
            if json.load(response)["model_version_status"][0]["state"] == "AVAILABLE":
                return
        time.sleep(0.2)
    raise TimeoutError(f"{status_url} not AVAILABLE after {timeout} s")


def load(
    model: BenchModel,
    served: Served,
    protocol: str,
    concurrency: int,
    args: argparse.Namespace,
    examples: int = 1,
) -> LoadResult:
    """One closed-loop run; each request carries ``examples`` copies of one example."""
    example = model.example().tolist()
    timing = {"duration_s": args.duration, "warmup_s": args.warmup}
    load = {"concurrency": concurrency, "examples_per_request": examples, **timing}
    fast = args.engine != "python"
    if protocol in V2_PROTOCOLS:
        return _load_v2(model, served, protocol, example, fast, load)
    if protocol == "REST":
        url = f"{served.rest}/v1/models/{model.name}:predict"
        body = payloads.rest_body(example, examples)
        if fast and engines.wrk_available():
            return engines.run_wrk(url, body, **load)
        return loadgen.run(loadgen.run_rest(url, body, **load))
    request = payloads.predict_request(model.name, example, examples, input_name=model.input_name)
    if fast and engines.h2load_available():
        return engines.run_h2load(served.grpc, request, **load)
    return loadgen.run(loadgen.run_grpc(served.grpc, request, **load))


def _load_v2(
    model: BenchModel,
    served: Served,
    protocol: str,
    example: Any,
    fast: bool,
    load: dict[str, Any],
) -> LoadResult:
    """:func:`load` through KServe V2: REST with JSON data or binary data (both ways), gRPC
    ModelInfer with raw_input_contents."""
    examples = load["examples_per_request"]
    if protocol == "V2 gRPC":
        body = payloads.v2_infer_request(model.name, example, examples, input_name=model.input_name)
        if fast and engines.h2load_available():
            return engines.run_h2load_raw(served.grpc, V2_METHOD, body, **load)
        return loadgen.run(loadgen.run_grpc(served.grpc, body, method=V2_METHOD, **load))
    url = f"{served.rest}/v2/models/{model.name}/infer"
    binary = protocol == "V2 REST binary"
    content, headers = payloads.v2_rest_body(
        example, examples, input_name=model.input_name, binary=binary
    )
    if fast and engines.wrk_available():
        return engines.run_wrk(url, content, headers=headers, **load)
    return loadgen.run(loadgen.run_rest(url, content, headers=headers, **load))


def protocols(model: BenchModel) -> tuple[str, ...]:
    """TF Serving's API for every model, and KServe V2 beside it for V2_MODELS."""
    return PROTOCOLS + (V2_PROTOCOLS if model.name in V2_MODELS else ())


# -- peers ---------------------------------------------------------------------------------------


@dataclass
class PeerRounds:
    """half_plus_two at PEER_CONCURRENCY on aserve and each peer, in interleaved rounds.

    The machine is shared and one server's figure moves by a third between runs minutes
    apart, so every round measures every server back to back, and ratios are taken within
    a round before the median is taken across rounds.
    """

    rounds: list[dict[str, LoadResult]]  # one per round: "aserve gRPC", "MLServer ... REST", ...
    notes: list[str]


def compare_with_peers(work: Path, args: argparse.Namespace, progress: Progress) -> PeerRounds:
    tiny = MODELS["tiny"]
    comparison = PeerRounds([], [] if not args.no_peers else ["peers skipped (--no-peers)"])
    rounds = _peer_rounds(args)
    for n in range(1, rounds + 1):
        progress.step(f"peers round {n}/{rounds}: aserve")
        results: dict[str, LoadResult] = {}
        with aserve(work, [tiny], batching=True) as server:
            for protocol in ("REST", "gRPC"):
                label = f"aserve {protocol}"
                _, results[label] = least_stolen(
                    functools.partial(load, tiny, server, protocol, PEER_CONCURRENCY, args),
                    **_steal_policy(args, f"round {n}: {label}"),
                )
        if not args.no_peers:
            results.update(run_peers(args, progress, comparison.notes, n))
        comparison.rounds.append(results)
    return comparison


def _peer_rounds(args: argparse.Namespace) -> int:
    """Without peers there is nothing to interleave: aserve is measured once."""
    return 1 if args.no_peers else int(args.peer_rounds)


def run_peers(
    args: argparse.Namespace, progress: Progress, notes: list[str], n: int
) -> dict[str, LoadResult]:
    results: dict[str, LoadResult] = {}
    try:
        from loadtests import peers
    except ImportError as e:  # pragma: no cover - peers.py ships with the repository
        _note(notes, f"peers skipped: {e}")
        return results
    for name, where in peers.available().items():
        progress.step(f"peers round {n}/{args.peer_rounds}: {name}")
        if where.startswith("not installed"):
            _note(notes, f"{name}: skipped ({where}; see loadtests/PEERS.md)")
            continue
        try:
            with peers.running(
                name, batching=True, rest_port=free_port(), grpc_port=free_port()
            ) as peer:
                timing = {
                    "concurrency": PEER_CONCURRENCY,
                    "duration_s": args.duration,
                    "warmup_s": args.warmup,
                }
                label = f"{peer.name} REST"
                _, results[label] = least_stolen(
                    functools.partial(engines.run_wrk, peer.rest_url, peer.rest_body, **timing),
                    **_steal_policy(args, f"round {n}: {label}"),
                )
                if peer.grpc_target and peer.grpc_method and peer.grpc_body:
                    label = f"{peer.name} gRPC"
                    _, results[label] = least_stolen(
                        functools.partial(
                            engines.run_h2load_raw,
                            peer.grpc_target,
                            peer.grpc_method,
                            peer.grpc_body,
                            expected_size=None,
                            **timing,
                        ),
                        **_steal_policy(args, f"round {n}: {label}"),
                    )
        except Exception as e:  # a broken peer must not sink aserve's own figures
            _note(notes, f"{name}: failed in round {n} ({type(e).__name__}: {e})")
    return results


def _note(notes: list[str], note: str) -> None:
    if note not in notes:
        notes.append(note)


# -- report --------------------------------------------------------------------------------------


def model_table(
    model: BenchModel,
    ceiling: list[CeilingRow],
    served: dict[tuple[str, str, int], LoadResult],
    mean_batch: dict[tuple[str, str, int], float],
) -> str:
    """One model: the ceiling rows, then each served run against them.

    "p50 - in-process" subtracts the batch-1 p50 of the fastest in-process call (the ceiling)
    and, after the slash, of the TF2 signature call (``loaded.signatures[...]``).
    """
    base = ceiling_at(ceiling, 32)
    floor = ceiling_at(ceiling, 1).p50_ms
    tf2 = next((r.p50_ms for r in ceiling if r.batch == 1 and r.method.startswith("TF2")), floor)
    lines = [
        f"## {model.name}: {model.description}",
        "",
        "| run | examples/s | p50 ms | p99 ms | errors | vs ceiling@32 | mean batch "
        "| p50 - in-process (ceiling / TF2 call) | CPU stolen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in ceiling:
        best = " (ceiling)" if row == ceiling_at(ceiling, row.batch) else ""
        lines.append(
            f"| in-process {row.method}, batch {row.batch}{best} | {row.examples_per_s:,.0f} "
            f"| {row.p50_ms:.3f} | | | {row.examples_per_s / base.examples_per_s:.2f} | | "
            f"| {_steal_cell(row)} |"
        )
    for key, r in served.items():
        protocol, mode, c = key
        batch = f"{mean_batch[key]:.1f}" if key in mean_batch else ""
        lines.append(
            f"| aserve {protocol} c={c} {mode} ({r.engine}) | {r.examples_per_s:,.0f} "
            f"| {r.p50_ms:.3f} "
            f"| {r.p99_ms:.2f} | {r.errors} | {r.examples_per_s / base.examples_per_s:.2f} "
            f"| {batch} | {r.p50_ms - floor:+.3f} / {r.p50_ms - tf2:+.3f} | {_steal_cell(r)} |"
        )
    return "\n".join(lines)


def peers_table(comparison: PeerRounds) -> str:
    """Each server's median run across the rounds, then aserve's ratio to each peer."""
    rounds = comparison.rounds
    n = len(rounds)
    lines = [
        f"## half_plus_two at {PEER_CONCURRENCY} connections, batching on: aserve and its peers",
        "",
        f"Median of {n} interleaved round{'s' if n != 1 else ''}; p50 and p99 from that run.",
        "",
        "| server | requests/s | lowest - highest | p50 ms | p99 ms | errors | CPU stolen |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in dict.fromkeys(label for results in rounds for label in results):
        runs = sorted((r[label] for r in rounds if label in r), key=lambda r: r.rps)
        mid = runs[(len(runs) - 1) // 2]
        lines.append(
            f"| {label} ({mid.engine}) | {mid.rps:,.0f} | {runs[0].rps:,.0f} - {runs[-1].rps:,.0f} "
            f"| {mid.p50_ms:.2f} | {mid.p99_ms:.2f} | {sum(r.errors for r in runs)} "
            f"| {_steal_cell(mid)} |"
        )
    ratios = peer_ratios(rounds)
    if ratios:
        lines += ["", "aserve / peer, requests/s (median of the per-round ratios; each round):", ""]
        for (protocol, peer), values in ratios.items():
            each = ", ".join(f"{v:.1f}" for v in values)
            lines.append(f"- {protocol}, {peer}: **{float(np.median(values)):.1f}x** ({each})")
    lines += [f"- {note}" for note in comparison.notes]
    return "\n".join(lines)


def peer_ratios(rounds: list[dict[str, LoadResult]]) -> dict[tuple[str, str], list[float]]:
    """(protocol, peer) -> aserve's requests/s over the peer's, one value per round."""
    ratios: dict[tuple[str, str], list[float]] = {}
    for results in rounds:
        for label, r in results.items():
            peer, _, protocol = label.rpartition(" ")
            ours = results.get(f"aserve {protocol}")
            if peer != "aserve" and ours is not None and r.rps > 0:
                ratios.setdefault((protocol, peer), []).append(ours.rps / r.rps)
    return ratios


def steal_preamble(args: argparse.Namespace) -> str:
    return (
        "*CPU stolen*: the share of the machine's CPU time the hypervisor gave to other guests "
        f"during the run (Linux /proc/stat). A run above {args.max_steal:g}% was run again, at "
        f"most {args.steal_retries} times, and the attempt with the least stolen time kept."
    )


def swap_table(report: Any) -> str:
    s, w = report.steady, report.swapping
    return "\n".join(
        [
            f"## Latency during version swaps (tiny, REST, {report.swaps} swaps, "
            f"{report.swap_seconds:.2f} s per swap)",
            "",
            "| phase | requests | failed | p50 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|",
            _swap_row("steady state", s),
            _swap_row("during swaps", w),
            "",
            f"p99 during swaps / steady state: {report.p99_ratio:.2f}",
        ]
    )


LOOP_LAG_VARIANTS = (
    ("codec threads (default)", ()),
    ("every decode and encode on the loop", ("--codec_offload_us=1e12",)),
)


def run_loop_lag(work: Path, args: argparse.Namespace) -> list[tuple[str, looplag.MixedResult]]:
    """The mixed run once per variant; each run repeated if the hypervisor stole CPU."""
    tiny, cnn = MODELS["tiny"], MODELS["cnn"]
    for model in (tiny, cnn):
        if not (work / "models" / model.name / "1").exists():
            build(model.name, work / "models" / model.name / "1")
    bodies = {
        "tiny": payloads.rest_body(tiny.example().tolist()),
        "cnn": payloads.rest_body(cnn.example().tolist(), MULTI_EXAMPLE),
    }
    rows = []
    for label, extra in LOOP_LAG_VARIANTS:
        with aserve(work, [tiny, cnn], batching=False, extra=extra) as server:

            def attempt(server: Served = server) -> looplag.MixedResult:
                return looplag.mixed_run(
                    server.rest,
                    server.rest + METRICS_PATH,
                    tiny=("tiny", bodies["tiny"]),
                    large=("cnn", bodies["cnn"]),
                    duration_s=args.duration,
                )

            _, result = least_stolen(attempt, **_steal_policy(args, f"loop lag: {label}"))
        rows.append((label, result))
    return rows


def loop_lag_table(rows: list[tuple[str, looplag.MixedResult]]) -> str:
    lines = [
        "## Event-loop lag with large requests beside tiny ones (REST, no batching)",
        "",
        "8 clients send half_plus_two one example at a time while 4 send 32 CNN images per "
        "request; lag is how late aserve's loop woke a 100 ms sleeper (its "
        "`:aserve:event_loop_lag` histogram, bucket upper bounds).",
        "",
        "| variant | tiny req/s | tiny p50 ms | tiny p99 ms | cnn images/s | cnn p99 ms "
        "| loop lag p99 ms | loop lag max ms | errors | CPU stolen |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows:
        cells = [
            label,
            f"{r.tiny.rps:,.0f}",
            f"{r.tiny.p50_ms:.2f}",
            f"{r.tiny.p99_ms:.2f}",
            f"{r.large.examples_per_s:,.0f}",
            f"{r.large.p99_ms:.1f}",
            f"{r.lag_p99_ms:.2f}",
            f"{r.lag_max_ms:.1f}",
            str(r.tiny.errors + r.large.errors),
            _steal_cell(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_access_log(work: Path, args: argparse.Namespace) -> dict[tuple[str, str], list[float]]:
    """tiny, batching, 32 connections, REST and gRPC: requests/s with the access log off and
    on (to a file), in interleaved rounds."""
    tiny = MODELS["tiny"]
    if not (work / "models" / "tiny" / "1").exists():
        build("tiny", work / "models" / "tiny" / "1")
    variants = {"off": (), "on": (f"--access_log={work / 'access.log'}",)}
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.peer_rounds):
        for variant, extra in variants.items():
            with aserve(work, [tiny], batching=True, extra=extra) as server:
                for protocol in ("REST", "gRPC"):
                    what = f"access log {variant} {protocol}"
                    _, result = least_stolen(
                        lambda protocol=protocol: load(tiny, server, protocol, 32, args),
                        **_steal_policy(args, what),
                    )
                    rates.setdefault((protocol, variant), []).append(result.rps)
    return rates


def access_log_table(rates: dict[tuple[str, str], list[float]]) -> str:
    lines = [
        "## The access log's cost (tiny, batching, 32 connections)",
        "",
        "| protocol | log off req/s | log on req/s | on / off | rounds (off; on) |",
        "|---|---|---|---|---|",
    ]
    for protocol in ("REST", "gRPC"):
        off, on = rates[(protocol, "off")], rates[(protocol, "on")]
        m_off, m_on = float(np.median(off)), float(np.median(on))
        rounds = f"{', '.join(f'{r:,.0f}' for r in off)}; {', '.join(f'{r:,.0f}' for r in on)}"
        lines.append(f"| {protocol} | {m_off:,.0f} | {m_on:,.0f} | {m_on / m_off:.2f} | {rounds} |")
    return "\n".join(lines)


FLOOD_BATCHING = {  # the overload cases of the hardening issue
    "tiny": BATCHING,
    "mlp": (
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 1000 }\n"
        "max_enqueued_batches { value: 4 }\nnum_batch_threads { value: 2 }\n"
    ),
}
FLOOD_CASES = {"tiny": (1, 32), "mlp": (32, 4)}  # examples per request; calm connections


def run_flood(work: Path, args: argparse.Namespace) -> list[tuple[str, Any, Any]]:
    """Per model, protocol and batching: the calm goodput, then 2,000 connections."""
    rows = []
    for name, (examples, calm) in FLOOD_CASES.items():
        model = MODELS[name]
        if not (work / "models" / name / "1").exists():
            build(name, work / "models" / name / "1")
        for batching in (False, True):
            text = FLOOD_BATCHING[name]
            with aserve(work, [model], batching=batching, batching_text=text) as server:
                for protocol in ("REST", "gRPC"):
                    flood = functools.partial(_flood, server, protocol, model, examples)
                    label = f"{name} {protocol} {'batching' if batching else 'direct'}"
                    base = flood(calm, args.duration)
                    rows.append((label, base, flood(args.flood_connections, args.flood_seconds)))
    return rows


def _flood(
    server: Served,
    protocol: str,
    model: BenchModel,
    examples: int,
    connections: int,
    seconds: float,
) -> Any:
    from loadtests import flood

    return flood.flood(
        protocol,
        url=server.rest,
        target=server.grpc,
        model=model.name,
        example=model.example().tolist(),
        batch=examples,
        connections=connections,
        seconds=seconds,
        pid=server.pid,
        input_name=model.input_name,
    )


def flood_table(rows: list[tuple[str, Any, Any]]) -> str:
    lines = [
        "## Flood: 2,000 connections, each sending again at once (wrk / h2load)",
        "",
        "Goodput against the same server's calm goodput (tiny: 32 connections, mlp: 4); "
        "refusal latency is the server's (`:aserve:refusal_latency`, bucket upper bounds).",
        "",
        "| run | calm ok/s | flood ok/s | flood / calm | refused/s | refusal p50 ms "
        "| refusal p99 ms | accepted and failed | peak RSS MiB | back to normal s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, calm, flooded in rows:
        cells = [
            label,
            f"{calm.goodput:,.0f}",
            f"{flooded.goodput:,.0f}",
            f"{flooded.goodput / calm.goodput:.2f}",
            f"{flooded.refused / flooded.seconds:,.0f}",
            f"{flooded.refusal_p50_ms:.2f}",
            f"{flooded.refusal_p99_ms:.2f}",
            str(flooded.failed),
            f"{flooded.peak_rss_mb:,.0f}",
            f"{flooded.recovery_s:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- speed: front ends against Triton, fairness, latency, the MLP, the hot path --------------

# name -> (flags, environment)
SPEED_VARIANTS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "aserve": ((), {}),  # aserve's own HTTP/1.1 server and pygrpc-native, compiled request path
    "aserve, pure Python": ((), {"ASERVE_PURE_PYTHON": "1"}),  # the same, not compiled
    "aserve, fallbacks": (("--rest_server=uvicorn", "--grpc_server=grpcio"), {}),
}
MLP_CONCURRENCY = 64


@dataclass(frozen=True)
class SpeedPoint:
    result: LoadResult
    cpu: Any  # loadtests.speed.Cpu


@dataclass
class SpeedReport:
    rounds: list[dict[str, SpeedPoint]] = field(default_factory=list)
    latency: dict[str, tuple[float, float]] = field(default_factory=dict)  # served, in-process
    mlp: dict[str, tuple[float, float, Any]] = field(default_factory=dict)  # ex/s, ceiling, cpu
    hot: Any = None  # loadtests.hotpath.HotPath
    notes: list[str] = field(default_factory=list)


def run_speed(work: Path, args: argparse.Namespace) -> SpeedReport:
    """tiny at 32 connections, batching on, in interleaved rounds: aserve, aserve on its
    fallback front ends, and Triton, each on REST, gRPC, and both at once; then c=1 latency
    against the in-process call, the MLP at one example per request, and the hot path."""
    from loadtests import hotpath

    tiny, mlp = MODELS["tiny"], MODELS["mlp"]
    for model in (tiny, mlp):
        if not (work / "models" / model.name / "1").exists():
            build(model.name, work / "models" / model.name / "1")
    report = SpeedReport()
    for n in range(args.peer_rounds):
        points: dict[str, SpeedPoint] = {}
        for name, (extra, env) in SPEED_VARIANTS.items():
            with aserve(work, [tiny], batching=True, extra=extra, env=env) as served:
                rest = functools.partial(load, tiny, served, "REST", PEER_CONCURRENCY, args)
                grpc = functools.partial(load, tiny, served, "gRPC", PEER_CONCURRENCY, args)
                points.update(_speed_points(name, served.pid, rest, grpc))
        if not args.no_peers:
            points.update(_triton_points(args, report.notes, n))
        report.rounds.append(points)
    tiny_ceiling = ceiling_at(measure_ceiling(tiny, work / "models" / "tiny" / "1", args), 1)
    with aserve(work, [tiny], batching=False) as served:
        for protocol in ("REST", "gRPC"):
            _, result = least_stolen(
                functools.partial(load, tiny, served, protocol, 1, args),
                **_steal_policy(args, f"speed: c=1 {protocol}"),
            )
            report.latency[protocol] = (result.p50_ms, tiny_ceiling.p50_ms)
    mlp_ceiling = ceiling_at(measure_ceiling(mlp, work / "models" / "mlp" / "1", args), 32)
    with aserve(work, [mlp], batching=True) as served:
        for protocol in ("REST", "gRPC"):
            run = functools.partial(load, mlp, served, protocol, MLP_CONCURRENCY, args)
            result, cpu = speed.measured(served.pid, run)
            report.mlp[protocol] = (result.examples_per_s, mlp_ceiling.examples_per_s, cpu)
    report.hot = asyncio.run(hotpath.measure(work / "hotpath", 20_000 if not args.quick else 4000))
    return report


def _speed_points(
    name: str, pid: int, rest: Callable[[], LoadResult], grpc: Callable[[], LoadResult]
) -> dict[str, SpeedPoint]:
    points = {}
    for protocol, run in (("REST", rest), ("gRPC", grpc)):
        (result, cpu), steal = stolen_during(functools.partial(speed.measured, pid, run))
        points[f"{name} {protocol}"] = SpeedPoint(replace(result, steal=steal), cpu)
    (rest_result, grpc_result), steal = speed.together(rest, grpc)
    points[f"{name} both REST"] = SpeedPoint(replace(rest_result, steal=steal), speed.Cpu())
    points[f"{name} both gRPC"] = SpeedPoint(replace(grpc_result, steal=steal), speed.Cpu())
    return points


def _triton_points(args: argparse.Namespace, notes: list[str], n: int) -> dict[str, SpeedPoint]:
    from loadtests import peers

    where = peers.available().get("triton", "not installed")
    if where.startswith("not installed"):
        _note(notes, f"Triton: skipped ({where}; see loadtests/PEERS.md)")
        return {}
    timing = {
        "concurrency": PEER_CONCURRENCY,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
    }
    try:
        with peers.running(
            "triton", batching=True, rest_port=free_port(), grpc_port=free_port()
        ) as peer:
            assert peer.grpc_target and peer.grpc_method and peer.grpc_body
            rest = functools.partial(engines.run_wrk, peer.rest_url, peer.rest_body, **timing)
            grpc = functools.partial(
                engines.run_h2load_raw,
                peer.grpc_target,
                peer.grpc_method,
                peer.grpc_body,
                expected_size=None,
                **timing,
            )
            return _speed_points("Triton", 0, rest, grpc)
    except Exception as e:  # a broken peer must not sink aserve's own figures
        _note(notes, f"Triton: failed in round {n + 1} ({type(e).__name__}: {e})")
        return {}


def speed_tables(report: SpeedReport) -> str:
    rounds = report.rounds
    servers = [s for s in (*SPEED_VARIANTS, "Triton") if f"{s} REST" in rounds[0]]

    def median(label: str, value: Callable[[SpeedPoint], float]) -> float:
        values = [value(r[label]) for r in rounds if label in r]
        return float(np.median(values)) if values else math.nan

    def rps(label: str) -> float:
        return median(label, lambda p: p.result.rps)

    lines = [
        f"## Speed: half_plus_two, batching on, {PEER_CONCURRENCY} connections per protocol "
        f"(median of {len(rounds)} interleaved rounds)",
        "",
        '"both": REST and gRPC loaded at once, 32 + 32 connections; "of solo": each '
        "protocol's share of its own solo rate. Loop / process: the server's CPU per request "
        "(µs), its event loop thread and the whole process.",
        "",
        "| server | REST req/s | gRPC req/s | both: REST | both: gRPC | both: total "
        "| REST of solo | gRPC of solo | loop µs REST / gRPC | process µs REST / gRPC | steal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in servers:
        solo_rest, solo_grpc = rps(f"{s} REST"), rps(f"{s} gRPC")
        both_rest, both_grpc = rps(f"{s} both REST"), rps(f"{s} both gRPC")
        loop = [median(f"{s} {p}", lambda x: x.cpu.loop_us) for p in ("REST", "gRPC")]
        proc = [median(f"{s} {p}", lambda x: x.cpu.process_us) for p in ("REST", "gRPC")]
        steal = max(
            (p.result.steal for r in rounds for k, p in r.items() if k.startswith(s + " ")),
            default=math.nan,
        )
        lines.append(
            f"| {s} | {solo_rest:,.0f} | {solo_grpc:,.0f} | {both_rest:,.0f} | {both_grpc:,.0f} "
            f"| {both_rest + both_grpc:,.0f} | {both_rest / solo_rest:.0%} "
            f"| {both_grpc / solo_grpc:.0%} | {_cpu(loop)} | {_cpu(proc)} | {steal:.1%} |"
        )
    if "Triton" in servers:
        lines += [
            "",
            "aserve / Triton, requests/s (median of the per-round ratios; each round):",
            "",
        ]
        for what, labels in (
            ("REST", ["REST"]),
            ("gRPC", ["gRPC"]),
            ("both, total", ["both REST", "both gRPC"]),
        ):
            ratios = [
                sum(r[f"aserve {x}"].result.rps for x in labels)
                / sum(r[f"Triton {x}"].result.rps for x in labels)
                for r in rounds
                if all(f"Triton {x}" in r for x in labels)
            ]
            each = ", ".join(f"{v:.2f}" for v in ratios)
            lines.append(f"- {what}: **{float(np.median(ratios)):.2f}x** ({each})")
    lines += [
        "",
        "## Latency at one connection (tiny, no batching): served p50 against the in-process call",
        "",
        "| protocol | aserve p50 ms | in-process call p50 ms | difference ms |",
        "|---|---|---|---|",
    ]
    for protocol, (served, inprocess) in report.latency.items():
        lines.append(f"| {protocol} | {served:.3f} | {inprocess:.3f} | {served - inprocess:+.3f} |")
    lines += [
        "",
        f"## The MLP (784-2048-2048-10), one example per request, {MLP_CONCURRENCY} "
        "connections, batching on",
        "",
        "| protocol | examples/s | in-process ceiling at batch 32 | fraction "
        "| loop µs / request (outside TF) | process µs / request |",
        "|---|---|---|---|---|---|",
    ]
    for protocol, (examples, ceiling, cpu) in report.mlp.items():
        lines.append(
            f"| {protocol} | {examples:,.0f} | {ceiling:,.0f} | {examples / ceiling:.2f} "
            f"| {cpu.loop_us:.0f} | {cpu.process_us:.0f} |"
        )
    if report.hot is not None:
        from loadtests import hotpath

        lines += ["", hotpath.table(report.hot)]
    lines += [f"\n> {note}" for note in report.notes]
    return "\n".join(lines)


def _cpu(values: list[float]) -> str:
    return " / ".join("n/a" if math.isnan(v) else f"{v:.0f}" for v in values)


def _swap_row(label: str, r: LoadResult) -> str:
    cells = [label, r.requests, r.errors, f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.max_ms:.1f}"]
    return "| " + " | ".join(map(str, cells)) + " |"


def plot(path: Path, results: dict[str, dict[tuple[str, str, int], LoadResult]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (name, served) in zip(axes[0], results.items(), strict=True):
        for protocol in (*PROTOCOLS, *V2_PROTOCOLS):
            for mode in ("direct", "batching"):
                points = [
                    (r.examples_per_s, r.p50_ms)
                    for (p, m, _), r in served.items()
                    if (p, m) == (protocol, mode)
                ]
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(xs, ys, marker="o", label=f"{protocol} {mode}")
        ax.set(title=name, xlabel="examples/s", ylabel="p50 latency (ms)", yscale="log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="aserve-bench-"))
    if args.only is not None:
        parts = {
            "loop-lag": lambda: loop_lag_table(run_loop_lag(work, args)),
            "access-log": lambda: access_log_table(run_access_log(work, args)),
            "flood": lambda: flood_table(run_flood(work, args)),
            "soak": lambda: run_memory_part("soak", work, args.quick),
            "isolation": lambda: run_memory_part("isolation", work, args.quick),
            "speed": lambda: speed_tables(run_speed(work, args)),
            "replicas": lambda: run_replicas(work, args.quick),
        }
        report = parts[args.only]()
        print(report)
        (out / f"bench-{args.only}.md").write_text(report + "\n")
        shutil.rmtree(work, ignore_errors=True)
        return 0
    models = [MODELS[name] for name in args.models]
    heavy = [m for m in models if m.name != "tiny"]
    peer_steps = _peer_rounds(args) * (1 + (0 if args.no_peers else 3))  # aserve + PEERS
    runs = sum(len(protocols(m)) for m in models) * 2 * len(CONCURRENCIES)
    steps = len(models) + runs + 2 * len(heavy) + peer_steps + 2
    progress = Progress(steps)
    try:
        ceilings = {}
        for model in models:
            progress.step(f"{model.name}: building and measuring the in-process ceiling")
            path = build(model.name, work / "models" / model.name / "1")
            ceilings[model.name] = measure_ceiling(model, path, args)
        served: dict[str, dict[tuple[str, str, int], LoadResult]] = {m.name: {} for m in models}
        mean_batch: dict[str, dict[tuple[str, str, int], float]] = {m.name: {} for m in models}

        def measured(
            server: Served, model: BenchModel, key: tuple[str, str, int], **kw: Any
        ) -> None:
            """One load run (repeated if CPU was stolen); with batching, also the mean size
            of the batches it caused."""
            means: list[float | None] = []

            def attempt() -> LoadResult:
                examples, batches = server.batches(model.name)
                result = load(model, server, key[0], key[2], args, **kw)
                more_examples, more_batches = server.batches(model.name)
                done = more_batches - batches
                means.append((more_examples - examples) / done if done > 0 else None)
                return result

            what = f"{model.name} {key[0]} c={key[2]} {key[1]}"
            best, served[model.name][key] = least_stolen(attempt, **_steal_policy(args, what))
            if (mean := means[best]) is not None:
                mean_batch[model.name][key] = mean

        for batching in (False, True):
            mode = "batching" if batching else "direct"
            with aserve(work, models, batching=batching) as server:
                for model in models:
                    for protocol in protocols(model):
                        for c in CONCURRENCIES:
                            progress.step(f"{model.name} {protocol} c={c} {mode}")
                            measured(server, model, (protocol, mode, c))
                if batching:  # requests of several examples amortise the per-request cost
                    for model in heavy:
                        for protocol in ("REST", "gRPC"):
                            label = f"batching, {MULTI_EXAMPLE} examples/request"
                            progress.step(f"{model.name} {protocol} c=64 {label}")
                            measured(server, model, (protocol, label, 64), examples=MULTI_EXAMPLE)
        comparison = (
            compare_with_peers(work, args, progress)
            if "tiny" in served
            else PeerRounds([], ["peers compared on tiny only"])
        )
        progress.step("event-loop lag with large requests beside tiny ones")
        lag = run_loop_lag(work, args)
        progress.step("latency during version swaps")
        swap = run_swap(work, args)
    finally:
        progress.close()
    report = "\n\n".join(
        [
            steal_preamble(args),
            *(model_table(m, ceilings[m.name], served[m.name], mean_batch[m.name]) for m in models),
            peers_table(comparison),
            loop_lag_table(lag),
            swap_table(swap),
        ]
    )
    print(report)
    (out / "bench.md").write_text(report + "\n")
    (out / "bench.json").write_text(json.dumps(raw(ceilings, served, comparison, swap), indent=1))
    if args.plot:
        plot(out / "latency_vs_throughput.png", served)
        print(f"\nplot: {out / 'latency_vs_throughput.png'}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def run_memory_part(part: str, work: Path, quick: bool) -> str:
    """The soak (loadtests/soak.py) or the load-isolation run (loadtests/isolation.py)."""
    from loadtests import isolation, soak

    if part == "soak":
        argv = ["--mlp-cycles", "40", "--big-cycles", "4", "--big-every", "2"] if quick else []
        argv += ["--folder-swaps", "20", "--every", "10"] if quick else []
        rows, entries = soak.run_soak(work, soak.parse_args(argv))
        heading = "## Memory over load/unload cycles (loadtests/soak.py)"
        note = f"status entries of the rolling model at the end: {entries}"
        return "\n\n".join([heading, soak.table(rows), note])
    argv = ["--rounds", "1", "--duration", "10"] if quick else []
    windows = isolation.run_isolation(work, isolation.parse_args(argv))
    heading = "## Tiny latency while a 281 MB model loads and unloads (loadtests/isolation.py)"
    return "\n\n".join([heading, isolation.table(windows)])


def run_replicas(work: Path, quick: bool) -> str:
    """Three replicas behind HAProxy (loadtests/replicas.py)."""
    from loadtests import replicas

    argv = ["--duration", "2", "--rate", "100"] if quick else []
    report = replicas.run(work, replicas.parse_args(argv))
    heading = "## Replicas behind HAProxy (loadtests/replicas.py)"
    return "\n\n".join([heading, replicas.table(report)])


def run_swap(work: Path, args: argparse.Namespace) -> Any:
    from loadtests.swap import swap_run

    base = work / "swap"
    source = work / "models" / "tiny" / "1"
    if not source.exists():
        build("tiny", source)
    base.mkdir()
    shutil.copytree(source, base / "1")
    argv = [
        sys.executable,
        "-m",
        "aserve",
        "--model_name=swap",
        f"--model_base_path={base}",
        "--host=127.0.0.1",
        f"--rest_api_port={(rest := free_port())}",
        f"--port={free_port()}",
    ]
    with open(work / "aserve-swap.log", "w") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        try:
            status = f"http://127.0.0.1:{rest}/v1/models/swap"
            wait_available(status, process)
            return asyncio.run(
                swap_run(
                    url=f"{status}:predict",
                    body=payloads.rest_body(1.0),
                    status_url=status,
                    base=base,
                    source=source,
                    current=1,
                    swaps=args.swaps,
                    concurrency=8,
                )
            )
        finally:
            process.terminate()
            process.wait(30)


def raw(
    ceilings: dict[str, list[CeilingRow]],
    served: dict[str, dict[tuple[str, str, int], LoadResult]],
    peers: PeerRounds,
    swap: Any,
) -> dict[str, Any]:
    def summary(r: LoadResult) -> dict[str, Any]:
        return {
            "engine": r.engine,
            "requests": r.requests,
            "errors": r.errors,
            "rps": r.rps,
            "examples_per_s": r.examples_per_s,
            "p50_ms": r.p50_ms,
            "p90_ms": r.p90_ms,
            "p99_ms": r.p99_ms,
            "max_ms": r.max_ms,
            "steal": _stolen_or_none(r),
        }

    return {
        "ceilings": {
            name: [{**asdict(row), "steal": _stolen_or_none(row)} for row in rows]
            for name, rows in ceilings.items()
        },
        "served": {
            name: {f"{p} c={c} {m}": summary(r) for (p, m, c), r in rows.items()}
            for name, rows in served.items()
        },
        "peers": [{label: summary(r) for label, r in results.items()} for results in peers.rounds],
        "swap": {
            "swaps": swap.swaps,
            "steady": summary(swap.steady),
            "swapping": summary(swap.swapping),
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per served run")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="discarded seconds before each run"
    )
    parser.add_argument(
        "--ceiling-seconds", type=float, default=2.0, help="seconds per ceiling point"
    )
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument(
        "--engine",
        choices=["auto", "python"],
        default="auto",
        help="auto: wrk/h2load when installed; python: the Python generator",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip Triton and MLServer")
    parser.add_argument(
        "--peer-rounds",
        type=int,
        default=None,
        help="interleaved rounds of aserve and its peers (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--max-steal",
        type=float,
        default=10.0,
        help="percent of the CPU the hypervisor may steal during a run before it is run again",
    )
    parser.add_argument(
        "--steal-retries", type=int, default=2, help="at most this many repeats of a run"
    )
    parser.add_argument("--plot", action="store_true", help="write a latency-vs-throughput PNG")
    parser.add_argument("--quick", action="store_true", help="short runs (smoke check)")
    parser.add_argument("--out", default="bench-results")
    parser.add_argument(
        "--only",
        choices=["loop-lag", "access-log", "flood", "soak", "isolation", "speed", "replicas"],
        help="run only this part: the mixed loop-lag run, the access log's cost, the flood, "
        "the memory soak (loadtests/soak.py), the load-isolation run (loadtests/isolation.py), "
        "the speed run (front ends against Triton, fairness, latency, MLP, hot path) "
        "or the replicas behind HAProxy (loadtests/replicas.py)",
    )
    parser.add_argument("--flood-connections", type=int, default=2000)
    parser.add_argument("--flood-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.ceiling_seconds, args.swaps = 2.0, 0.5, 0.5, 5
    if args.peer_rounds is None:
        args.peer_rounds = 1 if args.quick else 3
    return args


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

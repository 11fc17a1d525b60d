"""Replicas behind a real balancer, on loopback: spread, scaling, rolling restart, rollout.

    python -m loadtests.replicas                 # about 2 minutes on 2 cores
    python -m loadtests.replicas --duration 4    # shorter load windows
    python bench.py --only replicas              # the same through bench.py

Three aserve processes (``python -m aserve`` from this checkout) serve one model folder that
they share, each on its own REST and gRPC port, behind HAProxy from Debian's ``haproxy``
package: HTTP/1.1 to the REST ports, HTTP/2 (``proto h2``) to the gRPC ports so that every
gRPC call is balanced on its own, and a health check on each replica's ``/v2/health/ready``
every 0.5 s (down at the first failure, up after two successes). It measures:

* **spread and scaling**: requests/s through the balancer with 1, 2 and 3 replicas in service
  (the others in maintenance), REST with wrk and gRPC with h2load, closed loop, and how the
  requests spread over the replicas (each replica's own request counters, from its metrics);
  one replica without the balancer for comparison;
* **rolling restart**: under open-loop load on both protocols through the balancer (the
  Python client, which checks every answer), each replica in turn gets SIGTERM (readiness
  503 at once, ``--drain_delay_seconds`` of serving while the balancer takes it out, then its
  drain), exits, is started again and waits for the balancer to take it back: the failed
  requests, which must be 0;
* **rollout**: under the same load, version 2 (y = 0.5 x + 3, where 1 is y = 0.5 x + 2, so
  every answer says which version served it) is copied into the shared folder: the time until
  every replica serves version 2 only, what the clients saw meanwhile, and the failures (0).

Every phase reports the CPU stolen by the hypervisor and the share other processes used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests import engines, payloads
from loadtests.http1 import build_post
from loadtests.loadgen import RestSender, http_error
from loadtests.soak import ROOT, Machine, free_port
from loadtests.stats import CpuTimes, LoadResult, error_samples
from loadtests.targets import rest_endpoint

MODEL = "tiny"
V1_SOURCE = ROOT / "examples" / "models" / "half_plus_two" / "1"
VERSION_OF_ANSWER = {2.5: 1, 3.5: 2}  # predict(1.0): half_plus_two, half_plus_three
METRICS_PATH = "/monitoring/prometheus/metrics"
CHECK_INTERVAL_MS = 500
TICKS = os.sysconf("SC_CLK_TCK")
_COUNT = re.compile(
    r'^:tensorflow:serving:request_latency_count\{model_name="([^"]*)",API="[^"]*",'
    r'entrypoint="(REST|GRPC)"\} (\d+)',
    re.M,
)


# -- the replicas --------------------------------------------------------------------------


@dataclass
class Replica:
    """One ``python -m aserve`` on fixed ports, stopped and started again in place."""

    index: int
    base: Path
    work: Path
    flags: Sequence[str]
    rest_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def start(self) -> None:
        argv = [sys.executable, "-m", "aserve", "--host=127.0.0.1", f"--port={self.grpc_port}"]
        argv += [f"--rest_api_port={self.rest_port}", f"--model_name={MODEL}"]
        argv += [f"--model_base_path={self.base}", *self.flags]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.pop("PYTHONPATH", None)
        with open(self.work / f"replica-{self.index}.log", "ab") as log:
            self.process = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=log, env=env)

    def wait_ready(self, timeout: float = 120) -> None:
        wait_for(lambda: self.ready(), timeout, f"replica {self.index} ready", self.alive)

    def alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            log = self.work / f"replica-{self.index}.log"
            raise RuntimeError(f"replica {self.index} exited {self.process.returncode}: see {log}")

    def ready(self) -> bool:
        return http_status(f"{self.url}/v2/health/ready") == 200

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def counts(self) -> dict[str, int]:
        """OK requests this process answered so far, by protocol (its request_latency counts)."""
        with urllib.request.urlopen(self.url + METRICS_PATH, timeout=10) as answer:
            page = answer.read().decode()
        counts = {"REST": 0, "GRPC": 0}
        for model, entrypoint, count in _COUNT.findall(page):
            if model == MODEL:
                counts[entrypoint] += int(count)
        return counts

    def versions(self) -> dict[int, str]:
        with urllib.request.urlopen(f"{self.url}/v1/models/{MODEL}", timeout=10) as answer:
            body = json.load(answer)
        return {int(v["version"]): v["state"] for v in body["model_version_status"]}

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def wait_for(
    done: Callable[[], bool], timeout: float, what: str, check: Callable[[], None] = lambda: None
) -> float:
    """Poll ``done`` every 20 ms; the seconds it took. ``check`` raises to give up early."""
    started = time.monotonic()
    while not done():
        check()
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not after {timeout:g} s")
        time.sleep(0.02)
    return time.monotonic() - started


# -- the balancer ----------------------------------------------------------------------------


def haproxy_config(replicas: Sequence[Replica], rest_port: int, grpc_port: int, sock: Path) -> str:
    check = f"check inter {CHECK_INTERVAL_MS}ms fall 1 rise 2"
    rest = "".join(f"    server r{r.index} 127.0.0.1:{r.rest_port} {check}\n" for r in replicas)
    grpc = "".join(
        f"    server g{r.index} 127.0.0.1:{r.grpc_port} proto h2 {check} port {r.rest_port} "
        "check-proto h1\n"
        for r in replicas
    )
    health = "    option httpchk GET /v2/health/ready\n    http-check expect status 200\n"
    return (
        "global\n    nbthread 1\n    maxconn 4000\n"
        f"    stats socket {sock} mode 600 level admin\n"
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n"
        "    timeout server 30s\n    timeout check 1s\n"
        "    retries 2\n    retry-on conn-failure\n    option redispatch\n"
        f"frontend rest\n    bind 127.0.0.1:{rest_port}\n    default_backend rest\n"
        f"backend rest\n    balance roundrobin\n{health}{rest}"
        f"frontend grpc\n    bind 127.0.0.1:{grpc_port} proto h2\n    default_backend grpc\n"
        f"backend grpc\n    balance roundrobin\n{health}{grpc}"
    )


@dataclass
class Balancer:
    """HAProxy in the foreground, driven and read through its admin socket."""

    process: subprocess.Popen[bytes]
    sock: Path
    rest_url: str
    grpc_target: str

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.sock))
            s.sendall(line.encode() + b"\n")
            return b"".join(iter(lambda: s.recv(65536), b"")).decode()

    def stats(self) -> dict[tuple[str, str], dict[str, str]]:
        text = self.command("show stat").lstrip("# ")
        return {(row["pxname"], row["svname"]): row for row in csv.DictReader(io.StringIO(text))}

    def up(self, index: int) -> bool:
        stats = self.stats()
        return all(stats[(b, f"{b[0]}{index}")]["status"] == "UP" for b in ("rest", "grpc"))

    def down(self, index: int) -> bool:
        stats = self.stats()
        return all(stats[(b, f"{b[0]}{index}")]["status"] != "UP" for b in ("rest", "grpc"))

    def in_service(self, count: int, replicas: Sequence[Replica]) -> None:
        """Only the first ``count`` replicas get requests; the others are in maintenance."""
        for r in replicas:
            state = "ready" if r.index < count else "maint"
            for backend in ("rest", "grpc"):
                self.command(f"set server {backend}/{backend[0]}{r.index} state {state}")
        for r in replicas[:count]:
            wait_for(lambda r=r: self.up(r.index), 30, f"replica {r.index} up in the balancer")

    def retries(self) -> int:
        """Requests HAProxy retried or redispatched (after a connection failure)."""
        stats = self.stats()
        return sum(int(stats[(b, "BACKEND")]["wretr"] or 0) for b in ("rest", "grpc")) + sum(
            int(stats[(b, "BACKEND")]["wredis"] or 0) for b in ("rest", "grpc")
        )


@contextlib.contextmanager
def balancer(replicas: Sequence[Replica], work: Path) -> Iterator[Balancer]:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(binary):
        raise SystemExit("haproxy not found: apt-get install haproxy")
    rest_port, grpc_port, sock = free_port(), free_port(), work / "haproxy.sock"
    config = work / "haproxy.cfg"
    config.write_text(haproxy_config(replicas, rest_port, grpc_port, sock))
    with open(work / "haproxy.log", "wb") as log:
        process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log, stderr=log)
    lb = Balancer(process, sock, f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}")
    try:
        wait_for(sock.exists, 10, "haproxy's socket")
        for r in replicas:
            wait_for(lambda r=r: lb.up(r.index), 30, f"replica {r.index} up in the balancer")
        yield lb
    finally:
        process.terminate()
        process.wait(10)


# -- a checking client: every answer counted, and the version that gave it -----------------


@dataclass
class Tally:
    """Outcomes of one protocol's requests: successes by version (with the last time each
    version answered), failures with samples."""

    ok: dict[int, int] = field(default_factory=dict)
    last_seen: dict[int, float] = field(default_factory=dict)
    first_seen: dict[int, float] = field(default_factory=dict)
    failed: int = 0
    texts: list[str] = field(default_factory=list)

    def record(self, outcome: int | str) -> None:
        if isinstance(outcome, str):
            self.failed += 1
            self.texts.append(outcome)
            return
        now = time.monotonic()
        self.ok[outcome] = self.ok.get(outcome, 0) + 1
        self.first_seen.setdefault(outcome, now)
        self.last_seen[outcome] = now

    @property
    def requests(self) -> int:
        return sum(self.ok.values()) + self.failed


class RestCheck:
    """Keep-alive POSTs through the balancer; the answer's value names the version."""

    def __init__(self, url: str) -> None:
        endpoint = rest_endpoint(f"{url}/v1/models/{MODEL}:predict")
        self._sender = RestSender(endpoint, build_post(endpoint, payloads.rest_body(1.0)))

    async def send(self) -> int | str:
        response = await self._sender.exchange()
        if isinstance(response, str):
            return response
        if response.status != 200:
            return http_error(response)
        return version_of(json.loads(response.body)["predictions"][0])


class GrpcCheck:
    def __init__(self, stub: Any) -> None:
        self._stub = stub
        self._request = payloads.predict_request(MODEL, 1.0)

    async def send(self) -> int | str:
        import grpc

        try:
            answer = await self._stub.Predict(self._request, timeout=30)
        except grpc.aio.AioRpcError as e:
            return f"{e.code().name}: {e.details()}"
        return version_of(answer.outputs["y"].float_val[0])


def version_of(y: float) -> int | str:
    return VERSION_OF_ANSWER.get(round(y, 3), f"unexpected answer {y}")


async def steady_load(
    senders: Sequence[RestCheck | GrpcCheck], rate: float, stop: asyncio.Event
) -> Tally:
    """Open loop: one request every 1/``rate`` s, through whichever sender is free, until
    ``stop``; then every request still out is awaited (30 s at most: then it failed)."""
    free: asyncio.Queue[RestCheck | GrpcCheck] = asyncio.Queue()
    for sender in senders:
        free.put_nowait(sender)
    tally, tasks = Tally(), set()

    async def one() -> None:
        sender = await free.get()
        try:
            tally.record(await sender.send())
        finally:
            free.put_nowait(sender)

    due = time.perf_counter()
    while not stop.is_set():
        task = asyncio.ensure_future(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        due += 1 / rate
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(due - time.perf_counter(), 0))
    if tasks:
        finished, late = await asyncio.wait(set(tasks), timeout=30)
        for task in late:
            task.cancel()
            tally.record("no answer within 30 s of the end")
    return tally


@dataclass(frozen=True)
class Usage:
    """CPU seconds used so far: by the machine, and by each of our parts."""

    machine: Machine | None  # busy and total jiffies of the whole machine
    clock: CpuTimes | None
    aserve: float  # the replicas running now
    haproxy: float
    client: float  # this process and its reaped children: wrk, h2load, restarted replicas

    @classmethod
    def now(cls, lb: Balancer, replicas: Sequence[Replica]) -> Usage:
        me = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        running = [r.process.pid for r in replicas if r.process is not None]
        return cls(
            machine=Machine.now([]),
            clock=CpuTimes.now(),
            aserve=sum(map(process_seconds, running)),
            haproxy=process_seconds(lb.process.pid),
            client=me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime,
        )

    def since(self, earlier: Usage) -> Spent:
        aserve, haproxy = self.aserve - earlier.aserve, self.haproxy - earlier.haproxy
        client = self.client - earlier.client
        others = steal = math.nan
        if self.machine is not None and earlier.machine is not None:
            total = self.machine.total - earlier.machine.total
            busy = (self.machine.busy - earlier.machine.busy) / TICKS - aserve - haproxy - client
            others = max(busy, 0) * TICKS / total if total > 0 else math.nan
        if self.clock is not None:
            steal = self.clock.steal_since(earlier.clock)
        return Spent(aserve, haproxy, client, others, steal)


@dataclass(frozen=True)
class Spent:
    aserve: float
    haproxy: float
    client: float
    others: float  # share of the machine's CPU other processes used
    steal: float  # share the hypervisor gave to other guests


def process_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


@dataclass
class Checked:
    """REST and gRPC tallies of a phase, with the machine's state while it ran."""

    rest: Tally
    grpc: Tally
    seconds: float
    spent: Spent
    retries: int


async def under_load(
    lb: Balancer, replicas: Sequence[Replica], rate: float, operation: Callable[[], Any]
) -> tuple[Checked, Any]:
    """Run ``operation`` (blocking, in a thread) while both protocols are loaded at ``rate``
    requests/s each through the balancer; the tallies and what ``operation`` returned."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channels = [grpc.aio.insecure_channel(lb.grpc_target) for _ in range(4)]
    stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]
    rest = [RestCheck(lb.rest_url) for _ in range(32)]
    calls = [GrpcCheck(stubs[i % len(stubs)]) for i in range(32)]
    stop = asyncio.Event()
    usage, retries, started = Usage.now(lb, replicas), lb.retries(), time.monotonic()
    loads = [asyncio.ensure_future(steady_load(s, rate, stop)) for s in (rest, calls)]
    await asyncio.sleep(1)  # the load is steady before the operation starts
    try:
        result = await asyncio.to_thread(operation)
        await asyncio.sleep(1)
    finally:
        stop.set()
        rest_tally, grpc_tally = await asyncio.gather(*loads)
        await asyncio.gather(*(c.close() for c in channels))
    spent = Usage.now(lb, replicas).since(usage)
    seconds = time.monotonic() - started
    return Checked(rest_tally, grpc_tally, seconds, spent, lb.retries() - retries), result


# -- the phases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    protocol: str  # "REST" (wrk) or "gRPC" (h2load)
    replicas: int
    via: str  # "haproxy" or "direct"
    result: LoadResult
    shares: tuple[float, ...]  # of the requests, per replica in service
    spent: Spent

    def us_per_request(self, seconds: float) -> float:
        answered = self.result.requests - self.result.errors
        return seconds / answered * 1e6 if answered else math.nan


def scaling(lb: Balancer, replicas: Sequence[Replica], args: argparse.Namespace) -> list[Point]:
    """Closed-loop throughput with 1..N replicas in service, and one replica direct."""
    request = payloads.predict_request(MODEL, 1.0)
    body = payloads.rest_body(1.0)
    load = {"connections": args.connections, "seconds": args.duration}
    first = replicas[0]
    targets = [("direct", 1, first.url, f"127.0.0.1:{first.grpc_port}")]
    targets += [("haproxy", k, lb.rest_url, lb.grpc_target) for k in range(1, len(replicas) + 1)]
    points = []
    for via, count, url, target in targets:
        lb.in_service(count if via == "haproxy" else len(replicas), replicas)
        runs: list[tuple[str, Callable[[], LoadResult]]] = [
            ("REST", lambda url=url: _wrk(f"{url}/v1/models/{MODEL}:predict", body, **load)),
            ("GRPC", lambda target=target: _h2load(target, request, **load)),
        ]
        for protocol, measure in runs:
            counts, usage = [r.counts() for r in replicas], Usage.now(lb, replicas)
            result = measure()
            spent = Usage.now(lb, replicas).since(usage)
            shares = _shares(counts, [r.counts() for r in replicas], protocol)[:count]
            name = "gRPC" if protocol == "GRPC" else protocol
            points.append(Point(name, count, via, result, shares, spent))
            print(f"  {name} {via} x{count}: {result.rps:,.0f}/s", file=sys.stderr)
    lb.in_service(len(replicas), replicas)
    return points


def _wrk(url: str, body: bytes, *, connections: int, seconds: float) -> LoadResult:
    return engines.run_wrk(url, body, concurrency=connections, duration_s=seconds, warmup_s=1)


def _h2load(target: str, request: Any, *, connections: int, seconds: float) -> LoadResult:
    return engines.run_h2load(
        target, request, concurrency=connections, duration_s=seconds, warmup_s=1
    )


def _shares(
    before: list[dict[str, int]], after: list[dict[str, int]], protocol: str
) -> tuple[float, ...]:
    served = [a[protocol] - b[protocol] for a, b in zip(after, before, strict=True)]
    total = sum(served) or 1
    return tuple(s / total for s in served)


@dataclass(frozen=True)
class Restart:
    index: int
    out_of_balancer_s: float  # SIGTERM -> the balancer stops sending it requests
    exit_s: float  # SIGTERM -> the process exited
    exit_status: int
    back_s: float  # started again -> the balancer sends it requests again


def rolling_restart(lb: Balancer, replicas: Sequence[Replica]) -> list[Restart]:
    """SIGTERM each replica in turn; start it again once it exited; wait until it is back."""
    restarts = []
    for r in replicas:
        signalled = time.monotonic()
        r.terminate()
        out = wait_for(lambda r=r: lb.down(r.index), 30, f"replica {r.index} out")
        status = r.wait_exit()
        exited = time.monotonic() - signalled
        restarted = time.monotonic()
        r.start()
        r.wait_ready()
        wait_for(lambda r=r: lb.up(r.index), 30, f"replica {r.index} back", r.alive)
        restarts.append(Restart(r.index, out, exited, status, time.monotonic() - restarted))
    return restarts


@dataclass(frozen=True)
class Rollout:
    copied: float  # time.monotonic() of the copy, to place the clients' answers
    switched_s: tuple[float, ...]  # per replica: copy -> version 2 AVAILABLE and 1 gone
    all_s: float


def rollout(base: Path, v2: Path, replicas: Sequence[Replica]) -> Rollout:
    staging = base / ".staging-2"
    shutil.copytree(v2, staging)
    copied = time.monotonic()
    os.rename(staging, base / "2")  # appears at once, as a deploy tool does it
    pending = {r.index: r for r in replicas}
    switched: dict[int, float] = {}
    while pending:
        for index, r in list(pending.items()):
            states = r.versions()
            if states.get(2) == "AVAILABLE" and states.get(1, "END") == "END":
                switched[index] = time.monotonic() - copied
                del pending[index]
        if time.monotonic() - copied > 120:
            raise TimeoutError(f"replicas {sorted(pending)} still serve version 1")
        time.sleep(0.02)
    by_replica = tuple(switched[r.index] for r in replicas)
    return Rollout(copied, by_replica, max(by_replica))


async def correctness(
    lb: Balancer,
    replicas: Sequence[Replica],
    base: Path,
    v2: Path,
    rate: float,
) -> tuple[Checked, list[Restart], Checked, Rollout]:
    """The rolling restart, then the rollout, each under load (one event loop for both)."""
    print("rolling restart under load", file=sys.stderr)
    restart, restarts = await under_load(lb, replicas, rate, lambda: rolling_restart(lb, replicas))
    print("version rollout under load", file=sys.stderr)
    rolled, outcome = await under_load(lb, replicas, rate, lambda: rollout(base, v2, replicas))
    return restart, restarts, rolled, outcome


# -- the run ---------------------------------------------------------------------------------


def build_version_2(folder: Path) -> Path:
    """half_plus_three (y = 0.5 x + 3), input ``x`` float [None], output ``y``."""
    import tensorflow as tf

    class HalfPlusThree(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": 0.5 * x + 3.0}

    module = HalfPlusThree()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return folder


@dataclass(frozen=True)
class Report:
    points: list[Point]
    restart: Checked
    restarts: list[Restart]
    roll: Checked
    rollout: Rollout


def run(work: Path, args: argparse.Namespace) -> Report:
    base = work / "models" / MODEL
    shutil.copytree(V1_SOURCE, base / "1")
    v2 = build_version_2(work / "v2")
    monitoring = work / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    flags = [
        f"--monitoring_config_file={monitoring}",
        "--file_system_poll_wait_seconds=1",
        f"--drain_delay_seconds={args.drain_delay}",
        "--shutdown_grace_seconds=10",
    ]
    replicas = [Replica(i, base, work, flags) for i in range(args.replicas)]
    try:
        for r in replicas:
            r.start()
        for r in replicas:
            r.wait_ready()
        with balancer(replicas, work) as lb:
            print("spread and scaling", file=sys.stderr)
            points = scaling(lb, replicas, args)
            restart, restarts, rolled, outcome = asyncio.run(
                correctness(lb, replicas, base, v2, args.rate)
            )
    finally:
        for r in replicas:
            r.kill()
    return Report(points, restart, restarts, rolled, outcome)


# -- the tables ------------------------------------------------------------------------------


def scaling_table(points: list[Point]) -> str:
    header = ["protocol", "replicas", "via", "req/s", "per replica", "errors"]
    header += ["CPU µs/request: aserve", "haproxy", "load client", "others' CPU", "steal"]
    rows = []
    for p in points:
        spread = " / ".join(f"{s:.0%}" for s in p.shares) if p.via == "haproxy" else "-"
        haproxy = p.us_per_request(p.spent.haproxy) if p.via == "haproxy" else math.nan
        cpu = [p.us_per_request(p.spent.aserve), haproxy, p.us_per_request(p.spent.client)]
        rows.append(
            [p.protocol, p.replicas, p.via, f"{p.result.rps:,.0f}", spread, p.result.errors]
            + [_known(c, ".0f") for c in cpu]
            + [_pct(p.spent.others), _pct(p.spent.steal)]
        )
    return markdown(header, rows)


def checked_line(name: str, checked: Checked) -> str:
    rest, grpc = checked.rest, checked.grpc
    samples = error_samples(rest.texts + grpc.texts)
    return (
        f"{name}: {rest.requests:,} REST + {grpc.requests:,} gRPC requests in "
        f"{checked.seconds:.1f} s, failed: {rest.failed} REST, {grpc.failed} gRPC"
        + (f" ({'; '.join(samples)})" if samples else "")
        + f"; balancer retries {checked.retries}; others' CPU {_pct(checked.spent.others)}, "
        f"steal {_pct(checked.spent.steal)}"
    )


def restart_table(restarts: list[Restart]) -> str:
    header = ["replica", "SIGTERM -> out of the balancer", "SIGTERM -> exit", "exit status"]
    header.append("start -> back in the balancer")
    rows = [
        [r.index, f"{r.out_of_balancer_s:.2f} s", f"{r.exit_s:.2f} s", r.exit_status]
        + [f"{r.back_s:.2f} s"]
        for r in restarts
    ]
    return markdown(header, rows)


def rollout_lines(report: Report) -> str:
    roll, copied = report.roll, report.rollout.copied
    per_replica = ", ".join(f"{s:.2f} s" for s in report.rollout.switched_s)
    lines = [
        f"version 2 copied in: every replica served only version 2 after "
        f"{report.rollout.all_s:.2f} s (per replica: {per_replica})"
    ]
    for name, tally in (("REST", roll.rest), ("gRPC", roll.grpc)):
        first_v2 = tally.first_seen.get(2, math.nan) - copied
        last_v1 = tally.last_seen.get(1, math.nan) - copied
        lines.append(
            f"{name} clients: version 1 answered {tally.ok.get(1, 0):,} times, version 2 "
            f"{tally.ok.get(2, 0):,}; first version 2 answer {first_v2:.2f} s after the copy, "
            f"last version 1 answer {last_v1:.2f} s after it"
        )
    lines.append(checked_line("rollout", roll))
    return "\n".join(f"- {line}" for line in lines)


def table(report: Report) -> str:
    return "\n\n".join(
        [
            scaling_table(report.points),
            "- " + checked_line("rolling restart", report.restart),
            restart_table(report.restarts),
            rollout_lines(report),
        ]
    )


def _pct(value: float) -> str:
    return _known(value, ".0%")


def _known(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def markdown(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6, help="seconds per load window")
    parser.add_argument("--connections", type=int, default=32, help="wrk and h2load")
    parser.add_argument("--rate", type=float, default=300, help="requests/s per protocol")
    parser.add_argument("--drain-delay", type=float, default=2, help="--drain_delay_seconds")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aserve-replicas-") as tmp:
        report = run(Path(tmp), args)
    print(table(report))
    failed = report.restart.rest.failed + report.restart.grpc.failed
    failed += report.roll.rest.failed + report.roll.grpc.failed
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

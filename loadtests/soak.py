"""The soak run: load and unload models again and again; does the memory come back?

    python -m loadtests.soak                                   # about 4 minutes on 2 cores
    python -m loadtests.soak --mlp-cycles 40 --big-cycles 4 --folder-swaps 0   # smoke
    python -m loadtests.soak --env TF_ONEDNN_USE_SYSTEM_ALLOCATOR=0           # server env
    python -m loadtests.soak --env LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
    python -m loadtests.soak --aserve-root /path/to/another/checkout          # before/after

One aserve process (started here, loopback only) serves ``tiny`` throughout. Three phases:

* **mlp** (``--mlp-cycles``, default 200): add the compute-heavy MLP
  (loadtests/models.py) with a gRPC ``HandleReloadConfigRequest`` (it returns once the model
  is AVAILABLE), send it one Predict, remove it with a second reload and wait until its
  status (``GET /v1/models/<name>``) says END;
* **big** (``--big-cycles``, default 20, a reading every ``--big-every`` = 5): the same with
  a ~70M-parameter (281 MB) MLP built here (:func:`build_big`);
* **folders** (``--folder-swaps``, default 100): rolling versions of the MLP under one base
  path, as a deploy tool makes them: version N+1 appears (hard links), N+1 is AVAILABLE and
  N is END, folder N goes.

The server's resident memory (VmRSS, and RssAnon without the mapped files) is read at the
start (tiny loaded, nothing cycled yet), after every ``--every`` cycles, and at the end of
each phase, each time one second after the last unload ended, so that the unload's reclaim
step has run. *Drift* is the growth from the first checkpoint of a phase (the first cycles
import and cache what later ones reuse) to its end; the goal is under 5 %. Every row also
has the server's event-loop lag (its ``:aserve:event_loop_lag`` histogram, bucket upper
bounds), the share of the CPU stolen by the hypervisor and the share used by other
processes (the machine is shared) while the row's cycles ran.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtests import looplag
from loadtests.models import MODELS, build
from loadtests.stats import CpuTimes

METRICS_PATH = "/monitoring/prometheus/metrics"
ROOT = Path(__file__).resolve().parent.parent
BIG_WIDTHS = (784, 4096, 4096, 4096, 4096, 4096, 10)  # 70.4M float32 parameters, 281 MB


def build_big(version_dir: Path, *, constants: bool = False) -> Path:
    """A SavedModel of at least 200 MB: an MLP 784-4096x5-10, input ``x`` [batch, 784].

    Its weights are variables (restored from the checkpoint at load), or with ``constants``
    constants in the graph itself, as in a frozen TF1 graph (a 281 MB ``saved_model.pb``).
    """
    import tensorflow as tf

    widths = BIG_WIDTHS
    shapes = list(zip(widths, widths[1:], strict=False))
    weights = [
        tf.random.stateless_normal([a, b], seed=[3, i]) * 0.01 for i, (a, b) in enumerate(shapes)
    ]

    class Big(tf.Module):
        def __init__(self) -> None:
            self.w = weights if constants else [tf.Variable(w) for w in weights]

        @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            h = x
            for w in self.w[:-1]:
                h = tf.nn.relu(h @ w)
            return {"scores": tf.nn.softmax(h @ self.w[-1])}

    module = Big()
    tf.saved_model.save(module, str(version_dir), signatures={"serving_default": module.serve})
    return version_dir


def build_models(work: Path, names: Sequence[str]) -> dict[str, Path]:
    """Version 1 of each named model under ``work`` (``tiny``, ``mlp``, ``big``,
    ``big-constants``): their base paths."""
    bases = {}
    for name in names:
        version = work / "models" / name / "1"
        if not version.exists():
            if name.startswith("big"):
                build_big(version, constants=name == "big-constants")
            else:
                build(name, version)
        bases[name] = version.parent
    return bases


# -- how busy the rest of the machine was ------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """CPU time (jiffies) the machine spent busy, and the part our own processes spent.

    The machine is shared: a test suite or another benchmark running beside this one takes
    cores just as the hypervisor's steal does, and ``others_since`` says how much.
    """

    total: int
    busy: int
    ours: int

    @classmethod
    def now(cls, pids: Sequence[int]) -> Machine | None:
        try:
            with open("/proc/stat") as f:
                values = [int(v) for v in f.readline().split()[1:9]]
            ours = 0
            for pid in pids:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                ours += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq, _steal = values
        return cls(sum(values), user + nice + system + irq + softirq, ours)

    def others_since(self, earlier: Machine | None) -> float:
        """Share (0..1) of the machine's CPU that other processes used since ``earlier``."""
        if earlier is None or self.total <= earlier.total:
            return math.nan
        others = (self.busy - earlier.busy) - (self.ours - earlier.ours)
        return max(others, 0) / (self.total - earlier.total)


# -- one aserve process ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    rest: str  # http://127.0.0.1:port
    grpc: str  # 127.0.0.1:port
    log: Path

    @property
    def metrics_url(self) -> str:
        return self.rest + METRICS_PATH

    def machine(self) -> Machine | None:
        """The machine's CPU clock, ours being this process and the server."""
        return Machine.now([os.getpid(), self.process.pid])

    def memory_mb(self) -> tuple[float, float]:
        """(VmRSS, RssAnon) of the server process, MiB."""
        found = {}
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon"):
                    found[key] = int(value.split()[0]) / 1024
        return found["VmRSS"], found["RssAnon"]

    def lag(self) -> dict[float, float]:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return looplag.lag_buckets(response.read().decode())

    def states(self, name: str) -> dict[int, str]:
        """Version -> state from the REST status API ({} when the model is unknown)."""
        try:
            with urllib.request.urlopen(f"{self.rest}/v1/models/{name}", timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return {}
            raise
        return {int(v["version"]): v["state"] for v in body["model_version_status"]}


def config_text(models: dict[str, Path]) -> str:
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}\n'
        for name, path in models.items()
    )
    return f"model_config_list {{\n{entries}}}\n"


@contextlib.contextmanager
def serve(
    work: Path,
    models: dict[str, Path],
    *,
    root: Path = ROOT,
    env: dict[str, str] | None = None,
    flags: Sequence[str] = (),
    name: str = "aserve",
) -> Iterator[Server]:
    """``python -m aserve`` (run from ``root``) serving ``models``, until every one is AVAILABLE."""
    config = work / f"{name}.config"
    config.write_text(config_text(models))
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
        *flags,
    ]
    log_path = work / f"{name}.log"
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    if "PYTHONPATH" not in (env or {}):  # ``root`` first: the aserve that runs is root's
        environment.pop("PYTHONPATH", None)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            argv, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=environment
        )
        server = Server(process, f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc}", log_path)
        try:
            for model in models:
                wait_for(lambda m=model: server.states(m).get(1) == "AVAILABLE", server, 120)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for(predicate: Callable[[], bool], server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"aserve exited with {server.process.returncode}: see {server.log}")
        with contextlib.suppress(OSError, ValueError, KeyError):
            if predicate():
                return
        time.sleep(0.05)
    raise TimeoutError(f"not done after {timeout} s (see {server.log})")


class Reloader:
    """gRPC ``HandleReloadConfigRequest`` with the official stubs."""

    def __init__(self, target: str) -> None:
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self._channel = grpc.insecure_channel(target)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def reload(self, models: dict[str, Path]) -> None:
        from google.protobuf import text_format
        from tensorflow_serving.apis import model_management_pb2

        request = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(config_text(models), request.config)
        response = self._models.HandleReloadConfigRequest(request, timeout=120)
        if response.status.error_code:
            raise RuntimeError(f"reload failed: {response.status.error_message}")

    def predict(self, name: str) -> None:
        from loadtests.payloads import predict_request

        example = MODELS["mlp"].example().tolist()  # mlp and big both take x [batch, 784]
        self._predict.Predict(predict_request(name, example, 8), timeout=60)

    def close(self) -> None:
        self._channel.close()


# -- the soak ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    phase: str
    cycles: int  # cycles of this phase done
    rss_mb: float
    anon_mb: float
    seconds: float  # since the previous checkpoint
    steal: float
    others: float  # share of the machine's CPU used by other processes
    lag_p99_ms: float
    lag_max_ms: float


class Soak:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.rows: list[Checkpoint] = []
        self._mark()

    def _mark(self) -> None:
        self._clock, self._lag, self._time = CpuTimes.now(), self.server.lag(), time.monotonic()
        self._machine = self.server.machine()

    def checkpoint(self, phase: str, cycles: int) -> None:
        time.sleep(1.0)  # the unload's reclaim step runs after END is reported
        rss, anon = self.server.memory_mb()
        now = CpuTimes.now()
        steal = now.steal_since(self._clock) if now is not None else math.nan
        machine = self.server.machine()
        others = machine.others_since(self._machine) if machine is not None else math.nan
        p99, highest, _ = looplag.lag_summary(self._lag, self.server.lag())
        seconds = time.monotonic() - self._time
        self.rows.append(Checkpoint(phase, cycles, rss, anon, seconds, steal, others, p99, highest))
        print(
            f"  {phase:8} {cycles:4d} cycles  RSS {rss:7.1f} MB  anon {anon:7.1f} MB  "
            f"lag max {highest:6.1f} ms  stolen {steal:.0%}  others {others:.0%}",
            file=sys.stderr,
            flush=True,
        )
        self._mark()

    def cycles(self, phase: str, count: int, every: int, cycle: Callable[[int], None]) -> None:
        """``cycle(i)`` for i = 1..count, a checkpoint after every ``every`` and the last."""
        for i in range(1, count + 1):
            cycle(i)
            if i % every == 0 or i == count:
                self.checkpoint(phase, i)


def reload_cycle(
    server: Server,
    reloader: Reloader,
    base: dict[str, Path],
    name: str,
    path: Path,
    *,
    predict: bool = True,
) -> None:
    """Add ``name`` (returns once AVAILABLE), one Predict, remove it, wait for its END."""
    reloader.reload({**base, name: path})
    if predict:
        reloader.predict(name)
    reloader.reload(base)
    wait_for(lambda: server.states(name).get(1) == "END", server)


def link_version(source: Path, base: Path, version: int) -> None:
    staging = base / f".staging-{version}"
    shutil.copytree(source, staging, copy_function=os.link)
    os.rename(staging, base / str(version))  # appears at once, as a deploy tool makes it


def folder_cycle(server: Server, base: Path, source: Path, new: int) -> None:
    link_version(source, base, new)
    wait_for(lambda: _swapped(server.states("rolling"), new), server)
    shutil.rmtree(base / str(new - 1))


def _swapped(states: dict[int, str], new: int) -> bool:
    if states.get(new) == "END":
        raise RuntimeError(f"version {new} failed to load: {states}")
    return states.get(new) == "AVAILABLE" and states.get(new - 1) == "END"


def run_soak(work: Path, args: argparse.Namespace) -> tuple[list[Checkpoint], int]:
    """All phases against one server; returns the checkpoints and the status entries left."""
    names = ["tiny", "mlp"] + (["big"] if args.big_cycles else [])
    paths = build_models(work, names)
    models = {"tiny": paths["tiny"]}
    rolling = work / "rolling"
    if args.folder_swaps:
        shutil.rmtree(rolling, ignore_errors=True)
        rolling.mkdir()
        link_version(paths["mlp"] / "1", rolling, 1)
        models["rolling"] = rolling
    flags = ["--file_system_poll_wait_seconds=1", *args.flag]
    env = dict(e.split("=", 1) for e in args.env)
    with serve(work, models, root=Path(args.aserve_root), env=env, flags=flags) as server:
        reloader = Reloader(server.grpc)
        soak = Soak(server)
        soak.checkpoint("start", 0)
        try:
            phases = (
                ("mlp", args.mlp_cycles, args.every),
                ("big", args.big_cycles, args.big_every),
            )
            for phase, count, every in phases:

                def cycle(_: int, name: str = phase) -> None:
                    reload_cycle(server, reloader, models, name, paths[name])

                if count:
                    soak.cycles(phase, count, every, cycle)
            if args.folder_swaps:
                source = paths["mlp"] / "1"

                def swap(i: int) -> None:
                    folder_cycle(server, rolling, source, i + 1)

                soak.cycles("folders", args.folder_swaps, args.every, swap)
            entries = len(server.states("rolling")) if args.folder_swaps else 0
        finally:
            reloader.close()
    return soak.rows, entries


def drift(rows: list[Checkpoint], phase: str) -> tuple[float, float]:
    """(growth from the phase's first checkpoint to its last, from the start), as shares."""
    mine = [r for r in rows if r.phase == phase]
    start = rows[0].rss_mb
    if len(mine) < 2:
        return math.nan, mine[-1].rss_mb / start - 1 if mine else math.nan
    return mine[-1].rss_mb / mine[0].rss_mb - 1, mine[-1].rss_mb / start - 1


def table(rows: list[Checkpoint]) -> str:
    lines = [
        "| phase | cycles | RSS MB | RssAnon MB | vs start | s per cycle "
        "| loop lag p99 ms | loop lag max ms | CPU stolen | CPU used by others |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    start = rows[0].rss_mb
    previous: dict[str, int] = {}
    for r in rows:
        done = r.cycles - previous.get(r.phase, 0)
        previous[r.phase] = r.cycles
        per_cycle = f"{r.seconds / done:.2f}" if done > 0 else "-"
        cells = [
            r.phase,
            str(r.cycles),
            f"{r.rss_mb:.1f}",
            f"{r.anon_mb:.1f}",
            f"{r.rss_mb / start - 1:+.1%}",
            per_cycle,
            _ms(r.lag_p99_ms),
            _ms(r.lag_max_ms),
            _share(r.steal),
            _share(r.others),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for phase in dict.fromkeys(r.phase for r in rows if r.phase != "start"):
        after_first, total = drift(rows, phase)
        drifted = "-" if math.isnan(after_first) else f"{after_first:+.1%}"
        lines.append(
            f"\n{phase}: drift after the first checkpoint {drifted} "
            f"(goal under 5 %), {total:+.1%} from the start"
        )
    return "\n".join(lines)


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def _share(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0%}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlp-cycles", type=int, default=200)
    parser.add_argument("--big-cycles", type=int, default=20)
    parser.add_argument("--folder-swaps", type=int, default=100)
    parser.add_argument("--every", type=int, default=20, help="cycles between RSS readings")
    parser.add_argument(
        "--big-every", type=int, default=5, help="big-model cycles between RSS readings"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="server environment"
    )
    parser.add_argument(
        "--flag", action="append", default=[], metavar="--NAME=VALUE", help="a server flag"
    )
    parser.add_argument("--aserve-root", default=str(ROOT), help="run this checkout's aserve")
    parser.add_argument("--work", help="build models here and keep them (default: a temp dir)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="aserve-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rows, entries = run_soak(work, args)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(table(rows))
    if args.folder_swaps:
        print(f"\nstatus entries of the rolling model after {args.folder_swaps} swaps: {entries}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

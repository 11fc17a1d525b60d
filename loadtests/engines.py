"""External load engines for peak-throughput runs: ``wrk`` (REST) and ``h2load`` (gRPC).

Both are C programs that cost the shared 2 cores far less than the Python generator,
and both run **closed loop** only (``concurrency`` connections, one request in flight
each). They return the same :class:`~loadtests.stats.LoadResult`.

Missing binaries: check :func:`wrk_available` / :func:`h2load_available` first; the
``run_*`` functions raise :class:`EngineUnavailable` when the binary is not on PATH
(Debian packages ``wrk`` and ``nghttp2-client``), and :class:`EngineFailed` when it
runs but gives no usable report (e.g. nothing listens on the port).

**wrk** POSTs the body through a generated Lua script, with ``--latency``. Its report
gives requests, the real duration, latency p50/p90/p99 and max (no per-request list).
``requests`` = responses + socket errors; ``errors`` = "Non-2xx or 3xx responses" +
socket errors (connect, read, write, timeout). wrk cannot show bodies, so one request
sent with a small client before the run supplies the error sample, if it fails.

**h2load** speaks HTTP/2 with prior knowledge and sends the gRPC framing by hand: the
body is 1 byte 0 (uncompressed) + 4-byte big-endian length + the serialized
``PredictRequest``, with ``content-type: application/grpc`` and ``te: trailers``, to
``/tensorflow.serving.PredictionService/Predict``, ``-c C -m 1``, for ``-D`` seconds.
Per-request latencies come from its ``--log-file``.

h2load does not read gRPC trailers, and a gRPC error is an HTTP 200 too, so **errors are
detected by size**. Before the run, the same request is sent once with the official
stub and its serialized response size S noted. A successful answer is one DATA message
of exactly S + 5 bytes; an error is a trailers-only response with no DATA at all. So
the number of good answers is h2load's ``traffic: ... data`` byte count / (S + 5), and
the rest of the completed requests are errors (plus h2load's own failed streams and
non-2xx statuses). This assumes every good answer has the same size, which holds for
fixed-shape numeric outputs of one model version; if the pre-flight call itself fails,
every answer counts as an error. The log file cannot tell good from bad answers, so
when there are errors its latencies include theirs. :func:`run_h2load_raw` does the same for any
unary method and pre-serialized body (peer servers' own APIs); given no expected size,
it measures one with a generic bytes-in, bytes-out call. h2load's ``--warm-up-time`` counts
warm-up traffic in its byte totals, so warm-up is a separate, discarded run instead.
"""

from __future__ import annotations

import http.client
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loadtests.stats import LoadResult, Percentiles, error_samples
from loadtests.targets import PREDICT_PATH, Endpoint, grpc_endpoint, rest_endpoint

if TYPE_CHECKING:
    from tensorflow_serving.apis.predict_pb2 import PredictRequest

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


class EngineUnavailable(RuntimeError):
    """The engine's binary is not installed."""


class EngineFailed(RuntimeError):
    """The engine ran but produced no usable report."""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def h2load_available() -> bool:
    return shutil.which("h2load") is not None


# --- wrk ---------------------------------------------------------------------------


def run_wrk(
    url: str,
    body: bytes,
    *,
    concurrency: int,
    duration_s: float,
    threads: int = 2,
    examples_per_request: int = 1,
    warmup_s: float = 0,
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """POST ``body`` to ``url`` with ``concurrency`` keep-alive connections for
    ``duration_s`` (after an optional discarded warm-up run); ``headers``: more headers."""
    endpoint = rest_endpoint(url)
    wrk = _binary("wrk", "wrk")
    sample = _rest_preflight(endpoint, body, headers or {})
    with tempfile.TemporaryDirectory(prefix="loadtests-wrk-") as tmp:
        script = _wrk_script(Path(tmp), body, headers or {})
        if warmup_s > 0:
            _wrk(wrk, url, script, concurrency, threads, warmup_s)
        report = _wrk(wrk, url, script, concurrency, threads, duration_s)
    return parse_wrk(report, examples_per_request, (sample,) if sample else ())


def _wrk(wrk: str, url: str, script: Path, c: int, threads: int, seconds: float) -> str:
    argv = [wrk, f"-t{max(1, min(threads, c))}", f"-c{c}", f"-d{_whole_seconds(seconds)}s"]
    argv += ["--latency", "--timeout", "30s", "-s", str(script), url]
    return _run(argv, seconds)


def _wrk_script(folder: Path, body: bytes, headers: Mapping[str, str]) -> Path:
    (folder / "body").write_bytes(body)
    script = folder / "post.lua"
    extra = "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in headers.items())
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"{extra}"
        f'local f = assert(io.open([==[{folder / "body"}]==], "rb"))\n'
        "wrk.body = f:read('*a')\n"
        "f:close()\n"
    )
    return script


def parse_wrk(report: str, examples_per_request: int, samples: tuple[str, ...]) -> LoadResult:
    """A LoadResult from wrk's ``--latency`` text report."""
    done = re.search(r"(\d+) requests in " + _TIME, report)
    if done is None:
        raise EngineFailed(f"wrk gave no report:\n{report}")
    responses, duration_ms = int(done[1]), _ms(done[2], done[3])
    non_2xx = _int(r"Non-2xx or 3xx responses: (\d+)", report)
    socket = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    socket_errors = sum(int(n) for n in socket.groups()) if socket else 0
    errors = non_2xx + socket_errors
    if errors and not samples:
        samples = (f"{non_2xx} non-2xx responses, {socket_errors} socket errors",)
    return LoadResult(
        engine="wrk",
        requests=responses + socket_errors,
        errors=errors,
        duration_s=duration_ms / 1000,
        examples_per_request=examples_per_request,
        error_samples=samples,
        reported=Percentiles(
            p50=_wrk_percentile(report, 50),
            p90=_wrk_percentile(report, 90),
            p99=_wrk_percentile(report, 99),
            max=_wrk_max(report),
        ),
    )


def _wrk_percentile(report: str, q: int) -> float:
    found = re.search(rf"^\s+{q}%\s+{_TIME}", report, re.MULTILINE)
    return _ms(found[1], found[2]) if found else float("nan")


def _wrk_max(report: str) -> float:
    found = re.search(rf"Latency\s+{_TIME}\s+{_TIME}\s+{_TIME}", report)
    return _ms(found[5], found[6]) if found else float("nan")


def _rest_preflight(endpoint: Endpoint, body: bytes, headers: Mapping[str, str]) -> str | None:
    """POST once; the error text if the answer is not 200, else None."""
    connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=30)
    try:
        connection.request(
            "POST", endpoint.path, body, {"Content-Type": "application/json", **headers}
        )
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
    except OSError as e:
        raise EngineFailed(f"cannot reach {endpoint.authority}: {e}") from e
    finally:
        connection.close()
    return None if response.status == 200 else f"HTTP {response.status}: {text}"


# --- h2load ------------------------------------------------------------------------


def run_h2load(
    target: str,
    request: PredictRequest,
    *,
    concurrency: int,
    duration_s: float,
    examples_per_request: int = 1,
    warmup_s: float = 0,
) -> LoadResult:
    """Call Predict on ``target`` over ``concurrency`` HTTP/2 connections for
    ``duration_s``; errors detected by response size (see the module docstring)."""
    endpoint = grpc_endpoint(target)
    binary = _binary("h2load", "nghttp2-client")
    size, sample = grpc_preflight(endpoint, request)
    run = _H2Run(binary, endpoint, PREDICT_PATH, request.SerializeToString())
    return run.measure(concurrency, duration_s, warmup_s, size, sample, examples_per_request)


def run_h2load_raw(
    target: str,
    method: str,
    body: bytes,
    *,
    concurrency: int,
    duration_s: float,
    expected_size: int | None = None,
    examples_per_request: int = 1,
    warmup_s: float = 0,
) -> LoadResult:
    """h2load any unary gRPC ``method`` (full path, ``/package.Service/Method``) with
    ``body``, a serialized request without gRPC framing; for servers whose stubs aserve
    does not ship (e.g. KServe v2 ``ModelInfer`` on a peer server).

    ``expected_size`` is a good answer's serialized size; None measures it with one
    generic call first (bytes in, bytes out). If that call fails, every answer counts
    as an error, as in :func:`run_h2load`.
    """
    endpoint = grpc_endpoint(target)
    binary = _binary("h2load", "nghttp2-client")
    sample = None
    if expected_size is None:
        expected_size, sample = raw_preflight(endpoint, method, body)
    run = _H2Run(binary, endpoint, method, body)
    return run.measure(
        concurrency, duration_s, warmup_s, expected_size, sample, examples_per_request
    )


@dataclass(frozen=True, slots=True)
class _H2Run:
    """One framed gRPC request, ready to replay with h2load."""

    binary: str
    endpoint: Endpoint
    method: str
    message: bytes

    def measure(
        self,
        concurrency: int,
        duration_s: float,
        warmup_s: float,
        size: int | None,
        sample: str | None,
        examples: int,
    ) -> LoadResult:
        url = f"http://{self.endpoint.authority}{self.method}"
        with tempfile.TemporaryDirectory(prefix="loadtests-h2load-") as tmp:
            body, log = Path(tmp) / "body", Path(tmp) / "log"
            body.write_bytes(b"\0" + struct.pack(">I", len(self.message)) + self.message)
            if warmup_s > 0:
                _h2load(self.binary, url, body, concurrency, warmup_s, None)
            report = _h2load(self.binary, url, body, concurrency, duration_s, log)
            latencies = _h2load_latencies(log.read_text() if log.exists() else "")
        return parse_h2load(report, size, latencies, examples, sample)


def _h2load(h2load: str, url: str, body: Path, c: int, seconds: float, log: Path | None) -> str:
    argv = [h2load, f"-c{c}", "-m1", f"-D{max(1, round(seconds * 1000))}ms", "-d", str(body)]
    argv += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    argv += [f"--log-file={log}"] if log else []
    return _run([*argv, url], seconds)


def grpc_preflight(endpoint: Endpoint, request: PredictRequest) -> tuple[int | None, str | None]:
    """Send ``request`` once with the official stub: (response size, None) on success,
    (None, "CODE: details") on a gRPC error."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(endpoint.authority) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            return stub.Predict(request, timeout=30).ByteSize(), None
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                raise EngineFailed(f"cannot reach {endpoint.authority}: {e.details()}") from e
            return None, f"{e.code().name}: {e.details()}"


def raw_preflight(endpoint: Endpoint, method: str, body: bytes) -> tuple[int | None, str | None]:
    """Call ``method`` once with raw bytes: (answer size, None), or (None, error text)."""
    import grpc

    with grpc.insecure_channel(endpoint.authority) as channel:
        call = channel.unary_unary(method)  # no (de)serializers: bytes in, bytes out
        try:
            return len(call(body, timeout=30)), None
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                raise EngineFailed(f"cannot reach {endpoint.authority}: {e.details()}") from e
            return None, f"{e.code().name}: {e.details()}"


def parse_h2load(
    report: str,
    response_size: int | None,
    latencies_ms: tuple[float, ...],
    examples_per_request: int,
    sample: str | None = None,
) -> LoadResult:
    """A LoadResult from h2load's report; good answers counted by DATA bytes."""
    counts = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", report
    )
    data = re.search(r"traffic: .*, \S+ \((\d+)\) data", report)
    finished = re.search(r"finished in " + _TIME, report)
    if counts is None or data is None or finished is None:
        raise EngineFailed(f"h2load gave no report:\n{report}")
    done, succeeded, failed = (int(n) for n in counts.groups())
    ok = min(succeeded, int(data[1]) // (response_size + 5)) if response_size else 0
    errors = done - ok + failed
    samples = [sample] if sample else []
    if errors and response_size:
        samples.append(f"{errors} answers without a {response_size + 5}-byte message")
    return LoadResult(
        engine="h2load",
        requests=done + failed,
        errors=errors,
        duration_s=_ms(finished[1], finished[2]) / 1000,
        examples_per_request=examples_per_request,
        latencies_ms=latencies_ms,
        error_samples=error_samples(samples),
    )


def _h2load_latencies(log: str) -> tuple[float, ...]:
    """Latencies of the HTTP-200 rows of h2load's log (start µs, status, duration µs)."""
    rows = (line.split("\t") for line in log.splitlines())
    return tuple(int(row[2]) / 1000 for row in rows if len(row) >= 3 and row[1] == "200")


# --- shared ------------------------------------------------------------------------


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EngineUnavailable(f"{name} is not installed (Debian package {package})")
    return path


def _run(argv: list[str], seconds: float) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise EngineFailed(
            f"{Path(argv[0]).name} exited {done.returncode}: {done.stderr}{done.stdout}"
        )
    return done.stdout


def _whole_seconds(seconds: float) -> int:
    return max(1, round(seconds))


def _int(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    return int(found[1]) if found else 0


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]

"""A flood: far more clients than the server can serve, each sending again at once.

    python -m loadtests.flood --url http://127.0.0.1:8501 --target 127.0.0.1:8500 \\
        --model mlp --input "$(python -c 'print([0.5]*784)')" --batch 32 \\
        --connections 2000 --duration 20 --pid $(pgrep -f 'aserve')

REST load comes from wrk (``--connections`` keep-alive connections; one that the server
closes is reopened at once), gRPC load from h2load (``--connections`` HTTP/2 connections,
one stream each), both C tools, so that the load generator takes as little of the machine
as possible. What happened is read from the server's own Prometheus page (it needs
``--monitoring_config_file``) before and after the flood:

* ok: requests answered OK;
* refused: requests the server refused as overloaded (or for any other refusal reason,
  ``:aserve:requests_refused``), and how long a refusal took at the server
  (``:aserve:refusal_latency``, bucket upper bounds);
* failed: every other answer, i.e. requests the server accepted and did not serve. This
  must stay 0.

Also the server's peak RSS (``--pid``) and how long after the flood a fresh request is
served again in under ``--normal-ms``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from loadtests import engines, payloads

METRICS_PATH = "/monitoring/prometheus/metrics"


@dataclass(frozen=True)
class FloodResult:
    protocol: str
    connections: int
    seconds: float
    ok: int
    refused: int
    failed: int  # accepted and not served (requests whose client left are not counted)
    client_left: int  # CANCELLED: the client went away (the load generator stopping)
    refusal_p50_ms: float
    refusal_p99_ms: float
    client_errors: int  # non-2xx and socket errors the load generator saw (refusals included)
    peak_rss_mb: float
    recovery_s: float
    failures: tuple[str, ...] = ()

    @property
    def goodput(self) -> float:
        return self.ok / self.seconds

    def row(self, label: str = "") -> str:
        cells = [
            label or self.protocol,
            f"{self.connections:,}",
            f"{self.goodput:,.0f}",
            f"{self.refused / self.seconds:,.0f}",
            f"{self.refusal_p50_ms:.2f}",
            f"{self.refusal_p99_ms:.2f}",
            str(self.failed),
            f"{self.client_left:,}",
            f"{self.peak_rss_mb:,.0f}",
            f"{self.recovery_s:.2f}",
        ]
        return "| " + " | ".join(cells) + " |"


HEADER = (
    "| run | connections | goodput ok/s | refused/s | refusal p50 ms (server) "
    "| refusal p99 ms (server) | accepted and failed | client left | peak RSS MiB "
    "| back to normal s |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


@dataclass(frozen=True)
class Page:
    """The counters a flood is accounted with, from one read of the metrics page."""

    statuses: dict[str, float]  # request_count by status (every model)
    refused: float
    refusal_buckets: dict[float, float]  # cumulative, by upper bound in µs

    @classmethod
    def read(cls, rest_url: str, protocol: str) -> Page:
        with urllib.request.urlopen(rest_url + METRICS_PATH, timeout=30) as response:
            text = response.read().decode()
        statuses: dict[str, float] = {}
        pattern = r'^:tensorflow:serving:request_count\{model_name="[^"]*",status="(\w+)"\} (\S+)$'
        for status, count in re.findall(pattern, text, re.MULTILINE):
            statuses[status] = statuses.get(status, 0.0) + float(count)
        proto = protocol.lower()
        refused = sum(
            float(n)
            for n in re.findall(
                rf'^:aserve:requests_refused\{{reason="\w+",protocol="{proto}"\}} (\S+)$',
                text,
                re.MULTILINE,
            )
        )
        buckets = {
            math.inf if bound == "+Inf" else float(bound): float(count)
            for bound, count in re.findall(
                rf'^:aserve:refusal_latency_bucket\{{protocol="{proto}",le="([^"]+)"\}} (\S+)$',
                text,
                re.MULTILINE,
            )
        }
        return cls(statuses, refused, buckets)


def _quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    counts = {b: after[b] - before.get(b, 0.0) for b in sorted(after)}
    total = counts.get(math.inf, 0.0)
    if total <= 0:
        return math.nan
    return next(b for b, c in counts.items() if c >= q * total) / 1000


class _PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            kib = next(
                (int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:")), 0
            )
            self.peak = max(self.peak, kib / 1024)
            time.sleep(0.1)


def _recovery(predict_url: str, body: bytes, normal_ms: float) -> float:
    """Seconds after the flood until one fresh request is served in under ``normal_ms``."""
    start = time.perf_counter()
    while time.perf_counter() - start < 30:
        sent = time.perf_counter()
        request = urllib.request.Request(predict_url, data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                ok = response.status == 200
        except OSError:
            ok = False
        if ok and (time.perf_counter() - sent) * 1000 < normal_ms:
            return time.perf_counter() - start
        time.sleep(0.01)
    return math.inf


def flood(
    protocol: str,
    *,
    url: str,
    target: str,
    model: str,
    example: object,
    batch: int,
    connections: int,
    seconds: float,
    pid: int = 0,
    normal_ms: float = 100.0,
    input_name: str = "x",
) -> FloodResult:
    body = payloads.rest_body(example, batch)
    predict_url = f"{url}/v1/models/{model}:predict"
    rss = _PeakRss(pid)
    if pid:
        rss.start()
    before = Page.read(url, protocol)
    started = time.perf_counter()
    if protocol == "REST":
        result = engines.run_wrk(predict_url, body, concurrency=connections, duration_s=seconds)
    else:
        request = payloads.predict_request(model, example, batch, input_name=input_name)
        result = engines.run_h2load(target, request, concurrency=connections, duration_s=seconds)
    elapsed = time.perf_counter() - started
    recovery = _recovery(predict_url, body, normal_ms)
    after = Page.read(url, protocol)
    rss.stop.set()
    ok = after.statuses.get("OK", 0.0) - before.statuses.get("OK", 0.0)
    total = sum(after.statuses.values()) - sum(before.statuses.values())
    refused = after.refused - before.refused
    left = after.statuses.get("CANCELLED", 0.0) - before.statuses.get("CANCELLED", 0.0)
    failures = tuple(
        f"{status}: {after.statuses[status] - before.statuses.get(status, 0.0):.0f}"
        for status in sorted(after.statuses)
        if status not in ("OK", "CANCELLED")
        and after.statuses[status] > before.statuses.get(status, 0.0)
    )
    return FloodResult(
        protocol=protocol,
        connections=connections,
        seconds=result.duration_s or elapsed,
        ok=int(ok) - 1,  # the recovery request
        refused=int(refused),
        failed=int(total - ok - refused - left),
        client_left=int(left),
        refusal_p50_ms=_quantile(before.refusal_buckets, after.refusal_buckets, 0.50),
        refusal_p99_ms=_quantile(before.refusal_buckets, after.refusal_buckets, 0.99),
        client_errors=result.errors,
        peak_rss_mb=rss.peak if pid else math.nan,
        recovery_s=recovery,
        failures=failures,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8501")
    parser.add_argument("--target", default="127.0.0.1:8500")
    parser.add_argument("--protocol", nargs="+", default=["REST", "gRPC"])
    parser.add_argument("--model", default="half_plus_two")
    parser.add_argument("--input", default="1.0", help="one example, as JSON")
    parser.add_argument("--input_name", default="x")
    parser.add_argument("--batch", type=int, default=1, help="examples per request")
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--pid", type=int, default=0, help="the server's pid, for its RSS")
    args = parser.parse_args(argv)
    print(HEADER)
    for protocol in args.protocol:
        result = flood(
            protocol,
            url=args.url,
            target=args.target,
            model=args.model,
            example=json.loads(args.input),
            batch=args.batch,
            connections=args.connections,
            seconds=args.duration,
            pid=args.pid,
            input_name=args.input_name,
        )
        print(result.row(), flush=True)
        for failure in result.failures:
            print(f"  not OK: {failure}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Test helpers: a real aserve on free loopback ports, in this process, on its own loop thread.

    with run_server("--model_base_path=...") as server:
        server.wait_for_state("model", 1, "AVAILABLE")
        assert server.post("/v1/models/model:predict", {"instances": [1.0]}).json() == ...

The server is the same code ``python -m aserve`` runs (flags parsed by
:func:`aserve.flags.parse`), listening on 127.0.0.1; clients use real HTTP (httpx)
and the official gRPC stubs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import httpx

from aserve import flags
from aserve.server import Server

ROOT = Path(__file__).resolve().parents[1]
# TF Serving's test models and files, built in code (models.build_testdata) into this folder
# by tests/conftest.py before a session's first test, and removed at the end of the session.
TESTDATA = Path(tempfile.mkdtemp(prefix="aserve-testdata-"))
HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_cpu"
HALF_PLUS_THREE = TESTDATA / "saved_model_half_plus_three"
TWO_VERSIONS = TESTDATA / "saved_model_half_plus_two_2_versions"
TF2_HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_tf2_cpu"
COUNTER = TESTDATA / "saved_model_counter"
MATRIX_HALF_PLUS_TWO = TESTDATA / "batching" / "matrix_half_plus_two"
BAD_MODEL = TESTDATA / "bad_half_plus_two"


class Stubs:
    """The official tensorflow-serving-api stubs on one channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.channel = channel
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.model = model_service_pb2_grpc.ModelServiceStub(channel)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def copy_version(src_version_dir: Path, dst_base: Path, version: int | str) -> Path:
    """Copy one version folder (leaving the test data as it is) and make it writable."""
    target = dst_base / str(version)
    staging = dst_base / f".staging-{version}-{time.monotonic_ns()}"
    shutil.copytree(src_version_dir, staging, copy_function=shutil.copyfile)
    for path in [staging, *staging.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR | stat.S_IRUSR | stat.S_IXUSR)
    os.rename(staging, target)  # appear atomically, as a deploy tool would do it
    return target


def remove_version(base: Path, version: int | str) -> None:
    target = base / str(version)
    trash = base / f".trash-{version}-{time.monotonic_ns()}"
    os.rename(target, trash)
    shutil.rmtree(trash)


def wait_until(
    predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class RunningServer:
    def __init__(
        self, server: Server, loop: asyncio.AbstractEventLoop, rest_port: int, grpc_port: int
    ) -> None:
        self.server = server
        self.loop = loop
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self.url = f"http://127.0.0.1:{rest_port}"
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        self.http = httpx.Client(base_url=self.url, timeout=60)
        self.request_stop: Callable[[], object] = lambda: None  # begin the shutdown (SIGTERM)

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def post(
        self, path: str, body: Any = None, *, content: bytes | str | None = None, **kw: Any
    ) -> httpx.Response:
        if content is None:
            content = json.dumps(body)
        return self.http.post(path, content=content, **kw)

    def status(self, name: str) -> dict[int, str]:
        response = self.get(f"/v1/models/{name}")
        if response.status_code != 200:
            return {}
        return {int(v["version"]): v["state"] for v in response.json()["model_version_status"]}

    def wait_for_state(
        self, name: str, version: int, state: str = "AVAILABLE", timeout: float = 60
    ) -> None:
        wait_until(
            lambda: self.status(name).get(version) == state,
            timeout,
            f"{name} version {version} to be {state} (now {self.status(name)})",
        )

    def wait_for_versions(self, name: str, available: set[int], timeout: float = 60) -> None:
        def ok() -> bool:
            states = self.status(name)
            return {v for v, s in states.items() if s == "AVAILABLE"} == available

        wait_until(
            ok, timeout, f"{name} to serve exactly {sorted(available)} (now {self.status(name)})"
        )


@contextlib.contextmanager
def run_server(
    *args: str,
    poll_seconds: float | None = 1,
    retries: int = 0,
    observers: Sequence[object] = (),
) -> Iterator[RunningServer]:
    """A server on free loopback ports; ``observers`` see its request, batch and load records."""
    rest_port, grpc_port = free_port(), free_port()
    argv = [
        "--host=127.0.0.1",
        f"--rest_api_port={rest_port}",
        f"--port={grpc_port}",
        f"--max_num_load_retries={retries}",
        "--load_retry_interval_micros=100000",
        "--shutdown_grace_seconds=5",
    ]
    if poll_seconds is not None:
        argv.append(f"--file_system_poll_wait_seconds={poll_seconds}")
    server = Server(flags.parse([*argv, *args]), observers=observers)
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        box["loop"] = asyncio.get_running_loop()
        box["stop"] = stop = asyncio.Event()
        await server.serve(stop=stop, on_ready=ready.set)

    def thread_main() -> None:
        import uvloop

        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(main())
        except BaseException as e:  # surfaced to the test below
            box["error"] = e
            ready.set()

    thread = threading.Thread(target=thread_main, name="aserve-test-server", daemon=True)
    thread.start()
    if not ready.wait(120) or "error" in box:
        raise RuntimeError(f"server did not start: {box.get('error')!r}")
    running = RunningServer(server, box["loop"], rest_port, grpc_port)
    running.request_stop = lambda: box["loop"].call_soon_threadsafe(box["stop"].set)
    try:
        yield running
    finally:
        running.http.close()
        with contextlib.suppress(RuntimeError):  # the loop is closed if the server stopped
            running.request_stop()
        thread.join(60)
        assert not thread.is_alive(), "server thread did not stop"
        if "error" in box:
            raise box["error"]


class AserveProcess:
    """``python -m aserve`` as a child process on free loopback ports, its stderr collected.

    with AserveProcess("--model_name=m", f"--model_base_path={path}") as process:
        process.wait_for_log("m version 1: LOADING -> AVAILABLE")
        process.signal(signal.SIGTERM)
        assert process.wait(30) == 0
    """

    def __init__(
        self,
        *args: str,
        rss_limit_mb: int = 4000,
        open_files: int = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        """``rss_limit_mb``: a watchdog kills the server above it (a regression then fails the
        test instead of exhausting the machine); ``open_files``: its soft RLIMIT_NOFILE;
        ``env``: more environment variables."""
        self.rest_port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.rest_port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        argv = [
            sys.executable,
            "-m",
            "aserve",
            "--host=127.0.0.1",
            f"--rest_api_port={self.rest_port}",
            f"--port={self.grpc_port}",
            *args,
        ]
        environment = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }

        def limit_files() -> None:
            import resource

            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=environment,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            preexec_fn=limit_files if open_files else None,
        )
        self.lines: list[str] = []
        self.peak_rss_mb = 0.0
        self.killed_for_memory = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._watchdog = threading.Thread(target=self._watch, args=(rss_limit_mb,), daemon=True)
        self._watchdog.start()

    def rss_mb(self) -> float:
        """The server's resident memory now, in MiB (0 once it has exited)."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0.0
        kib = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
        return kib / 1024

    def _watch(self, limit_mb: int) -> None:
        while self.process.poll() is None:
            rss = self.rss_mb()
            self.peak_rss_mb = max(self.peak_rss_mb, rss)
            if rss > limit_mb:
                self.killed_for_memory = True
                self.process.kill()
                return
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(self, text: str, timeout: float = 90) -> None:
        wait_until(
            lambda: text in self.log or self.process.poll() is not None,
            timeout,
            f"{text!r} in the log",
        )
        assert text in self.log, f"exited with {self.process.returncode}:\n{self.log}"

    def wait_until_listening(self, timeout: float = 90) -> None:
        """Until both the REST and the gRPC port accept connections."""

        def listening(port: int) -> bool:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1),
            ):
                return True
            assert self.process.poll() is None, self.log
            return False

        for port in (self.rest_port, self.grpc_port):
            wait_until(lambda port=port: listening(port), timeout, f"port {port}")

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def __enter__(self) -> AserveProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        self._reader.join(10)
        if self.process.stderr is not None:
            self.process.stderr.close()

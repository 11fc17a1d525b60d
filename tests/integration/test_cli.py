"""``python -m aserve`` as users run it: a real process, real signals, real exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from support import ROOT, TESTDATA, free_port, wait_until

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def serve_example(rest_port: int) -> subprocess.Popen[str]:
    """``python -m aserve`` on the bundled example model, its stderr collected."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aserve",
            "--model_name=half_plus_two",
            "--model_base_path=examples/models/half_plus_two",
            f"--rest_api_port={rest_port}",
            f"--port={free_port()}",
            "--host=127.0.0.1",
        ],
        cwd=ROOT,
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_example_model_serves_and_sigterm_stops_cleanly() -> None:
    port = free_port()
    process = serve_example(port)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/half_plus_two"

        def ready() -> bool:
            try:
                return httpx.get(url).json()["model_version_status"][0]["state"] == "AVAILABLE"
            except (httpx.HTTPError, KeyError, ValueError):
                return False

        wait_until(ready, 90, "the example model")
        answer = httpx.post(url + ":predict", content='{"instances": [1.0, 2.0, 5.0]}')
        assert answer.json() == {"predictions": [2.5, 3.0, 4.5]}
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            process.communicate()
    assert "half_plus_two version 1: LOADING -> AVAILABLE in" in stderr
    assert "Traceback" not in stderr


def test_unparseable_config_is_one_line_on_stderr_and_a_failed_exit() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "aserve",
            f"--model_config_file={TESTDATA / 'bad_model_config.txt'}",
            f"--rest_api_port={free_port()}",
            f"--port={free_port()}",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "Error parsing" in line]
    assert lines == [
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:1: Message type "
        '"tensorflow.serving.ModelServerConfig" has no field named "improperly".'
    ]
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 120


def test_missing_base_path_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aserve", f"--model_base_path={tmp_path / 'nope'}"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_sigterm_during_start_up_exits_at_once() -> None:
    """As a container's PID 1 aserve must handle SIGTERM from its first moment: it is caught
    from before TensorFlow's import on, and ends the process at once, status 0."""
    process = serve_example(free_port())
    try:
        wait_until(lambda: _catches_sigterm(process.pid), 30, "a SIGTERM handler")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert "aserve: SIGTERM during start-up: exiting" in stderr
    assert "LOADING" not in stderr


def _catches_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(
        next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16
    )
    return bool(caught & (1 << (signal.SIGTERM - 1)))

"""The kserve SDK's REST and gRPC inference clients, unchanged, against aserve's V2 API.

They run in a child process (kserve_client.py beside this file): kserve's generated protos
and tritonclient's cannot be loaded into one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support import ROOT, RunningServer


@pytest.fixture(scope="module")
def seen(zoo: RunningServer) -> Any:
    script = Path(__file__).with_name("kserve_client.py")
    done = subprocess.run(
        [sys.executable, str(script), zoo.url, zoo.grpc_target],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_kserve_rest_client(seen: Any) -> None:
    rest = seen["rest"]
    assert (rest["live"], rest["ready"], rest["model_ready"]) == (True, True, True)
    assert rest["unknown_model_ready"] is False
    expected = {"id": "k-1", "model": "half_plus_two", "outputs": {"y": [[2.5], [3.0]]}}
    assert rest["json"] == expected and rest["binary"] == expected
    assert rest["strings"]["outputs"] == {"length": [2, 3], "upper": ["AB", "XYZ"]}
    status, message = rest["error"]
    assert status == 404 and "Servable not found for request: Latest(nope)" in message


def test_kserve_grpc_client(seen: Any) -> None:
    over_grpc = seen["grpc"]
    assert (over_grpc["live"], over_grpc["ready"], over_grpc["model_ready"]) == (True, True, True)
    assert over_grpc["infer"]["outputs"] == {"y": [[2.5], [3.0]]}
    assert over_grpc["infer"]["id"] == "k-1"
    assert over_grpc["strings"]["outputs"] == {"length": [2, 3], "upper": ["AB", "XYZ"]}
    assert over_grpc["error"][0] == "NOT_FOUND"

"""The compiled request path (mypyc, setup.py) and its pure-Python fallback.

The suite itself runs on whichever the checkout was installed with (compiled wherever a C
compiler is found); these tests run the other one too, as a real server, and check that a
source newer than its compiled copy is never shadowed by it.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2

import aserve
import aserve.service
from support import ROOT, AserveProcess, Stubs

EXAMPLE = ("--model_name=m", "--model_base_path=examples/models/half_plus_two")
COMPILED = any(
    (ROOT / "aserve").rglob(f"*{suffix}") for suffix in importlib.machinery.EXTENSION_SUFFIXES
)


def _predict_both_ways(server: AserveProcess) -> None:
    server.wait_until_listening()
    rest = httpx.post(
        f"{server.url}/v1/models/m:predict", json={"instances": [1.0, 2.0, 5.0]}, timeout=30
    )
    assert rest.status_code == 200, rest.text
    assert rest.json() == {"predictions": [2.5, 3.0, 4.5]}
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.extend([1.0, 2.0, 5.0])
    request.inputs["x"].tensor_shape.dim.add(size=3)
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = Stubs(channel).prediction.Predict(request, timeout=30)
    assert list(response.outputs["y"].float_val) == [2.5, 3.0, 4.5]


def test_the_pure_python_request_path_serves_rest_and_grpc() -> None:
    with AserveProcess(*EXAMPLE, env={"ASERVE_PURE_PYTHON": "1"}) as server:
        server.wait_for_log("request path: pure Python (ASERVE_PURE_PYTHON is set)")
        _predict_both_ways(server)


def test_the_server_logs_the_request_path_this_checkout_was_installed_with() -> None:
    with AserveProcess(*EXAMPLE) as server:
        server.wait_for_log(f"request path: {aserve.REQUEST_PATH}")
        _predict_both_ways(server)
    if COMPILED:  # installed with a C compiler: every request module is its compiled copy
        assert aserve.REQUEST_PATH == "compiled (mypyc)"
        assert not aserve.service.__file__.endswith(".py"), aserve.service.__file__


def _import_in(tree: Path) -> list[str]:
    """What a fresh interpreter importing ``tree``'s aserve reports: REQUEST_PATH, and the
    file aserve.service and aserve.batching came from."""
    env = {k: v for k, v in os.environ.items() if k != "ASERVE_PURE_PYTHON"}
    env["PYTHONPATH"] = str(tree)
    code = (
        "import aserve, aserve.service, aserve.batching; "
        "print(aserve.REQUEST_PATH); print(aserve.service.__file__); "
        "print(aserve.batching.__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


@pytest.mark.skipif(not COMPILED, reason="this checkout was installed without compiling")
def test_a_source_newer_than_its_compiled_copy_is_imported_from_source(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "aserve", tree / "aserve", ignore=shutil.ignore_patterns("__pycache__"))
    for shared in ROOT.glob("*__mypyc*"):  # the compiled modules' shared library
        shutil.copy2(shared, tree)
    path, service, batching = _import_in(tree)
    assert path == "compiled (mypyc)"
    assert not service.endswith(".py") and not batching.endswith(".py")

    source = tree / "aserve" / "batching.py"
    later = time.time() + 10
    os.utime(source, (later, later))  # as an edit or a checkout would leave it
    path, service, batching = _import_in(tree)
    assert path.startswith("pure Python (aserve/batching.py is newer than its compiled copy")
    # all of them from source, not only the edited one: compiled code calls its group directly
    assert service.endswith("service.py") and batching.endswith("batching.py")

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from models import build_echo, build_gate
from support import (
    COUNTER,
    HALF_PLUS_THREE,
    HALF_PLUS_TWO,
    MATRIX_HALF_PLUS_TWO,
    TF2_HALF_PLUS_TWO,
    TWO_VERSIONS,
    RunningServer,
    Stubs,
    run_server,
)


@pytest.fixture(scope="session")
def built_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("built")
    return {
        "echo": build_echo(root / "echo" / "1").parent,
        "gate": build_gate(root / "gate" / "1").parent,
    }


ZOO_VERSIONS = {"two_versions": {123, 124}, "echo": {1}, "matrix": {1}}


FRONT_ENDS = {  # the defaults, and the mature fallbacks: every request-level test runs on both
    "aserve+native": ("--rest_server=aserve", "--grpc_server=native"),
    "uvicorn+grpcio": ("--rest_server=uvicorn", "--grpc_server=grpcio"),
}


@pytest.fixture(scope="session", params=list(FRONT_ENDS))
def zoo(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    built_models: dict[str, Path],
) -> Iterator[RunningServer]:
    """One server with every read-only test model, for request-level tests (REST and gRPC),
    on each pair of front ends."""
    models = {
        "half_plus_two": HALF_PLUS_TWO,
        "default": HALF_PLUS_TWO,
        "half_plus_three": HALF_PLUS_THREE,
        "counter": COUNTER,
        "tf2": TF2_HALF_PLUS_TWO,
        "two_versions": TWO_VERSIONS,
        "echo": built_models["echo"],
        "matrix": MATRIX_HALF_PLUS_TWO,
    }
    root = tmp_path_factory.mktemp("zoo")
    policy = {"two_versions": "model_version_policy { all {} }"}
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" '
        f"{policy.get(name, '')} }}\n"
        for name, path in models.items()
    )
    (root / "models.config").write_text(f"model_config_list {{\n{entries}}}\n")
    args = [
        f"--model_config_file={root / 'models.config'}",
        "--rest_api_max_body_bytes=100000",
        f"--grpc_socket_path={root / 'grpc.sock'}",
        *FRONT_ENDS[request.param],
    ]
    with run_server(*args) as server:
        for name in models:
            server.wait_for_versions(name, ZOO_VERSIONS.get(name, {123}))
        yield server


@pytest.fixture(scope="session")
def stubs(zoo: RunningServer) -> Iterator[Stubs]:
    with grpc.insecure_channel(zoo.grpc_target) as channel:
        yield Stubs(channel)

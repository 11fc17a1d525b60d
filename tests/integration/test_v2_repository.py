"""The repository API (Triton's model repository extension): one model loaded or unloaded
without rewriting the config, through tritonclient's HTTP and gRPC clients, unchanged."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from support import (
    HALF_PLUS_THREE,
    HALF_PLUS_TWO,
    TESTDATA,
    RunningServer,
    run_server,
    wait_until,
)

PAGE = "/monitoring/prometheus/metrics"


def config_file(folder: Path, models: dict[str, Path]) -> Path:
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}\n'
        for name, path in models.items()
    )
    path = folder / "models.config"
    path.write_text(f"model_config_list {{\n{entries}}}\n")
    return path


def model_config(base_path: Path, extra: str = "") -> str:
    return f'base_path: "{base_path}" model_platform: "tensorflow" {extra}'


@pytest.fixture(scope="module")
def managed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with --enable_model_management, starting with half_plus_two only."""
    config = config_file(tmp_path_factory.mktemp("managed"), {"half_plus_two": HALF_PLUS_TWO})
    args = (
        f"--model_config_file={config}",
        "--enable_model_management",
        f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}",
    )
    with run_server(*args) as server:
        yield server


@pytest.fixture
def http(managed: RunningServer) -> Iterator[Any]:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{managed.rest_port}")
    yield client
    client.close()


@pytest.fixture
def over_grpc(managed: RunningServer) -> Iterator[Any]:
    client = grpcclient.InferenceServerClient(managed.grpc_target)
    yield client
    client.close()


def predict(server: RunningServer, model: str, suffix: str = "") -> Any:
    return server.post(f"/v1/models/{model}{suffix}:predict", {"instances": [1.0]})


def test_the_index_and_the_extension(managed: RunningServer, http: Any) -> None:
    assert "model_repository" in managed.get("/v2").json()["extensions"]
    index = http.get_model_repository_index()
    assert {"name": "half_plus_two", "version": "123", "state": "READY"} in index


def test_load_serve_unload_and_load_again_over_http(
    managed: RunningServer, http: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aserve")
    http.load_model("three", config=model_config(HALF_PLUS_THREE))
    assert http.is_model_ready("three")  # load returns once it serves
    assert predict(managed, "three").json() == {"predictions": [3.5]}
    assert managed.status("three") == {123: "AVAILABLE"}
    page = managed.get(PAGE).text
    assert ':aserve:model_loads{model_name="three",outcome="available"} 1' in page
    assert 'servable_state{model_name="three",version="123",state="AVAILABLE"} 1' in page
    assert any("three: loaded through the repository API" in r.message for r in caplog.records)

    http.unload_model("three")
    assert managed.status("three") == {123: "END"}  # unload returns once it has unloaded
    assert predict(managed, "three").status_code == 404
    entry = {"name": "three", "version": "123", "state": "UNAVAILABLE", "reason": "unloaded"}
    assert entry in http.get_model_repository_index()
    assert any("three: unloaded through the repository API" in r.message for r in caplog.records)
    assert managed.get("/v2/health/ready").status_code == 200  # the list no longer has it

    http.load_model("three")  # no config: the one it had
    assert predict(managed, "three").json() == {"predictions": [3.5]}
    http.unload_model("three")


def test_load_and_unload_over_grpc(managed: RunningServer, over_grpc: Any) -> None:
    over_grpc.load_model("copy", config=model_config(HALF_PLUS_TWO))
    assert over_grpc.is_model_ready("copy")
    index = over_grpc.get_model_repository_index(as_json=True)["models"]
    assert {"name": "copy", "version": "123", "state": "READY"} in index
    over_grpc.unload_model("copy")
    assert not over_grpc.is_model_ready("copy")
    with pytest.raises(InferenceServerException) as info:
        over_grpc.unload_model("copy")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as info:
        over_grpc.load_model("ghost", config=model_config(Path("/nowhere")))
    assert "Could not find base path /nowhere" in info.value.message()


def test_labels_change_through_the_config_with_tf_servings_rules(
    managed: RunningServer, http: Any
) -> None:
    labeled = model_config(HALF_PLUS_TWO, 'version_labels { key: "stable" value: 123 }')
    http.load_model("half_plus_two", config=labeled)
    assert predict(managed, "half_plus_two", "/labels/stable").status_code == 200
    unavailable = model_config(HALF_PLUS_TWO, 'version_labels { key: "stable" value: 999 }')
    with pytest.raises(InferenceServerException) as info:
        http.load_model("half_plus_two", config=unavailable)
    assert info.value.status() == "400"
    assert "assign label to version 999 of model half_plus_two" in info.value.message()
    assert predict(managed, "half_plus_two", "/labels/stable").status_code == 200
    http.load_model("half_plus_two", config=model_config(HALF_PLUS_TWO))


INVALID = {
    "not a text proto": ("base_path: ", "Error parsing text-format tensorflow.serving.ModelConfig"),
    "another name": (f'name: "other" {model_config(HALF_PLUS_TWO)}', "names model other"),
    "another platform": (
        f'base_path: "{HALF_PLUS_TWO}" model_platform: "pytorch"',
        "unsupported platform",
    ),
    "no base path": ('model_platform: "tensorflow"', "has no base_path"),
}


@pytest.mark.parametrize(("config", "text"), INVALID.values(), ids=INVALID)
def test_an_invalid_config_changes_nothing(
    managed: RunningServer, http: Any, config: str, text: str
) -> None:
    with pytest.raises(InferenceServerException) as info:
        http.load_model("half_plus_two", config=config)
    assert info.value.status() == "400" and text in info.value.message()
    assert managed.status("half_plus_two") == {123: "AVAILABLE"}
    assert predict(managed, "half_plus_two").status_code == 200


def test_a_failed_load_leaves_no_model_and_other_refusals(
    managed: RunningServer, http: Any
) -> None:
    with pytest.raises(InferenceServerException) as info:
        http.load_model("ghost", config=model_config(Path("/nowhere")))
    assert info.value.status() == "500" and "did not become available" in info.value.message()
    assert not any(e["name"] == "ghost" for e in http.get_model_repository_index())
    assert managed.get("/v2/health/ready").status_code == 200
    with pytest.raises(InferenceServerException) as info:
        http.load_model("unknown")
    assert info.value.status() == "404" and "load it with a config" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        http.load_model(
            "half_plus_two", config=model_config(HALF_PLUS_TWO), files={"file:1/a": b""}
        )
    assert info.value.status() == "400" and "not supported" in info.value.message()
    assert managed.post("/v2/repository/models/x/load", content=b"[1]").status_code == 400


def test_unload_lets_requests_in_flight_finish(
    managed: RunningServer, http: Any, built_models: dict[str, Path], tmp_path: Path
) -> None:
    http.load_model("gate", config=model_config(built_models["gate"]))
    gate = tmp_path / "open"
    answers: list[Any] = []
    held = threading.Thread(
        target=lambda: answers.append(
            managed.post("/v1/models/gate:predict", {"instances": [str(gate)]})
        )
    )
    held.start()
    wait_until(lambda: ':aserve:requests_in_flight{model_name="gate"} 1' in managed.get(PAGE).text)
    url = f"{managed.url}/v2/repository/models/gate/unload"
    unloaded: list[Any] = []
    unloading = threading.Thread(target=lambda: unloaded.append(httpx.post(url, timeout=60)))
    unloading.start()
    wait_until(lambda: managed.status("gate") == {1: "UNLOADING"})
    assert predict(managed, "gate").status_code == 404  # no new request reaches it
    (tmp_path / "staged").write_text("done")
    (tmp_path / "staged").rename(gate)  # the graph reads the file once it exists: whole
    held.join(30)
    unloading.join(30)
    assert answers[0].json() == {"predictions": ["done"]}
    assert unloaded[0].status_code == 200 and managed.status("gate") == {1: "END"}


# -- who may manage, and when ------------------------------------------------------------------

TOKEN, ADMIN = "prediction-token", "admin-token"


@pytest.fixture(scope="module")
def file_owned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("file-owned")
    config = config_file(folder, {"half_plus_two": HALF_PLUS_TWO})
    (folder / "tokens").write_text(f"{TOKEN}\n")
    (folder / "admin").write_text(f"{ADMIN}\n")
    args = (
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=60",
        "--enable_model_management",
        f"--auth_token_file={folder / 'tokens'}",
        f"--admin_token_file={folder / 'admin'}",
    )
    with run_server(*args) as server:
        yield server


def test_management_needs_the_admin_token_and_yields_to_a_polled_file(
    file_owned: RunningServer,
) -> None:
    path = "/v2/repository/models/half_plus_two/unload"
    assert file_owned.post(path, content=b"").status_code == 401
    assert file_owned.post(path, content=b"", headers=bearer(TOKEN)).status_code == 403
    refused = file_owned.post(path, content=b"", headers=bearer(ADMIN))
    assert refused.status_code == 400
    assert "owned by --model_config_file=" in refused.json()["error"]
    index = file_owned.post("/v2/repository/index", content=b"", headers=bearer(TOKEN))
    assert index.json() == [{"name": "half_plus_two", "version": "123", "state": "READY"}]
    client = grpcclient.InferenceServerClient(file_owned.grpc_target)
    with pytest.raises(InferenceServerException) as info:
        client.unload_model("half_plus_two", headers={"authorization": f"Bearer {ADMIN}"})
    assert info.value.status() == "StatusCode.FAILED_PRECONDITION"
    with pytest.raises(InferenceServerException) as info:
        client.unload_model("half_plus_two", headers={"authorization": f"Bearer {TOKEN}"})
    assert info.value.status() == "StatusCode.PERMISSION_DENIED"
    client.close()
    status = file_owned.http.get("/v1/models/half_plus_two", headers=bearer(TOKEN)).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_grpc_index_when_management_is_on(managed: RunningServer) -> None:
    from aserve._proto import grpc_predict_v2_pb2 as pb

    with grpc.insecure_channel(managed.grpc_target) as channel:
        index = channel.unary_unary(
            "/inference.GRPCInferenceService/RepositoryIndex",
            request_serializer=pb.RepositoryIndexRequest.SerializeToString,
            response_deserializer=pb.RepositoryIndexResponse.FromString,
        )(pb.RepositoryIndexRequest(ready=True), timeout=30)
    assert all(m.state == "READY" for m in index.models)
    assert "half_plus_two" in {m.name for m in index.models}


def test_v2_inference_counts_as_predictions_in_the_metrics(managed: RunningServer) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
    assert managed.post("/v2/models/half_plus_two/infer", body).status_code == 200
    with grpcclient.InferenceServerClient(managed.grpc_target) as client:
        x = grpcclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.array([[1.0]], np.float32))
        client.infer("half_plus_two", [x])
    page = managed.get(PAGE).text
    for api, entrypoint in (("infer", "REST"), ("ModelInfer", "GRPC")):
        labels = f'model_name="half_plus_two",API="{api}",entrypoint="{entrypoint}"'
        assert f":tensorflow:serving:request_latency_count{{{labels}}} 1" in page, api

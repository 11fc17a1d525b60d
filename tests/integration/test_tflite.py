"""TFLite models served as TF Serving serves them (``--prefer_tflite_model``).

The models are half_plus_two converted by the tests (``models.build_tflite_models``); the
expectations are TF Serving's own (``testPredictOnTfLite``,
``testPredictWithSignatureDefOnTfLite``: x = [2.0] -> y = [3.0], version 123).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from models import build_tflite_models
from support import HALF_PLUS_TWO, RunningServer, Stubs, run_server

MODELS = ("tflite", "tflite_with_sigdef", "tflite_signature")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("tflite")
    paths = {**build_tflite_models(root), "saved_model": HALF_PLUS_TWO}
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}\n'
        for name, path in paths.items()
    )
    (root / "models.config").write_text(f"model_config_list {{\n{entries}}}\n")
    args = (
        f"--model_config_file={root / 'models.config'}",
        "--prefer_tflite_model",
        "--num_tflite_pools=2",
        "--num_tflite_interpreters_per_pool=2",
    )
    with run_server(*args) as running:
        for name in paths:
            running.wait_for_versions(name, {123})
        yield running


@pytest.mark.parametrize("name", MODELS)
def test_tf_servings_predict_expectations_hold(server: RunningServer, name: str) -> None:
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = "serving_default"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    with grpc.insecure_channel(server.grpc_target) as channel:
        result = Stubs(channel).prediction.Predict(request, 20)
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert list(result.outputs["y"].float_val) == [3.0]
    assert result.model_spec.name == name
    assert result.model_spec.version.value == 123
    assert result.model_spec.signature_name == "serving_default"


@pytest.mark.parametrize(
    ("name", "tensor", "shape"),
    [
        ("tflite", "x", ["1", "1"]),  # the signature TF Serving generates from the tensors
        ("tflite_with_sigdef", "tflite_input", ["1", "1"]),  # the stored SignatureDef
        ("tflite_signature", "serving_default_x:0", ["-1", "1"]),  # the model's own signature
    ],
)
def test_metadata_shows_the_signature_like_a_saved_models(
    server: RunningServer, name: str, tensor: str, shape: list[str]
) -> None:
    response = server.get(f"/v1/models/{name}/metadata")
    assert response.status_code == 200, response.text
    metadata = response.json()["metadata"]["signature_def"]["signature_def"]
    assert list(metadata) == ["serving_default"]
    signature = metadata["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert list(signature["inputs"]) == ["x"] and list(signature["outputs"]) == ["y"]
    x = signature["inputs"]["x"]
    assert (x["name"], x["dtype"]) == (tensor, "DT_FLOAT")
    assert [d["size"] for d in x["tensor_shape"]["dim"]] == shape


def test_rest_batches_of_any_size_run_on_a_pool_of_interpreters(server: RunningServer) -> None:
    def predict(n: int) -> list[list[float]]:
        rows = [[float(i)] for i in range(n)]
        response = server.post("/v1/models/tflite_signature:predict", {"instances": rows})
        assert response.status_code == 200, response.text
        return list(response.json()["predictions"])

    with ThreadPoolExecutor(8) as threads:
        answers = list(threads.map(predict, [1, 3, 600, 2, 7, 600, 1, 4]))
    for n, answer in zip([1, 3, 600, 2, 7, 600, 1, 4], answers, strict=True):
        assert answer == [[0.5 * i + 2.0] for i in range(n)]  # 600 rows: chunks of 250


def test_a_version_without_model_tflite_loads_as_a_saved_model(server: RunningServer) -> None:
    response = server.post("/v1/models/saved_model:predict", {"instances": [[2.0]]})
    assert response.json() == {"predictions": [[3.0]]}

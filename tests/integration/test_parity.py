"""The same requests over REST and gRPC: identical numbers, corresponding status codes."""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2

from aserve.errors import Code, http_status
from support import RunningServer, Stubs

CASES: list[tuple[str, str, dict[str, Any], str]] = [
    # (model, signature, inputs, URL suffix)
    ("half_plus_two", "", {"x": np.array([[1.0], [2.5], [-7.25]], np.float32)}, ""),
    ("half_plus_two", "", {"x": np.array([0.1, 1234.567, 3e-5, 2e7], np.float32)}, "/versions/123"),
    ("half_plus_three", "", {"x": np.array([1.0, 2.0, 5.0], np.float32)}, ""),
    ("tf2", "", {"x": np.array([2.0, 3.0], np.float32)}, ""),
    ("two_versions", "", {"x": np.array([[2.0]], np.float32)}, "/versions/124"),
    ("matrix", "", {"x": np.arange(18, dtype=np.float32).reshape(2, 3, 3)}, ""),
    (
        "echo",
        "multi",
        {"a": np.array([[1.5, 2.5]], np.float32), "b": np.array([3.25], np.float32)},
        "",
    ),
    ("echo", "echo_int64", {"x": np.array([[-(2**62), 7]], np.int64)}, ""),
    ("echo", "echo_float64", {"x": np.array([1 / 3, 1e300], np.float64)}, ""),
    ("echo", "echo_bool", {"x": np.array([True, False])}, ""),
    ("echo", "text", {"s": np.array([b"ab", b"xyz"], dtype=object)}, ""),
]

ERRORS: list[tuple[str, str, dict[str, Any], str]] = [
    ("nope", "", {"x": np.array([1.0], np.float32)}, ""),
    ("half_plus_two", "", {"x": np.array([1.0], np.float32)}, "/versions/9"),
    ("half_plus_two", "", {"x": np.array([1.0], np.float32)}, "/labels/nope"),
    ("half_plus_two", "nope", {"x": np.array([1.0], np.float32)}, ""),
    ("half_plus_two", "", {"y": np.array([1.0], np.float32)}, ""),
    ("echo", "multi", {"a": np.array([[1.0, 2.0]], np.float32)}, ""),
]


def rest(
    server: RunningServer, model: str, signature: str, inputs: dict[str, Any], suffix: str
) -> Any:
    body: dict[str, Any] = {"inputs": {k: _jsonable(v) for k, v in inputs.items()}}
    if signature:
        body["signature_name"] = signature
    return server.post(f"/v1/models/{model}{suffix}:predict", body)


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype == object:
        return [b.decode() for b in array.tolist()]
    return array.tolist()


def grpc_predict(
    stubs: Stubs, model: str, signature: str, inputs: dict[str, Any], suffix: str
) -> Any:
    spec = model_pb2.ModelSpec(name=model, signature_name=signature)
    if suffix.startswith("/versions/"):
        spec.version.value = int(suffix.rsplit("/", 1)[1])
    elif suffix.startswith("/labels/"):
        spec.version_label = suffix.rsplit("/", 1)[1]
    request = predict_pb2.PredictRequest(model_spec=spec)
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return stubs.prediction.Predict(request, 10)


@pytest.mark.parametrize(("model", "signature", "inputs", "suffix"), CASES)
def test_same_numbers(
    zoo: RunningServer,
    stubs: Stubs,
    model: str,
    signature: str,
    inputs: dict[str, Any],
    suffix: str,
) -> None:
    over_rest = rest(zoo, model, signature, inputs, suffix)
    assert over_rest.status_code == 200, over_rest.text
    outputs = json.loads(over_rest.text)["outputs"]
    over_grpc = {
        k: tf.make_ndarray(v)
        for k, v in grpc_predict(stubs, model, signature, inputs, suffix).outputs.items()
    }
    if not isinstance(outputs, dict):
        (only,) = over_grpc
        outputs = {only: outputs}
    assert set(outputs) == set(over_grpc)
    for alias, array in over_grpc.items():
        if array.dtype == object:
            decoded = [b.decode() for b in array.reshape(-1).tolist()]
            if alias.endswith("_bytes"):
                decoded = [base64.b64encode(b).decode() for b in array.reshape(-1).tolist()]
                assert [
                    v["b64"] for v in np.array(outputs[alias], dtype=object).reshape(-1)
                ] == decoded
            else:
                assert np.array(outputs[alias], dtype=object).reshape(-1).tolist() == decoded
        else:
            # REST's decimal text, read back into the tensor's dtype, is the very same number
            np.testing.assert_array_equal(np.array(outputs[alias], dtype=array.dtype), array)


@pytest.mark.parametrize(("model", "signature", "inputs", "suffix"), ERRORS)
def test_same_errors(
    zoo: RunningServer,
    stubs: Stubs,
    model: str,
    signature: str,
    inputs: dict[str, Any],
    suffix: str,
) -> None:
    over_rest = rest(zoo, model, signature, inputs, suffix)
    with pytest.raises(grpc.RpcError) as info:
        grpc_predict(stubs, model, signature, inputs, suffix)
    code = Code[info.value.code().name]
    assert over_rest.status_code == http_status(code), (over_rest.text, info.value.details())

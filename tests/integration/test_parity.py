"""The same requests over REST and gRPC, TF Serving's API and KServe V2's: identical numbers,
corresponding status codes."""

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
    """TF Serving's REST and gRPC answers, and KServe V2's over REST (JSON and binary) and
    gRPC: the same values (V2 also the same dtypes and shapes as TF Serving's gRPC)."""
    over_rest = rest(zoo, model, signature, inputs, suffix)
    assert over_rest.status_code == 200, over_rest.text
    outputs = json.loads(over_rest.text)["outputs"]
    over_grpc = {
        k: tf.make_ndarray(v)
        for k, v in grpc_predict(stubs, model, signature, inputs, suffix).outputs.items()
    }
    check_v2_numbers(zoo, model, signature, inputs, suffix, over_grpc)
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
    if "/labels/" not in suffix:  # V2 names versions by number only
        check_v2_statuses(zoo, model, signature, inputs, suffix, http_status(code))


# -- the same through KServe V2: REST (JSON and binary) and gRPC ----------------------------

V2_DATATYPES = {
    "float32": "FP32",
    "float64": "FP64",
    "int32": "INT32",
    "int64": "INT64",
    "bool": "BOOL",
}


def v2_datatype(array: np.ndarray) -> str:
    return "BYTES" if array.dtype == object else V2_DATATYPES[array.dtype.name]


def v2_rest(
    server: RunningServer, model: str, signature: str, inputs: dict[str, Any], suffix: str
) -> Any:
    body: dict[str, Any] = {
        "inputs": [
            {"name": k, "datatype": v2_datatype(v), "shape": list(v.shape), "data": _jsonable(v)}
            for k, v in inputs.items()
        ]
    }
    if signature:
        body["parameters"] = {"signature_name": signature}
    return server.post(f"/v2/models/{model}{suffix}/infer", body)


def v2_rest_outputs(response: Any) -> dict[str, np.ndarray]:
    """Outputs of a V2 JSON answer, each in the numpy type of its datatype."""
    assert response.status_code == 200, response.text
    numpy_types = {v2: np.dtype(name) for name, v2 in V2_DATATYPES.items()}
    arrays = {}
    for o in response.json()["outputs"]:
        if o["datatype"] == "BYTES":
            array = np.array([d.encode() for d in o["data"]], dtype=object)
        else:
            array = np.array(o["data"], dtype=numpy_types[o["datatype"]])
        arrays[o["name"]] = array.reshape(o["shape"])
    return arrays


def triton_inputs(module: Any, inputs: dict[str, Any]) -> list[Any]:
    tensors = []
    for alias, value in inputs.items():
        tensor = module.InferInput(alias, list(value.shape), v2_datatype(value))
        tensor.set_data_from_numpy(value)  # binary (HTTP) / raw_input_contents (gRPC)
        tensors.append(tensor)
    return tensors


def triton_outputs(result: Any, names: Any) -> dict[str, np.ndarray]:
    return {name: result.as_numpy(name) for name in names}


def v2_version(suffix: str) -> str:
    return suffix.rsplit("/", 1)[1] if suffix.startswith("/versions/") else ""


def check_v2_numbers(
    server: RunningServer,
    model: str,
    signature: str,
    inputs: dict[str, Any],
    suffix: str,
    expected: dict[str, np.ndarray],
) -> None:
    """V2 over REST in JSON, REST in binary and gRPC: TF Serving gRPC's dtypes, shapes and
    values."""
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    parameters = {"signature_name": signature} if signature else None
    version = v2_version(suffix)
    over_v2 = {"REST JSON": v2_rest_outputs(v2_rest(server, model, signature, inputs, suffix))}
    with triton_http.InferenceServerClient(f"127.0.0.1:{server.rest_port}") as client:
        result = client.infer(
            model, triton_inputs(triton_http, inputs), version, parameters=parameters
        )
        over_v2["REST binary"] = triton_outputs(result, expected)
    with triton_grpc.InferenceServerClient(server.grpc_target) as client:
        result = client.infer(
            model, triton_inputs(triton_grpc, inputs), version, parameters=parameters
        )
        over_v2["gRPC"] = triton_outputs(result, expected)
    for how, outputs in over_v2.items():
        assert set(outputs) == set(expected), how
        for alias, array in expected.items():
            got = outputs[alias]
            assert (got.shape, got.dtype) == (array.shape, array.dtype), (how, alias)
            np.testing.assert_array_equal(got, array, err_msg=f"{how}: {alias}")


def check_v2_statuses(
    server: RunningServer,
    model: str,
    signature: str,
    inputs: dict[str, Any],
    suffix: str,
    status: int,
) -> None:
    """V2 over REST and gRPC answer with the HTTP status of TF Serving's gRPC code."""
    import tritonclient.grpc as triton_grpc
    from tritonclient.utils import InferenceServerException

    over_rest = v2_rest(server, model, signature, inputs, suffix)
    assert over_rest.status_code == status, over_rest.text
    parameters = {"signature_name": signature} if signature else None
    with (
        triton_grpc.InferenceServerClient(server.grpc_target) as client,
        pytest.raises(InferenceServerException) as v2_error,
    ):
        client.infer(
            model, triton_inputs(triton_grpc, inputs), v2_version(suffix), parameters=parameters
        )
    code = Code[str(v2_error.value.status()).removeprefix("StatusCode.")]
    assert http_status(code) == status, v2_error.value.message()

"""TF Serving's gRPC API through the official tensorflow-serving-api stubs, over real sockets."""

from __future__ import annotations

import json
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from models import ECHO_DTYPES
from support import TESTDATA, RunningServer, Stubs


def spec(name: str, signature: str = "", version: int | None = None, label: str = "") -> Any:
    model_spec = model_pb2.ModelSpec(name=name, signature_name=signature)
    if version is not None:
        model_spec.version.value = version
    if label:
        model_spec.version_label = label
    return model_spec


def predict_request(name: str, inputs: dict[str, Any], **kw: Any) -> Any:
    output_filter = kw.pop("output_filter", ())
    request = predict_pb2.PredictRequest(model_spec=spec(name, **kw), output_filter=output_filter)
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return request


def examples(*xs: float, context: dict[str, float] | None = None) -> Any:
    def example(features: dict[str, float]) -> Any:
        return example_pb2.Example(
            features=feature_pb2.Features(
                feature={
                    k: feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[v]))
                    for k, v in features.items()
                }
            )
        )

    if context is None:
        return input_pb2.Input(
            example_list=input_pb2.ExampleList(examples=[example({"x": x}) for x in xs])
        )
    return input_pb2.Input(
        example_list_with_context=input_pb2.ExampleListWithContext(
            examples=[example({"x2": x}) for x in xs], context=example(context)
        )
    )


def test_predict_values_and_model_spec_echo(stubs: Stubs) -> None:
    response = stubs.prediction.Predict(
        predict_request("half_plus_two", {"x": np.array([[2.0], [3.0]], np.float32)}), 10
    )
    assert list(response.outputs["y"].float_val) == [3.0, 3.5]
    assert tf.make_ndarray(response.outputs["y"]).shape == (2, 1)
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value == 123
    assert not response.model_spec.version_label


def test_predict_is_lenient_about_declared_shapes(stubs: Stubs) -> None:
    cases = [
        ("half_plus_two", np.array([2.0], np.float32), [3.0]),
        ("half_plus_three", np.array([1.0, 2.0, 5.0], np.float32), [3.5, 4.0, 5.5]),
        ("tf2", np.array([2.0, 3.0, 4.0], np.float32), [3.0, 3.5, 4.0]),
        ("matrix", np.full((2, 3, 3), 2.0, np.float32), [3.0] * 18),
    ]
    for name, x, expected in cases:
        response = stubs.prediction.Predict(predict_request(name, {"x": x}), 10)
        assert list(response.outputs["y"].float_val) == expected, name


def test_counter_keeps_state_across_calls(stubs: Stubs) -> None:
    def call(signature: str, **inputs: Any) -> float:
        response = stubs.prediction.Predict(
            predict_request("counter", inputs, signature=signature), 10
        )
        return float(tf.make_ndarray(response.outputs["output"]))

    call("reset_counter")
    assert [call("incr_counter"), call("incr_counter"), call("get_counter")] == [1.0, 2.0, 2.0]
    assert call("incr_counter_by", delta=np.float32(3.0)) == 5.0
    assert [call("reset_counter"), call("get_counter")] == [0.0, 0.0]


def test_output_filter_and_multiple_outputs(stubs: Stubs) -> None:
    inputs = {"a": np.array([[1.0, 2.0]], np.float32), "b": np.array([3.0], np.float32)}
    both = stubs.prediction.Predict(predict_request("echo", inputs, signature="multi"), 10)
    assert sorted(both.outputs) == ["label_bytes", "sum"]
    assert list(both.outputs["label_bytes"].string_val) == [b"ex"]
    only = stubs.prediction.Predict(
        predict_request("echo", inputs, signature="multi", output_filter=["sum"]), 10
    )
    assert list(only.outputs) == ["sum"] and list(only.outputs["sum"].float_val) == [6.0]


@pytest.mark.parametrize("dtype", ECHO_DTYPES)
def test_every_dtype_round_trips(stubs: Stubs, dtype: str) -> None:
    if dtype == "string":
        value: Any = np.array([b"a", b"\xff\x00"], dtype=object)
    elif dtype == "bool":
        value = np.array([True, False])
    elif dtype == "bfloat16":
        value = tf.constant([1.5, -2.0], tf.bfloat16)
    else:
        value = np.array([1, 2], dtype=dtype)
    request = predict_request("echo", {"x": value}, signature=f"echo_{dtype}")
    output = stubs.prediction.Predict(request, 10).outputs["y"]
    expected = value.numpy() if dtype == "bfloat16" else value
    assert tf.make_ndarray(output).tolist() == expected.tolist()


def test_unix_socket(zoo: RunningServer) -> None:
    with grpc.insecure_channel(f"unix:{zoo.server.options.grpc_socket_path}") as channel:
        response = Stubs(channel).prediction.Predict(
            predict_request("half_plus_two", {"x": np.array([2.0], np.float32)}), 10
        )
    assert list(response.outputs["y"].float_val) == [3.0]


def test_classify_regress_and_multi_inference(stubs: Stubs) -> None:
    classify = stubs.prediction.Classify(
        classification_pb2.ClassificationRequest(
            model_spec=spec("half_plus_two", "classify_x_to_y"), input=examples(2.0, 20.0)
        ),
        10,
    )
    assert [[(c.label, c.score) for c in e.classes] for e in classify.result.classifications] == [
        [("", 3.0)],
        [("", 12.0)],
    ]
    assert classify.model_spec.version.value == 123
    regress = stubs.prediction.Regress(
        regression_pb2.RegressionRequest(
            model_spec=spec("half_plus_two", "regress_x_to_y"), input=examples(2.0, 80.0)
        ),
        10,
    )
    assert [r.value for r in regress.result.regressions] == [3.0, 42.0]
    with_context = stubs.prediction.Regress(
        regression_pb2.RegressionRequest(
            model_spec=spec("half_plus_two", "regress_x_to_y2"),
            input=examples(1.0, context={"x": 2.0}),
        ),
        10,
    )
    assert [r.value for r in with_context.result.regressions] == [4.0]
    multi = stubs.prediction.MultiInference(
        inference_pb2.MultiInferenceRequest(
            tasks=[
                inference_pb2.InferenceTask(
                    model_spec=spec("half_plus_two", "regress_x_to_y"),
                    method_name="tensorflow/serving/regress",
                ),
                inference_pb2.InferenceTask(
                    model_spec=spec("half_plus_two", "classify_x_to_y"),
                    method_name="tensorflow/serving/classify",
                ),
            ],
            input=examples(2.0),
        ),
        10,
    )
    assert multi.results[0].regression_result.regressions[0].value == 3.0
    assert multi.results[1].classification_result.classifications[0].classes[0].score == 3.0
    assert [r.model_spec.signature_name for r in multi.results] == [
        "regress_x_to_y",
        "classify_x_to_y",
    ]


def test_metadata(stubs: Stubs) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=spec("default"), metadata_field=["signature_def"]
    )
    response = stubs.prediction.GetModelMetadata(request, 10)
    assert (response.model_spec.name, response.model_spec.version.value) == ("default", 123)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    expected = json.loads((TESTDATA / "half_plus_two_model_metadata.json").read_text())
    assert (
        json_format.MessageToDict(
            signature_map,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        == expected["metadata"]["signature_def"]
    )


def test_model_status(stubs: Stubs) -> None:
    response = stubs.model.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec=spec("two_versions")), 10
    )
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (124, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0),
        (123, get_model_status_pb2.ModelVersionStatus.AVAILABLE, 0),
    ]
    one = stubs.model.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec=spec("two_versions", version=123)), 10
    )
    assert [s.version for s in one.model_version_status] == [123]


LONG = "m" * 1100
X = {"x": np.array([2.0], np.float32)}


@pytest.mark.parametrize(
    ("call", "proto", "code", "message"),
    [
        (
            "predict",
            predict_pb2.PredictRequest(),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Missing ModelSpec",
        ),
        (
            "predict",
            predict_request("", X),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ModelSpec has no name specified.",
        ),
        (
            "predict",
            predict_request("nope", X),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "predict",
            predict_request("half_plus_two", X, version=9),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(half_plus_two, 9)",
        ),
        (
            "predict",
            predict_request("half_plus_two", X, label="nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: nope",
        ),
        (
            "predict",
            predict_request("half_plus_two", X, signature="nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            "predict",
            predict_request("half_plus_two", X, output_filter=["z"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "output tensor alias not found in signature: z Outputs expected to be in the set {y}.",
        ),
        (
            "predict",
            predict_request("half_plus_two", X, output_filter=["y", "y"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "duplicate output tensor alias: y",
        ),
        (
            "predict",
            predict_request("half_plus_two", {"x": np.array([2.0])}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Expects arg[0] to be float but double is provided",
        ),
        (
            "predict",
            predict_request(
                "half_plus_two",
                {"x": np.array([2.0], np.float32), "z": np.array([1.0], np.float32)},
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input size does not match signature: 2!=1 len({x,z}) != len({x}). Sent extra: {z}. Missing but required: {}.",
        ),
        (
            "predict",
            predict_request("half_plus_two", {"z": np.array([1.0], np.float32)}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Signature input alias: x(feed name: x:0) not found in request and no default value provided. "
            "Inputs expected to be in the request {z}, or default input alias set: ",
        ),
        (
            "predict",
            predict_request(LONG, X),
            grpc.StatusCode.NOT_FOUND,
            ("Servable not found for request: Latest(" + LONG)[:1024] + "...TRUNCATED",
        ),
        (
            "classify",
            classification_pb2.ClassificationRequest(
                model_spec=spec("half_plus_two", "nope"), input=examples(1.0)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "No signature was found with the name: nope",
        ),
        (
            "classify",
            classification_pb2.ClassificationRequest(
                model_spec=spec("half_plus_two", "classify_x_to_y")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Input is empty.",
        ),
        (
            "regress",
            regression_pb2.RegressionRequest(
                model_spec=spec("half_plus_two", "serving_default"), input=examples(1.0)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            None,
        ),
        (
            "multi",
            inference_pb2.MultiInferenceRequest(
                tasks=[
                    inference_pb2.InferenceTask(
                        model_spec=spec("half_plus_two", "regress_x_to_y"),
                        method_name="tensorflow/serving/regress",
                    ),
                    inference_pb2.InferenceTask(
                        model_spec=spec("default", "classify_x_to_y"),
                        method_name="tensorflow/serving/classify",
                    ),
                ],
                input=examples(1.0),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
        ),
        (
            "multi",
            inference_pb2.MultiInferenceRequest(
                tasks=[
                    inference_pb2.InferenceTask(
                        model_spec=spec("half_plus_two", "regress_x_to_y"),
                        method_name="tensorflow/serving/predict",
                    )
                ],
                input=examples(1.0),
            ),
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
        (
            "multi",
            inference_pb2.MultiInferenceRequest(
                tasks=[
                    inference_pb2.InferenceTask(
                        model_spec=spec("half_plus_two", "regress_x_to_y"),
                        method_name="tensorflow/serving/regress",
                    ),
                    inference_pb2.InferenceTask(
                        model_spec=spec("half_plus_two", "regress_x_to_y"),
                        method_name="tensorflow/serving/regress",
                    ),
                ],
                input=examples(1.0),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            "metadata",
            get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec("half_plus_two")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "GetModelMetadataRequest must specify at least one metadata_field",
        ),
        (
            "metadata",
            get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=spec("half_plus_two"), metadata_field=["x"]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Metadata field x is not supported",
        ),
        (
            "status",
            get_model_status_pb2.GetModelStatusRequest(),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Missing ModelSpec",
        ),
        (
            "status",
            get_model_status_pb2.GetModelStatusRequest(model_spec=spec("nope")),
            grpc.StatusCode.NOT_FOUND,
            "Could not find any versions of model nope",
        ),
        (
            "status",
            get_model_status_pb2.GetModelStatusRequest(model_spec=spec("half_plus_two", version=3)),
            grpc.StatusCode.NOT_FOUND,
            "Could not find version 3 of model half_plus_two",
        ),
    ],
)
def test_error_codes_and_messages(
    stubs: Stubs, call: str, proto: Any, code: grpc.StatusCode, message: str | None
) -> None:
    method = {
        "predict": stubs.prediction.Predict,
        "classify": stubs.prediction.Classify,
        "regress": stubs.prediction.Regress,
        "multi": stubs.prediction.MultiInference,
        "metadata": stubs.prediction.GetModelMetadata,
        "status": stubs.model.GetModelStatus,
    }[call]
    with pytest.raises(grpc.RpcError) as info:
        method(proto, 10)
    assert info.value.code() == code
    if message is not None:
        assert info.value.details() == message

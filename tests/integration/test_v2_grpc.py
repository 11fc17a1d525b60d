"""KServe V2 over gRPC (inference.GRPCInferenceService): tritonclient's gRPC client, and
typed ``contents`` sent with aserve's own messages (wire-compatible, see the proto)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from aserve._proto import grpc_predict_v2_pb2 as pb
from support import RunningServer

METHOD = "/inference.GRPCInferenceService/"


@pytest.fixture(scope="module")
def triton(zoo: RunningServer) -> Iterator[Any]:
    client = grpcclient.InferenceServerClient(zoo.grpc_target)
    yield client
    client.close()


@pytest.fixture(scope="module")
def channel(zoo: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(zoo.grpc_target) as channel:
        yield channel


def call(channel: grpc.Channel, method: str, request: Any, response_type: Any) -> Any:
    rpc = channel.unary_unary(
        METHOD + method,
        request_serializer=type(request).SerializeToString,
        response_deserializer=response_type.FromString,
    )
    return rpc(request, timeout=30)


def test_health_and_metadata(triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("half_plus_two")
    assert triton.is_model_ready("two_versions", "123")
    assert not triton.is_model_ready("two_versions", "9")
    assert not triton.is_model_ready("nope")
    server = triton.get_server_metadata(as_json=True)
    assert server["name"] == "aserve" and server["extensions"] == ["binary_tensor_data"]
    metadata = triton.get_model_metadata("half_plus_two", as_json=True)
    assert metadata["platform"] == "tensorflow_savedmodel" and metadata["versions"] == ["123"]
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "1"]}]


def test_raw_inference_of_every_datatype(triton: Any) -> None:
    cases = {
        "float16": np.array([0.5, -2.0], np.float16),
        "float32": np.array([[1.5, 2.25]], np.float32),
        "float64": np.array([1 / 3], np.float64),
        "int8": np.array([-128, 127], np.int8),
        "int64": np.array([-(2**63), 2**63 - 1], np.int64),
        "uint64": np.array([2**64 - 1], np.uint64),
        "bool": np.array([[True], [False]]),
        "string": np.array([b"a\x00b", b""], dtype=object),
    }
    for name, x in cases.items():
        datatype = "BYTES" if x.dtype == object else grpcclient.np_to_triton_dtype(x.dtype)
        tensor = grpcclient.InferInput("x", list(x.shape), datatype)
        tensor.set_data_from_numpy(x)
        result = triton.infer("echo", [tensor], parameters={"signature_name": f"echo_{name}"})
        y = result.as_numpy("y")
        assert y.tolist() == x.tolist() and y.shape == x.shape, name
        assert result.get_response().raw_output_contents  # raw in, raw out


def test_typed_contents_in_and_out(channel: grpc.Channel) -> None:
    request = pb.ModelInferRequest(model_name="echo", id="t-1")
    request.parameters["signature_name"].string_param = "multi"
    a = request.inputs.add(name="a", datatype="FP32", shape=[1, 2])
    a.contents.fp32_contents.extend([1.5, 2.5])
    b = request.inputs.add(name="b", datatype="FP32", shape=[1])
    b.contents.fp32_contents.append(3.25)
    request.outputs.add(name="sum")
    response = call(channel, "ModelInfer", request, pb.ModelInferResponse)
    assert (response.model_name, response.model_version, response.id) == ("echo", "1", "t-1")
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("sum", "FP32", [1])
    assert list(output.contents.fp32_contents) == [7.25] and not response.raw_output_contents


def test_bfloat16_travels_raw(channel: grpc.Channel) -> None:
    import ml_dtypes

    x = np.array([1.5, -0.25, 3e38], ml_dtypes.bfloat16)
    request = pb.ModelInferRequest(model_name="echo", raw_input_contents=[x.tobytes()])
    request.parameters["signature_name"].string_param = "echo_bfloat16"
    request.inputs.add(name="x", datatype="BF16", shape=[3])
    response = call(channel, "ModelInfer", request, pb.ModelInferResponse)
    assert response.outputs[0].datatype == "BF16"
    y = np.frombuffer(response.raw_output_contents[0], ml_dtypes.bfloat16)
    assert y.tobytes() == x.tobytes()


def test_the_messages_are_tritons_on_the_wire(channel: grpc.Channel) -> None:
    """aserve's messages and tritonclient's, field for field: each parses the other's bytes."""
    for ours, theirs in [
        (pb.ModelInferRequest, service_pb2.ModelInferRequest),
        (pb.ModelInferResponse, service_pb2.ModelInferResponse),
        (pb.ModelMetadataResponse, service_pb2.ModelMetadataResponse),
        (pb.RepositoryIndexResponse, service_pb2.RepositoryIndexResponse),
        (pb.RepositoryModelLoadRequest, service_pb2.RepositoryModelLoadRequest),
        (pb.RepositoryModelUnloadRequest, service_pb2.RepositoryModelUnloadRequest),
        (pb.InferParameter, service_pb2.InferParameter),
        (pb.InferTensorContents, service_pb2.InferTensorContents),
    ]:
        assert fields(ours.DESCRIPTOR) == fields(theirs.DESCRIPTOR), ours.DESCRIPTOR.name
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name
    assert methods <= set(theirs)


def fields(descriptor: Any) -> dict[str, Any]:
    return {
        f.name: (f.number, f.type, fields(f.message_type) if f.message_type else None)
        for f in descriptor.fields
        if f.message_type is None or f.message_type.name != descriptor.name
    }


def test_errors_have_v2_codes(triton: Any, channel: grpc.Channel) -> None:
    x = grpcclient.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.array([[1.0]], np.float32))
    cases = [
        ("nope", "", [x], {}, "StatusCode.NOT_FOUND"),
        ("half_plus_two", "9", [x], {}, "StatusCode.NOT_FOUND"),
        ("half_plus_two", "v9", [x], {}, "StatusCode.INVALID_ARGUMENT"),
        ("half_plus_two", "", [x], {"signature_name": "nope"}, "StatusCode.INVALID_ARGUMENT"),
    ]
    for model, version, inputs, parameters, status in cases:
        with pytest.raises(InferenceServerException) as info:
            triton.infer(model, inputs, model_version=version, parameters=parameters)
        assert info.value.status() == status, (model, info.value.message())
    wrong = grpcclient.InferInput("x", [2, 1], "FP32")
    wrong._raw_content = b"\0" * 4  # 4 bytes for 2 floats
    with pytest.raises(InferenceServerException) as info:
        triton.infer("half_plus_two", [wrong])
    assert "which needs 8" in info.value.message()
    with pytest.raises(grpc.RpcError) as rpc:
        call(
            channel,
            "ModelConfig",
            pb.ModelReadyRequest(name="half_plus_two"),
            pb.ModelReadyResponse,
        )
    assert rpc.value.code() is grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as rpc:
        call(channel, "RepositoryIndex", pb.RepositoryIndexRequest(), pb.RepositoryIndexResponse)
    assert rpc.value.code() is grpc.StatusCode.UNIMPLEMENTED  # no --enable_model_management
    assert triton.infer("half_plus_two", [x]).as_numpy("y").tolist() == [[2.5]]

"""KServe V2 over REST against real SavedModels: raw HTTP, and tritonclient's HTTP client.

The zoo server (tests/integration/conftest.py) serves V2 beside TF Serving's API on the same
port; nothing here needs a flag.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from models import ECHO_DTYPES
from support import RunningServer

HEADER = "Inference-Header-Content-Length"


def infer(server: RunningServer, model: str, body: Any, suffix: str = "", **kw: Any) -> Any:
    response = server.post(f"/v2/models/{model}{suffix}/infer", body, **kw)
    assert response.status_code == 200, response.text
    return response


def x_input(values: list[Any], shape: list[int], **extra: Any) -> dict[str, Any]:
    return {"name": "x", "datatype": "FP32", "shape": shape, "data": values, **extra}


def test_server_metadata_and_health(zoo: RunningServer) -> None:
    metadata = zoo.get("/v2").json()
    assert metadata["name"] == "aserve" and metadata["version"]
    assert metadata["extensions"] == ["binary_tensor_data"]  # no --enable_model_management
    assert zoo.get("/v2/health/live").json() == {"live": True}
    assert zoo.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata_and_readiness(zoo: RunningServer) -> None:
    assert zoo.get("/v2/models/half_plus_two").json() == {
        "name": "half_plus_two",
        "versions": ["123"],
        "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    }
    two = zoo.get("/v2/models/two_versions/versions/123").json()
    assert two["versions"] == ["123", "124"]
    assert zoo.get("/v2/models/half_plus_two/ready").json() == {
        "name": "half_plus_two",
        "ready": True,
    }
    assert zoo.get("/v2/models/two_versions/versions/124/ready").status_code == 200
    assert zoo.get("/v2/models/two_versions/versions/9/ready").status_code == 404
    assert zoo.get("/v2/models/nope/ready").status_code == 404
    echo = zoo.get("/v2/models/echo").json()  # no serving_default: no tensors to describe
    assert (echo["inputs"], echo["outputs"]) == ([], [])


def test_json_inference_flat_or_nested_with_the_id_echoed(zoo: RunningServer) -> None:
    body = {"id": "r-1", "inputs": [x_input([1.0, 2.0, 5.0], [3, 1])]}
    response = infer(zoo, "half_plus_two", body)
    assert response.headers["content-type"] == "application/json"
    assert HEADER.lower() not in response.headers
    assert response.json() == {
        "model_name": "half_plus_two",
        "model_version": "123",
        "id": "r-1",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [3, 1], "data": [2.5, 3.0, 4.5]}],
    }
    nested = infer(zoo, "half_plus_two", {"inputs": [x_input([[1.0], [2.0], [5]], [3, 1])]})
    assert nested.json()["outputs"][0]["data"] == [2.5, 3.0, 4.5]
    assert "id" not in nested.json()
    v124 = infer(zoo, "two_versions", {"inputs": [x_input([2.0], [1, 1])]}, "/versions/124")
    assert v124.json()["model_version"] == "124"


def pack_strings(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def test_binary_inputs_and_outputs(zoo: RunningServer) -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    header = json.dumps(
        {
            "parameters": {"signature_name": "multi", "binary_data_output": True},
            "inputs": [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [2, 2],
                    "parameters": {"binary_data_size": 16},
                },
                {"name": "b", "datatype": "FP32", "shape": [2], "data": [10, 20]},
            ],
            "outputs": [
                {"name": "sum"},
                {"name": "label_bytes", "parameters": {"binary_data": False}},
            ],
        }
    ).encode()
    response = infer(
        zoo, "echo", None, content=header + x.tobytes(), headers={HEADER: str(len(header))}
    )
    assert response.headers["content-type"] == "application/octet-stream"
    split = int(response.headers[HEADER])
    doc = json.loads(response.content[:split])
    assert doc["outputs"] == [
        {"name": "sum", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
        {"name": "label_bytes", "datatype": "BYTES", "shape": [2], "data": ["ex", "ex"]},
    ]
    assert np.frombuffer(response.content[split:], "<f4").tolist() == [13.0, 27.0]


def test_binary_strings_both_ways(zoo: RunningServer) -> None:
    data = pack_strings([b"ab", b"", b"xyz\x00\xff"])
    header = json.dumps(
        {
            "parameters": {"signature_name": "echo_string", "binary_data_output": True},
            "inputs": [
                {
                    "name": "x",
                    "datatype": "BYTES",
                    "shape": [3],
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
        }
    ).encode()
    response = infer(zoo, "echo", None, content=header + data, headers={HEADER: str(len(header))})
    split = int(response.headers[HEADER])
    assert response.content[split:] == data
    # as JSON, strings are UTF-8 text; bytes that are not can only come back as binary
    body = {
        "parameters": {"signature_name": "echo_string"},
        "inputs": [{"name": "x", "datatype": "BYTES", "shape": [2], "data": ["ab", "é"]}],
    }
    assert infer(zoo, "echo", body).json()["outputs"][0]["data"] == ["ab", "é"]
    header = header.replace(b'"binary_data_output": true', b'"binary_data_output": false')
    refused = zoo.post(
        "/v2/models/echo/infer", content=header + data, headers={HEADER: str(len(header))}
    )
    assert refused.status_code == 400 and "not UTF-8" in refused.json()["error"]


def bad(body: Any, **kw: Any) -> tuple[Any, dict[str, Any]]:
    return body, kw


def with_binary(
    shape: list[int], size: int, data: bytes, header: str = ""
) -> tuple[Any, dict[str, Any]]:
    """A body whose input x declares ``size`` bytes of binary data and carries ``data``."""
    doc = {"inputs": [{**FP32, "shape": shape, "parameters": {"binary_data_size": size}}]}
    text = json.dumps(doc).encode()
    return bad(None, content=text + data, headers={HEADER: header or str(len(text))})


FP32 = {"name": "x", "datatype": "FP32", "shape": [1, 1]}
ERRORS = {
    "unknown model": (
        "/v2/models/nope/infer",
        bad({"inputs": [x_input([1.0], [1, 1])]}),
        404,
        "Servable not found",
    ),
    "unknown version": (
        "/v2/models/half_plus_two/versions/7/infer",
        bad({"inputs": [x_input([1.0], [1, 1])]}),
        404,
        "Servable not found",
    ),
    "version not a number": (
        "/v2/models/half_plus_two/versions/v1/infer",
        bad({"inputs": []}),
        400,
        "by number",
    ),
    "bad datatype": (
        "/v2/models/half_plus_two/infer",
        bad({"inputs": [{**FP32, "datatype": "FLOAT", "data": [1]}]}),
        400,
        "invalid datatype 'FLOAT'",
    ),
    "datatype not the model's": (
        "/v2/models/half_plus_two/infer",
        bad({"inputs": [{**FP32, "datatype": "FP64", "data": [1]}]}),
        400,
        "the model expects FP32",
    ),
    "shape and data disagree": (
        "/v2/models/half_plus_two/infer",
        bad({"inputs": [x_input([1.0, 2.0, 3.0], [2, 1])]}),
        400,
        "has 2 elements, but 3 were given",
    ),
    "ragged data": (
        "/v2/models/half_plus_two/infer",
        bad({"inputs": [x_input([[1.0], [2.0, 3.0]], [3, 1])]}),
        400,
        "ragged",
    ),
    "strings for numbers": (
        "/v2/models/half_plus_two/infer",
        bad({"inputs": [x_input(["1"], [1, 1])]}),
        400,
        "holds strings, not FP32",
    ),
    "unknown input": (
        "/v2/models/half_plus_two/infer",
        bad({"inputs": [{**FP32, "name": "z", "data": [1]}]}),
        400,
        "Unexpected inference input 'z'",
    ),
    "unknown output": (
        "/v2/models/half_plus_two/infer",
        bad({"inputs": [x_input([1.0], [1, 1])], "outputs": [{"name": "nope"}]}),
        400,
        "output tensor alias not found in signature: nope",
    ),
    "unknown signature": (
        "/v2/models/half_plus_two/infer",
        bad({"parameters": {"signature_name": "nope"}, "inputs": [x_input([1.0], [1, 1])]}),
        400,
        "no signature 'nope'",
    ),
    "binary without the header": (
        "/v2/models/half_plus_two/infer",
        bad({"inputs": [{**FP32, "parameters": {"binary_data_size": 4}}]}),
        400,
        "no Inference-Header-Content-Length",
    ),
    "binary size past the body": (
        "/v2/models/half_plus_two/infer",
        with_binary([1, 1], 8, b"\0" * 4),
        400,
        "does not fit",
    ),
    "binary size not the tensor's": (
        "/v2/models/half_plus_two/infer",
        with_binary([2, 1], 4, b"\0" * 4),
        400,
        "which needs 8",
    ),
    "bytes left over": (
        "/v2/models/half_plus_two/infer",
        with_binary([1, 1], 4, b"\0" * 8),
        400,
        "add up to 4 bytes, but 8",
    ),
    "header past the body": (
        "/v2/models/half_plus_two/infer",
        with_binary([1, 1], 4, b"", header="999"),
        400,
        "not a length within",
    ),
    "not JSON": (
        "/v2/models/half_plus_two/infer",
        bad(None, content=b"{nope"),
        400,
        "Failed to parse",
    ),
    "GET infer": ("/v2/models/half_plus_two/infer", bad(None, method="GET"), 405, "use POST"),
    "unknown path": ("/v2/models/half_plus_two/config", bad(None, method="GET"), 404, "Not found"),
    "management off": (
        "/v2/repository/index",
        bad(None, content=b""),
        501,
        "--enable_model_management",
    ),
}


@pytest.mark.parametrize(("path", "request_", "status", "text"), ERRORS.values(), ids=ERRORS)
def test_errors_are_v2_errors_with_tf_servings_status(
    zoo: RunningServer, path: str, request_: tuple[Any, dict[str, Any]], status: int, text: str
) -> None:
    body, kw = request_[0], dict(request_[1])
    method = kw.pop("method", "POST")
    response = zoo.get(path) if method == "GET" else zoo.post(path, body, **kw)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert text in response.json()["error"], response.json()
    assert infer(zoo, "half_plus_two", {"inputs": [x_input([1.0], [1, 1])]}).status_code == 200


# -- tritonclient's HTTP client, unchanged ----------------------------------------------------


@pytest.fixture(scope="module")
def triton(zoo: RunningServer) -> Any:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{zoo.rest_port}")
    yield client
    client.close()


def test_tritonclient_http_health_and_metadata(triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("half_plus_two")
    assert triton.is_model_ready("two_versions", "124")
    assert not triton.is_model_ready("two_versions", "9")
    assert triton.get_server_metadata()["name"] == "aserve"
    assert triton.get_model_metadata("half_plus_two")["inputs"][0]["datatype"] == "FP32"
    with pytest.raises(InferenceServerException) as info:
        triton.get_model_metadata("nope")
    assert info.value.status() == "404"


# every echo_<dtype> signature whose dtype V2 has (tritonclient names the datatype)
DTYPES = [d for d in ECHO_DTYPES if d not in ("bfloat16", "string", "complex64")]


def values(np_dtype: Any) -> np.ndarray:
    if np_dtype is np.bool_:
        return np.array([[True, False, True]])
    if np.issubdtype(np_dtype, np.integer):
        info = np.iinfo(np_dtype)
        return np.array([[info.min, 7, info.max]], np_dtype)
    return np.array([[0.1, -2.5, 1e4]], np_dtype)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("name", DTYPES)
def test_tritonclient_http_every_datatype(triton: Any, name: str, binary: bool) -> None:
    x = values(np.dtype(name).type)
    datatype = httpclient.np_to_triton_dtype(x.dtype)
    tensor = httpclient.InferInput("x", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    output = httpclient.InferRequestedOutput("y", binary_data=binary)
    result = triton.infer(
        "echo", [tensor], outputs=[output], parameters={"signature_name": f"echo_{name}"}
    )
    y = result.as_numpy("y")
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, x)


def test_tritonclient_http_strings_and_default_binary_outputs(triton: Any) -> None:
    s = np.array([b"ab", b"xyz"], dtype=object)
    tensor = httpclient.InferInput("s", [2], "BYTES")
    tensor.set_data_from_numpy(s)
    result = triton.infer("echo", [tensor], parameters={"signature_name": "text"}, request_id="7")
    assert result.get_response()["id"] == "7"
    assert result.as_numpy("length").tolist() == [2, 3]  # no outputs named: all, in binary
    assert result.as_numpy("upper").tolist() == [b"AB", b"XYZ"]
    with pytest.raises(InferenceServerException) as info:
        triton.infer("echo", [tensor], parameters={"signature_name": "nope"})
    assert info.value.status() == "400" and "no signature 'nope'" in info.value.message()

"""TF Serving's REST API against real SavedModels: values, formats, status and metadata."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import numpy as np
import pytest

from support import TESTDATA, RunningServer


def predict(server: RunningServer, model: str, body: Any, suffix: str = "") -> Any:
    response = server.post(f"/v1/models/{model}{suffix}:predict", body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return json.loads(response.text)


def test_half_plus_two_row_and_columnar(zoo: RunningServer) -> None:
    assert predict(zoo, "half_plus_two", {"instances": [1.0, 2.0, 5.0]}) == {
        "predictions": [2.5, 3.0, 4.5]
    }
    assert predict(zoo, "half_plus_two", {"inputs": [1.0, 2.0, 5.0]}) == {
        "outputs": [2.5, 3.0, 4.5]
    }
    assert predict(zoo, "half_plus_two", {"inputs": {"x": [[1.0], [2.0]]}}) == {
        "outputs": [[2.5], [3.0]]
    }
    assert predict(zoo, "half_plus_two", {"instances": [[1.0], [2.0]]}) == {
        "predictions": [[2.5], [3.0]]
    }
    # a JSON integer is a valid float; the signature's declared shape [-1,1] is not enforced
    assert predict(zoo, "half_plus_two", {"instances": [[[1, 2], [3, 4]]]}) == {
        "predictions": [[[2.5, 3.0], [3.5, 4.0]]]
    }


def tf_float_text(value: np.float32) -> str:
    """TF Serving's WriteDecimal for a float32, written independently of aserve's codec."""
    text = f"{value:.6g}"
    if np.float32(text) != value:
        text = f"{value:.9g}"
    return text if ("." in text or "e" in text) else text + ".0"


def test_float_rendering_is_tf_servings(zoo: RunningServer) -> None:
    xs = [2.0, 0.2, 1234.567, 2e7, 3e-5]
    response = zoo.post("/v1/models/half_plus_two:predict", {"instances": xs})
    ys = [np.float32(np.float32(x) * np.float32(0.5) + np.float32(2)) for x in xs]
    tokens = response.text.split("[", 1)[1].split("]", 1)[0].replace(" ", "").replace("\n", "")
    assert tokens.split(",") == [tf_float_text(y) for y in ys]
    assert tokens.split(",")[:3] == ["3.0", "2.1", "619.283508"]


def test_signature_name_version_and_label_urls(zoo: RunningServer) -> None:
    body = {"signature_name": "serving_default", "instances": [2.0]}
    assert predict(zoo, "two_versions", body, "/versions/123") == {"predictions": [3.0]}
    assert predict(zoo, "two_versions", body, "/versions/124") == {"predictions": [3.0]}


def test_models_loaded_only_by_the_v1_session_loader(zoo: RunningServer) -> None:
    assert predict(zoo, "half_plus_three", {"instances": [1.0, 2.0, 5.0]}) == {
        "predictions": [3.5, 4.0, 5.5]
    }
    assert predict(zoo, "tf2", {"instances": [2.0, 3.0]}) == {"predictions": [3.0, 3.5]}
    first = predict(zoo, "counter", {"signature_name": "incr_counter_by", "inputs": 3.0})
    second = predict(zoo, "counter", {"signature_name": "incr_counter_by", "inputs": 2.0})
    assert second["outputs"] == first["outputs"] + 2.0  # state lives in the loaded version


def test_classify_and_regress(zoo: RunningServer) -> None:
    classify = zoo.post(
        "/v1/models/half_plus_two:classify",
        {
            "signature_name": "classify_x_to_y",
            "examples": [{"x": 2.0}, {"x": 20.0}],
        },
    )
    assert classify.status_code == 200, classify.text
    assert classify.json() == {"results": [[["", 3.0]], [["", 12.0]]]}
    regress = zoo.post(
        "/v1/models/half_plus_two:regress",
        {
            "signature_name": "regress_x_to_y",
            "examples": [{"x": 2.0}, {"x": 80.0}],
        },
    )
    assert regress.json() == {"results": [3.0, 42.0]}
    y2 = zoo.post(
        "/v1/models/half_plus_two:regress",
        {
            "signature_name": "regress_x_to_y2",
            "context": {"x": 2.0},
            "examples": [{}, {}],
        },
    )
    assert y2.json() == {"results": [4.0, 4.0]}
    three = zoo.post(
        "/v1/models/half_plus_three:regress",
        {
            "signature_name": "tensorflow/serving/regress",
            "examples": [{"x": 1.0}, {"x": 2.0}],
        },
    )
    assert three.json() == {"results": [3.5, 4.0]}
    tf2 = zoo.post(
        "/v1/models/tf2:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    )
    assert tf2.json() == {"results": [[["", 3.0]]]}


def test_status(zoo: RunningServer) -> None:
    expected = {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert zoo.get("/v1/models/half_plus_two").json() == expected
    assert zoo.get("/v1/models/half_plus_two/versions/123").json() == expected
    assert zoo.get("/v1/models/half_plus_two/labels/anything").json() == expected  # label ignored
    both = zoo.get("/v1/models/two_versions").json()["model_version_status"]
    assert [(v["version"], v["state"]) for v in both] == [
        ("124", "AVAILABLE"),
        ("123", "AVAILABLE"),
    ]


def test_metadata_matches_tf_serving(zoo: RunningServer) -> None:
    expected = json.loads((TESTDATA / "half_plus_two_model_metadata.json").read_text())
    response = zoo.get("/v1/models/default/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == expected
    assert zoo.get("/v1/models/default/versions/123/metadata").json() == expected


def test_every_json_dtype_round_trips(zoo: RunningServer) -> None:
    cases: list[tuple[str, Any]] = [
        ("float32", [1.5, -2.25]),
        ("float64", [0.1, 1e300]),
        ("int8", [-128, 127]),
        ("int16", [-32768, 7]),
        ("int32", [-(2**31), 2**31 - 1]),
        ("int64", [-(2**63), 2**63 - 1]),
        ("uint8", [0, 255]),
        ("uint32", [0, 2**32 - 1]),
        ("uint64", [0, 2**64 - 1]),
        ("bool", [True, False]),
        ("string", ["a", "ü"]),
    ]
    for dtype, values in cases:
        body = {"signature_name": f"echo_{dtype}", "instances": values}
        assert predict(zoo, "echo", body) == {"predictions": values}, dtype


def test_binary_strings_multi_input_and_multi_output(zoo: RunningServer) -> None:
    raw = bytes(range(256))
    b64 = base64.b64encode(raw).decode()
    text = predict(
        zoo,
        "echo",
        {"signature_name": "text", "instances": [{"b64": base64.b64encode(b"ab").decode()}, "xyz"]},
    )
    assert text == {"predictions": [{"length": 2, "upper": "AB"}, {"length": 3, "upper": "XYZ"}]}
    echo = predict(zoo, "echo", {"signature_name": "echo_string", "inputs": [{"b64": b64}]})
    assert echo == {"outputs": [raw.decode("utf-8", "replace")]}
    rows = predict(
        zoo,
        "echo",
        {
            "signature_name": "multi",
            "instances": [
                {"a": [1.0, 2.0], "b": 3.0},
                {"a": [4.0, 5.0], "b": 6.0},
            ],
        },
    )
    assert rows == {
        "predictions": [
            {"label_bytes": {"b64": base64.b64encode(b"ex").decode()}, "sum": 6.0},
            {"label_bytes": {"b64": base64.b64encode(b"ex").decode()}, "sum": 15.0},
        ]
    }
    columns = predict(
        zoo, "echo", {"signature_name": "multi", "inputs": {"a": [[1.0, 2.0]], "b": [3.0]}}
    )
    assert columns == {"outputs": {"label_bytes": [{"b64": "ZXg="}], "sum": [6.0]}}


def test_gzip_body_and_any_content_type(zoo: RunningServer) -> None:
    body = gzip.compress(json.dumps({"instances": [2.0]}).encode())
    response = zoo.post(
        "/v1/models/half_plus_two:predict",
        content=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.json() == {"predictions": [3.0]}


def test_nan_and_infinity_tokens(zoo: RunningServer) -> None:
    response = zoo.post(
        "/v1/models/echo:predict",
        content='{"signature_name": "echo_float32", "instances": [NaN, Infinity, -Inf]}',
    )
    assert response.status_code == 200, response.text
    assert (
        response.text.replace(" ", "").replace("\n", "")
        == '{"predictions":[NaN,Infinity,-Infinity]}'
    )


@pytest.mark.parametrize("origin,status", [("https://example.com", 200), ("", 400)])
def test_cors_preflight(zoo: RunningServer, origin: str, status: int) -> None:
    headers = {"Origin": origin} if origin else {}
    assert (
        zoo.http.options("/v1/models/half_plus_two:predict", headers=headers).status_code == status
    )

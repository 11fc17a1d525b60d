"""Bad requests get TF Serving's error text and status, and never disturb other requests."""

from __future__ import annotations

import concurrent.futures
import json

import pytest

from support import RunningServer

HPT = "/v1/models/half_plus_two:predict"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        (
            "POST",
            "/v1/models/half:predict",
            '{"instances": [1.0]}',
            404,
            "Servable not found for request: Latest(half)",
        ),
        (
            "POST",
            "/v1/models/half_plus_two/versions/7:predict",
            '{"instances": [1.0]}',
            404,
            "Servable not found for request: Specific(half_plus_two, 7)",
        ),
        (
            "POST",
            "/v1/models/half_plus_two/labels/nope:predict",
            '{"instances": [1.0]}',
            400,
            "Unrecognized servable version label: nope",
        ),
        ("POST", HPT, "", 400, "JSON Parse error: The document is empty"),
        ("POST", HPT, "{", 400, "JSON Parse error: Missing a name for object member. at offset: 1"),
        ("POST", HPT, "[1.0]", 400, "JSON Value: [1.0] Is not object"),
        ("POST", HPT, '{"instances": [1.0], "inputs": [1.0]}', 400, None),
        ("POST", HPT, '{"foo": 1}', 400, "Missing 'inputs' or 'instances' key"),
        ("POST", HPT, '{"instances": []}', 400, None),
        ("POST", HPT, '{"instances": 1.0}', 400, None),
        ("POST", HPT, '{"signature_name": 5, "instances": [1.0]}', 400, None),
        (
            "POST",
            HPT,
            '{"signature_name": "nope", "instances": [1.0]}',
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
        (
            "POST",
            HPT,
            '{"instances": ["a"]}',
            400,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "a" Type: String is not of expected type: float',
        ),
        ("POST", HPT, '{"instances": [true]}', 400, None),
        ("POST", HPT, '{"instances": [[1.0], [1.0, 2.0]]}', 400, None),
        (
            "POST",
            HPT,
            '{"inputs": {"y": [1.0]}}',
            400,
            "Missing named input: x in 'inputs' object.",
        ),
        (
            "POST",
            "/v1/models/echo:predict",
            '{"signature_name": "echo_int32", "instances": [1.5]}',
            400,
            None,
        ),
        (
            "POST",
            "/v1/models/echo:predict",
            '{"signature_name": "echo_float16", "inputs": [1.5]}',
            501,
            "Conversion of JSON Value: 1.5 to type: half",
        ),
        (
            "POST",
            "/v1/models/echo:predict",
            '{"signature_name": "echo_uint16", "instances": [1]}',
            400,
            "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: "
            "Conversion of JSON Value: 1 to type: uint16",
        ),
        (
            "POST",
            "/v1/models/echo:predict",
            '{"signature_name": "multi", "instances": [1.0]}',
            400,
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:classify",
            '{"signature_name": "classify_x_to_y"}',
            400,
            None,
        ),
        (
            "POST",
            "/v1/models/half_plus_two:regress",
            '{"signature_name": "nope", "examples": [{"x": 1.0}]}',
            400,
            "No signature was found with the name: nope",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:regress",
            '{"signature_name": "regress_x_to_y", "examples": [{"x": null}]}',
            400,
            "Feature: x has element with unexpected JSON type: Null",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:PREDICT",
            '{"instances": [1.0]}',
            400,
            "Malformed request: POST /v1/models/half_plus_two:PREDICT",
        ),
        ("POST", "/v1/models", "{}", 400, "Malformed request: POST /v1/models"),
        ("GET", "/v1/models", None, 400, "Missing model name in request."),
        ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
        (
            "GET",
            "/v1/models/half_plus_two/versions/9",
            None,
            404,
            "Could not find version 9 of model half_plus_two",
        ),
        (
            "GET",
            "/v1/models/nope/metadata",
            None,
            404,
            "Servable not found for request: Latest(nope)",
        ),
        ("GET", "/v1/foo", None, 400, "Malformed request: GET /v1/foo"),
        ("PUT", HPT, "{}", 400, f"Malformed request: PUT {HPT}"),
        (
            "DELETE",
            "/v1/models/half_plus_two",
            None,
            400,
            "Malformed request: DELETE /v1/models/half_plus_two",
        ),
    ],
)
def test_error_matrix(
    zoo: RunningServer, method: str, path: str, body: str | None, status: int, error: str | None
) -> None:
    response = zoo.http.request(method, path, content=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    payload = json.loads(response.text)
    assert list(payload) == ["error"] and payload["error"]
    if error is not None:
        assert payload["error"] == error


def test_body_over_the_limit_gets_413(zoo: RunningServer) -> None:
    big = json.dumps({"instances": [1.0] * 50_000})  # the zoo allows 100 kB
    response = zoo.post(HPT, content=big)
    assert response.status_code == 413
    assert "exceeds the limit of 100000 bytes" in response.json()["error"]
    assert zoo.post(HPT, {"instances": [2.0]}).json() == {"predictions": [3.0]}


def test_bad_requests_do_not_disturb_good_ones(zoo: RunningServer) -> None:
    bad = ["{", '{"instances": ["a"]}', '{"instances": [[1.0], [1.0, 2.0]]}', "", "[]"]

    def good(i: int) -> float:
        return zoo.post(HPT, {"instances": [float(i)]}).json()["predictions"][0]

    def broken(i: int) -> int:
        return zoo.post(HPT, content=bad[i % len(bad)]).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        goods = pool.map(good, range(200))
        bads = pool.map(broken, range(200))
        assert list(goods) == [i * 0.5 + 2 for i in range(200)]
        assert set(bads) == {400}

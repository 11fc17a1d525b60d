"""The access log and the log format, end to end."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import grpc
import httpx
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from aserve.logs import ACCESS_KEYS
from support import (
    HALF_PLUS_TWO,
    AserveProcess,
    RunningServer,
    Stubs,
    run_server,
    wait_until,
)

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def predict_request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))
    return request


def lines(path: Path, count: int) -> list[str]:
    wait_until(
        lambda: path.exists() and len(path.read_text().splitlines()) >= count, 10, "log lines"
    )
    return path.read_text().splitlines()


def settled(server: RunningServer, path: Path) -> int:
    """How many lines the log has once every earlier request's line is written: lines are
    written in order, off the request path, so a marker request's line comes after them."""
    server.http.get("/v1/models/m", headers={"x-request-id": "marker"})
    wait_until(lambda: path.exists() and "marker" in path.read_text(), 10, "the marker line")
    logged = path.read_text().splitlines()
    return next(i for i, line in enumerate(logged) if "marker" in line) + 1


def test_json_access_log_has_exactly_the_documented_keys(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    args = ("--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", f"--access_log={log}")
    with run_server(*args, "--log_format=json") as server:
        server.wait_for_versions("m", {123})
        before = settled(server, log)
        answer = server.post(
            "/v1/models/m/versions/123:predict",
            {"instances": [1.0]},
            headers={"x-request-id": "client-id-1"},
        )
        assert answer.headers["x-request-id"] == "client-id-1"
        unknown = server.get("/v1/models/nope")
        assert unknown.status_code == 404 and unknown.headers["x-request-id"]  # generated
        with grpc.insecure_channel(server.grpc_target) as channel:
            Stubs(channel).prediction.Predict(predict_request(), 10)
        entries = [json.loads(line) for line in lines(log, before + 3)[before:]]
    predict, status, grpc_call = entries[-3:]
    for entry in entries:
        assert tuple(entry) == ACCESS_KEYS
        assert RFC3339.fullmatch(entry["time"])
    assert predict | {"time": None, "latency_ms": None, "peer": None} == {
        "time": None,
        "request_id": "client-id-1",
        "protocol": "rest",
        "api": "predict",
        "model": "m",
        "version": 123,
        "label": None,
        "signature": "serving_default",
        "status": "OK",
        "http_status": 200,
        "latency_ms": None,
        "batch_size": None,
        "bytes_in": len(b'{"instances": [1.0]}'),
        "bytes_out": len(answer.content),
        "peer": None,
    }
    assert predict["latency_ms"] > 0 and predict["peer"].startswith("127.0.0.1:")
    assert (status["api"], status["status"], status["http_status"]) == ("status", "NOT_FOUND", 404)
    assert status["request_id"] == unknown.headers["x-request-id"]
    assert (grpc_call["protocol"], grpc_call["api"], grpc_call["status"]) == (
        "grpc",
        "Predict",
        "OK",
    )
    assert grpc_call["http_status"] is None and grpc_call["version"] == 123


def test_text_access_log_and_json_server_lines_on_stderr() -> None:
    args = (
        "--model_name=m",
        "--model_base_path=examples/models/half_plus_two",
        "--access_log=stderr",
        "--log_format=json",
    )
    with AserveProcess(*args) as server:
        server.wait_until_listening()
        httpx.post(f"{server.url}/v1/models/m:predict", json={"instances": [1.0]})
        server.wait_for_log('"api": "predict"')
        server.signal(signal.SIGTERM)
        assert server.wait(30) == 0
    python_lines = [
        line
        for line in server.lines
        if not line.startswith(("I0000", "W0000", "E0000", "WARNING: All log messages"))
        and "oneDNN" not in line
        and "rebuild TensorFlow" not in line
        and not line.startswith("To enable the following")
    ]
    parsed = [json.loads(line) for line in python_lines]  # every aserve line is one JSON object
    assert any(p.get("message", "").startswith("aserve ready") for p in parsed)
    assert any(p.get("api") == "predict" and p.get("status") == "OK" for p in parsed)


def test_text_access_log_lines(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with run_server(
        "--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", f"--access_log={log}"
    ) as server:
        server.wait_for_versions("m", {123})
        before = settled(server, log)
        server.post("/v1/models/m:predict", {"instances": [1.0]}, headers={"x-request-id": "t-1"})
        line = lines(log, before + 1)[before]
    assert re.fullmatch(
        r"\S+Z 127\.0\.0\.1:\d+ rest predict model=m version=123 label=- "
        r"signature=serving_default status=OK http_status=200 latency_ms=[\d.]+ batch_size=- "
        r"bytes_in=20 bytes_out=\d+ id=t-1",
        line,
    ), line

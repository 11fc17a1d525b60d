"""The request pipeline end to end: one record per request on every front end, observers that
fail safely, supervised tasks, one shutdown deadline for every front end, prompt reloads."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_management_pb2, predict_pb2

from aserve import flags
from aserve.errors import Code
from aserve.records import RequestRecord
from aserve.server import Server
from aserve.supervisor import TaskDied
from support import HALF_PLUS_TWO, TESTDATA, Stubs, copy_version, free_port, run_server, wait_until


class Recorder:
    """An observer keeping every finished request's record."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def request_finished(self, record: RequestRecord) -> None:
        self.records.append(record)

    def last(self, api: str) -> RequestRecord:
        return [r for r in self.records if r.api == api][-1]


def predict_request(value: float = 1.0) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].dtype = 1  # DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add(size=1)
    request.inputs["x"].float_val.append(value)
    return request


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    recorder = Recorder()
    args = (
        "--model_name=m",
        f"--model_base_path={HALF_PLUS_TWO}",
        f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}",
        "--rest_api_max_body_bytes=1000",
    )
    with run_server(*args, observers=[recorder]) as server:
        server.wait_for_versions("m", {123})
        yield server, recorder


def test_rest_requests_are_recorded_whatever_their_fate(recorded: Any) -> None:
    server, recorder = recorded
    ok = server.post("/v1/models/m:predict", {"instances": [1.0]}, headers={"x-request-id": "r-1"})
    assert ok.status_code == 200
    record = recorder.last("predict")
    assert (record.request_id, record.protocol, record.model, record.version) == (
        "r-1",
        "rest",
        "m",
        123,
    )
    assert (record.signature, record.code, record.http_status) == ("serving_default", Code.OK, 200)
    assert record.bytes_in == len(b'{"instances": [1.0]}') and record.bytes_out == len(ok.content)
    assert record.peer.startswith("127.0.0.1:") and record.latency > 0 and record.runtime

    assert server.get("/nowhere").status_code == 404
    unknown = recorder.records[-1]
    assert (unknown.api, unknown.model, unknown.code, unknown.http_status) == (
        "",
        "",
        Code.NOT_FOUND,
        404,
    )
    assert unknown.request_id  # generated when the client sends none

    assert server.post("/v1/models/m:nope", {}).status_code == 400
    assert (recorder.records[-1].code, recorder.records[-1].http_status) == (
        Code.INVALID_ARGUMENT,
        400,
    )

    headers = {"Origin": "http://example.com"}
    assert server.http.options("/v1/models/m:predict", headers=headers).status_code == 200
    assert (recorder.records[-1].api, recorder.records[-1].http_status) == ("preflight", 200)

    assert server.get("/monitoring/prometheus/metrics").status_code == 200
    assert recorder.records[-1].api == "metrics"

    too_large = server.post("/v1/models/m:predict", content=b"[" * 2000)
    assert too_large.status_code == 413
    record = recorder.last("predict")
    assert (record.code, record.http_status) == (Code.RESOURCE_EXHAUSTED, 413)


def test_grpc_calls_are_recorded_whatever_their_fate(recorded: Any) -> None:
    server, recorder = recorded
    with grpc.insecure_channel(server.grpc_target) as channel:
        stubs = Stubs(channel)
        stubs.prediction.Predict(predict_request(), 10, metadata=[("x-request-id", "g-1")])
        record = recorder.last("Predict")
        assert (record.request_id, record.protocol, record.model, record.version) == (
            "g-1",
            "grpc",
            "m",
            123,
        )
        assert (record.code, record.http_status, record.signature) == (
            Code.OK,
            None,
            "serving_default",
        )
        assert record.bytes_in == predict_request().ByteSize() and record.bytes_out > 0

        raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        with pytest.raises(grpc.RpcError) as undecodable:
            raw(b"\xff\xff\xff", timeout=10)
        assert undecodable.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert recorder.last("Predict").code is Code.INVALID_ARGUMENT

        with pytest.raises(grpc.RpcError) as unknown:
            channel.unary_unary("/no.Such/Method")(b"", timeout=10)
        assert unknown.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert recorder.records[-1].code is Code.UNIMPLEMENTED


@pytest.mark.parametrize("grpc_server", ["native", "grpcio"])
def test_a_stream_whose_client_leaves_is_recorded_cancelled(grpc_server: str) -> None:
    recorder = Recorder()
    args = (
        "--model_name=m",
        f"--model_base_path={HALF_PLUS_TWO}",
        f"--grpc_server={grpc_server}",
        "--enable_grpc_healthcheck_service",
    )
    with run_server(*args, observers=[recorder]) as server:
        server.wait_for_versions("m", {123})
        with grpc.insecure_channel(server.grpc_target) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=30
            )
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            assert not any(r.api == "Watch" for r in recorder.records)  # still open
            watch.cancel()
            wait_until(lambda: any(r.api == "Watch" for r in recorder.records), 10, "its record")
        # the server still answers, on a new channel
        with grpc.insecure_channel(server.grpc_target) as channel:
            Stubs(channel).prediction.Predict(predict_request(), 10)
    record = recorder.last("Watch")
    assert (record.protocol, record.code, record.bytes_out) == ("grpc", Code.CANCELLED, 2)


def test_an_observer_that_raises_never_fails_a_request(tmp_path: Path) -> None:
    class Broken:
        def request_finished(self, record: RequestRecord) -> None:
            raise RuntimeError("observer bug")

    recorder = Recorder()
    args = ("--model_name=m", f"--model_base_path={HALF_PLUS_TWO}")
    with run_server(*args, observers=[Broken(), recorder]) as server:
        server.wait_for_versions("m", {123})
        answer = server.post("/v1/models/m:predict", {"instances": [2.0]})
        assert (answer.status_code, answer.json()) == (200, {"predictions": [3.0]})
        with grpc.insecure_channel(server.grpc_target) as channel:
            response = Stubs(channel).prediction.Predict(predict_request(2.0), 10)
        assert list(response.outputs["y"].float_val) == [3.0]
        assert {r.api for r in recorder.records} >= {"predict", "Predict"}


@pytest.mark.parametrize(
    ("base_path", "reason"),
    [
        ("missing", "Could not find base path"),
        ("empty", "No versions of servable added found under base path"),
    ],
)
def test_a_reload_adding_a_model_with_nothing_to_load_answers_at_once(
    tmp_path: Path, base_path: str, reason: str
) -> None:
    (tmp_path / "empty").mkdir()
    with run_server("--model_name=m", f"--model_base_path={HALF_PLUS_TWO}") as server:
        server.wait_for_versions("m", {123})
        request = model_management_pb2.ReloadConfigRequest()
        for name, path in (("m", str(HALF_PLUS_TWO)), ("added", str(tmp_path / base_path))):
            request.config.model_config_list.config.add(
                name=name, base_path=path, model_platform="tensorflow"
            )
        with (
            grpc.insecure_channel(server.grpc_target) as channel,
            pytest.raises(grpc.RpcError) as failed,
        ):
            Stubs(channel).model.HandleReloadConfigRequest(request, timeout=30)
        assert failed.value.code() is grpc.StatusCode.UNKNOWN  # not DEADLINE_EXCEEDED
        assert failed.value.details().startswith(
            "1 model(s) did not become available: {{name: added}"
        )
        assert reason in failed.value.details()
        assert server.get("/v1/models/added").status_code == 404  # no version seen
        assert server.post("/v1/models/m:predict", {"instances": [1.0]}).status_code == 200


def test_a_background_task_that_dies_shuts_the_server_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rest_port, grpc_port = free_port(), free_port()
    options = flags.parse(
        [
            "--host=127.0.0.1",
            f"--rest_api_port={rest_port}",
            f"--port={grpc_port}",
            "--model_name=m",
            f"--model_base_path={HALF_PLUS_TWO}",
        ]
    )
    server = Server(options)

    async def dies() -> None:
        raise RuntimeError("the poller lost its mind")

    def on_ready() -> None:
        assert server.supervisor is not None
        server.supervisor.spawn(dies(), name="doomed")

    with pytest.raises(
        TaskDied, match="aserve-doomed died: RuntimeError: the poller lost its mind"
    ):
        uvloop.run(asyncio.wait_for(server.serve(on_ready=on_ready), 60))
    assert "aserve-doomed died; stopping the server" in caplog.text
    for port in (rest_port, grpc_port):  # both listeners closed in the orderly shutdown
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_shutdown_stops_every_front_end_at_once_and_drains_what_they_accepted(
    tmp_path: Path, built_models: dict[str, Path]
) -> None:
    copy_version(built_models["gate"] / "1", tmp_path, 1)
    gate = tmp_path / "gate.txt"
    with run_server("--model_name=gate", f"--model_base_path={tmp_path}") as server:
        server.wait_for_versions("gate", {1})
        held: dict[str, httpx.Response] = {}
        body = {"inputs": {"path": [str(gate)]}}
        request = threading.Thread(
            target=lambda: held.update(r=server.post("/v1/models/gate:predict", body))
        )
        request.start()
        core = server.server.core
        assert core is not None
        wait_until(lambda: core.registry._models["gate"].versions[1].refs == 1, 30, "in flight")
        server.request_stop()
        wait_until(lambda: core.draining, 10, "draining")
        # gRPC stops accepting while REST is still draining its held request
        with grpc.insecure_channel(server.grpc_target) as channel:
            refused = predict_request()
            refused.model_spec.name = "gate"
            with pytest.raises(grpc.RpcError) as info:
                Stubs(channel).prediction.Predict(refused, timeout=10, wait_for_ready=False)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert request.is_alive()
        staged = tmp_path / "gate.tmp"
        staged.write_text("released")
        staged.rename(gate)
        request.join(30)
        assert held["r"].status_code == 200 and held["r"].json() == {"outputs": ["released"]}

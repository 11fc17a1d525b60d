"""gRPC server features: tensor_content replies, deadlines, health, TLS, config reloads, warm-up."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_management_pb2, model_pb2, predict_pb2
from tensorflow_serving.config import model_server_config_pb2

from aserve._proto import ssl_config_pb2
from certs import certificate, pem
from support import (
    HALF_PLUS_THREE,
    HALF_PLUS_TWO,
    TESTDATA,
    Stubs,
    copy_version,
    run_server,
    wait_until,
)

X = np.array([2.0], np.float32)


def predict(
    stubs: Stubs, name: str, x: np.ndarray = X, timeout: float = 10, **spec: object
) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name, **spec))
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    return stubs.prediction.Predict(request, timeout)


def test_tensor_content_replies() -> None:
    with run_server(
        "--model_name=m",
        f"--model_base_path={HALF_PLUS_TWO}",
        "--enable_serialization_as_tensor_content",
    ) as server:
        server.wait_for_versions("m", {123})
        with grpc.insecure_channel(server.grpc_target) as channel:
            output = predict(Stubs(channel), "m", np.array([2.0, 3.0], np.float32)).outputs["y"]
    assert not output.float_val and output.tensor_content
    assert tf.make_ndarray(output).tolist() == [3.0, 3.5]


def test_deadline_bounds_the_model_run_and_frees_the_workers(
    tmp_path: Path, built_models: dict[str, Path]
) -> None:
    base = tmp_path / "gate"
    base.mkdir()
    copy_version(built_models["gate"] / "1", base, 1)
    config = tmp_path / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "gate" base_path: "{base}" model_platform: "tensorflow" }} '
        f'config {{ name: "m" base_path: "{HALF_PLUS_TWO}" model_platform: "tensorflow" }} }}'
    )
    with run_server(f"--model_config_file={config}", "--num_worker_threads=2") as server:
        server.wait_for_versions("gate", {1})
        server.wait_for_versions("m", {123})
        with grpc.insecure_channel(server.grpc_target) as channel:
            stubs = Stubs(channel)

            def wait_forever(_: int) -> grpc.StatusCode:
                request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="gate"))
                request.inputs["path"].CopyFrom(tf.make_tensor_proto([str(tmp_path / "never")]))
                try:
                    stubs.prediction.Predict(request, 0.5)
                except grpc.RpcError as e:
                    return e.code()
                return grpc.StatusCode.OK

            with ThreadPoolExecutor(6) as pool:  # more stuck calls than workers
                codes = set(pool.map(wait_forever, range(6)))
            assert codes == {grpc.StatusCode.DEADLINE_EXCEEDED}
            started = time.monotonic()
            assert list(predict(stubs, "m", timeout=30).outputs["y"].float_val) == [3.0]
            assert time.monotonic() - started < 10  # no worker is still stuck in the gate


def test_health_is_not_serving_until_the_models_are_available(tmp_path: Path) -> None:
    with (
        run_server(
            "--model_name=m", f"--model_base_path={tmp_path}", "--enable_grpc_healthcheck_service"
        ) as server,
        grpc.insecure_channel(server.grpc_target) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)

        def status(service: str) -> int:
            return health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status

        services = [
            "",
            "tensorflow.serving.PredictionService",
            "PredictionService",
            "ModelService",
        ]
        assert {status(s) for s in services} == {health_pb2.HealthCheckResponse.NOT_SERVING}
        copy_version(HALF_PLUS_TWO / "00000123", tmp_path, 1)
        wait_until(lambda: status("") == health_pb2.HealthCheckResponse.SERVING, 60, "SERVING")
        assert {status(s) for s in services} == {health_pb2.HealthCheckResponse.SERVING}


def test_mutual_tls(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aserve")
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = certificate("test-ca", ca_key, None, ca=True)
    server_cert = certificate("localhost", server_key, (ca, ca_key))
    client_cert = certificate("client", client_key, (ca, ca_key))
    ssl = ssl_config_pb2.SSLConfig(
        server_key=pem(server_key).decode(),
        server_cert=pem(server_cert).decode(),
        custom_ca=pem(ca).decode(),
        client_verify=True,
    )
    (tmp_path / "ssl.config").write_text(text_format.MessageToString(ssl))
    with run_server(
        "--model_name=m",
        f"--model_base_path={HALF_PLUS_TWO}",
        f"--ssl_config_file={tmp_path / 'ssl.config'}",
    ) as server:
        server.wait_for_versions("m", {123})
        with_cert = grpc.ssl_channel_credentials(pem(ca), pem(client_key), pem(client_cert))
        with grpc.secure_channel(server.grpc_target, with_cert) as channel:
            assert list(predict(Stubs(channel), "m").outputs["y"].float_val) == [3.0]
        without_cert = grpc.ssl_channel_credentials(pem(ca))
        with (
            grpc.secure_channel(server.grpc_target, without_cert) as channel,
            pytest.raises(grpc.RpcError) as info,
        ):
            predict(Stubs(channel), "m", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(server.grpc_target) as channel, pytest.raises(grpc.RpcError):
            predict(Stubs(channel), "m", timeout=5)
    assert "grpcio serves, since the native server does not support TLS" in caplog.text


def _config(**models: Path) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    for name, path in models.items():
        config.model_config_list.config.add(
            name=name, base_path=str(path), model_platform="tensorflow"
        )
    return config


def test_reload_config_adds_and_removes_models() -> None:
    with run_server("--model_name=two", f"--model_base_path={HALF_PLUS_TWO}") as server:
        server.wait_for_versions("two", {123})
        with grpc.insecure_channel(server.grpc_target) as channel:
            stubs = Stubs(channel)
            reload = stubs.model.HandleReloadConfigRequest
            added = reload(
                model_management_pb2.ReloadConfigRequest(
                    config=_config(two=HALF_PLUS_TWO, three=HALF_PLUS_THREE)
                ),
                60,
            )
            assert added.status.error_code == 0
            # the call returns once the added model is AVAILABLE
            assert list(predict(stubs, "three").outputs["y"].float_val) == [4.0]
            removed = reload(
                model_management_pb2.ReloadConfigRequest(config=_config(three=HALF_PLUS_THREE)), 60
            )
            assert removed.status.error_code == 0
            server.wait_for_state("two", 123, "END")
            with pytest.raises(grpc.RpcError) as info:
                predict(stubs, "two")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            bad = _config(three=HALF_PLUS_THREE)
            bad.model_config_list.config[0].model_platform = "pytorch"
            with pytest.raises(grpc.RpcError) as info:
                reload(model_management_pb2.ReloadConfigRequest(config=bad), 60)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == "Model three requests unsupported platform pytorch"
            trailer = dict(info.value.trailing_metadata())[
                "tensorflow.serving.reloadconfigresponse-bin"
            ]
            response = model_management_pb2.ReloadConfigResponse.FromString(trailer)
            assert (response.status.error_code, response.status.error_message) == (
                3,
                info.value.details(),
            )
            with pytest.raises(grpc.RpcError) as info:
                reload(model_management_pb2.ReloadConfigRequest(), 60)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert list(predict(stubs, "three").outputs["y"].float_val) == [4.0]


@pytest.mark.parametrize(
    ("fixture", "state", "code", "message"),
    [
        ("saved_model_half_plus_two_cpu_warmup", "AVAILABLE", "OK", ""),
        (
            "saved_model_half_plus_two_cpu_warmup_not_tfrecord",
            "END",
            "DATA_LOSS",
            "Please verify your warmup data is in TFRecord format.",
        ),
        (
            "saved_model_half_plus_two_cpu_warmup_bad_signature",
            "END",
            "FAILED_PRECONDITION",
            'Serving signature key "no_such_signature" not found.',
        ),
        (
            "saved_model_half_plus_two_cpu_warmup_too_many_records",
            "END",
            "INVALID_ARGUMENT",
            "Number of warmup records exceeds the maximum (1000) at ",
        ),
    ],
)
def test_model_warmup(fixture: str, state: str, code: str, message: str) -> None:
    with run_server(
        "--model_name=m", f"--model_base_path={TESTDATA / 'generated' / fixture}"
    ) as server:
        server.wait_for_state("m", 123, state)
        status = server.get("/v1/models/m").json()["model_version_status"][0]["status"]
        assert status["error_code"] == code
        assert message in status["error_message"]


@pytest.mark.parametrize("server_kind", ["native", "grpcio"])
def test_message_limits_from_channel_arguments(server_kind: str) -> None:
    with run_server(
        "--model_name=m",
        f"--model_base_path={HALF_PLUS_TWO}",
        f"--grpc_server={server_kind}",
        "--grpc_channel_arguments=grpc.max_receive_message_length=1000,"
        "grpc.max_send_message_length=2000",
    ) as server:
        server.wait_for_versions("m", {123})
        with grpc.insecure_channel(server.grpc_target) as channel:
            stubs = Stubs(channel)
            assert len(predict(stubs, "m", np.ones(100, np.float32)).outputs["y"].float_val) == 100
            with pytest.raises(grpc.RpcError) as received:
                predict(stubs, "m", np.ones(1000, np.float32))  # ~4 KB in
            assert received.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "larger than max" in received.value.details()
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="m"))
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones(1000, np.float32)))
            request.inputs["x"].ClearField("tensor_content")
            request.inputs["x"].float_val.extend([1.0])  # 1 value fills the shape: ~4 KB out
            with pytest.raises(grpc.RpcError) as sent:
                stubs.prediction.Predict(request, 10)
            assert sent.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("args", "served_by"),
    [
        ((), "(native)"),
        (("--max_connections=100",), "does not support grpc.max_allowed_incoming_connections"),
        (
            ("--grpc_channel_arguments=grpc.max_connection_idle_ms=1000",),
            "does not support grpc.max_connection_idle_ms",
        ),
        (("--grpc_server=grpcio",), "(grpcio)"),
    ],
)
def test_the_native_server_leaves_what_it_cannot_do_to_grpcio(
    args: tuple[str, ...], served_by: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aserve")
    with run_server("--model_name=m", f"--model_base_path={HALF_PLUS_TWO}", *args) as server:
        server.wait_for_versions("m", {123})
        with grpc.insecure_channel(server.grpc_target) as channel:
            assert list(predict(Stubs(channel), "m").outputs["y"].float_val) == [3.0]
            with pytest.raises(grpc.RpcError) as unknown:
                channel.unary_unary("/tensorflow.serving.PredictionService/Nope")(b"", timeout=5)
            assert unknown.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert served_by in caplog.text

"""Bad input and abusive clients, against a real server process with an RSS watchdog."""

from __future__ import annotations

import gzip
import shutil
import socket
import threading
from pathlib import Path

import grpc
import httpx
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from support import TESTDATA, AserveProcess, Stubs, wait_until

EXAMPLE = ("--model_name=m", "--model_base_path=examples/models/half_plus_two")


def claim(dims: list[int], dtype: int = types_pb2.DT_FLOAT) -> predict_pb2.PredictRequest:
    """A ~20-byte PredictRequest whose tensor claims ``dims`` and carries no values."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )
    request.inputs["x"].CopyFrom(tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape))
    return request


@pytest.fixture(scope="module")
def server() -> AserveProcess:
    with AserveProcess(*EXAMPLE, "--rest_api_max_body_bytes=10000000", rss_limit_mb=2500) as s:
        s.wait_until_listening()
        yield s
        assert not s.killed_for_memory


def test_claimed_shapes_allocate_nothing(server: AserveProcess) -> None:
    before = server.rss_mb()
    with grpc.insecure_channel(server.grpc_target) as channel:
        stubs = Stubs(channel)
        for request in (
            claim([600_000_000]),
            claim([100_000_000, 1]),
            claim([100_000_000], types_pb2.DT_STRING),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                stubs.prediction.Predict(request, 30)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        one_value = claim([600_000_000])
        one_value.inputs["x"].float_val.append(1.0)  # one value would fill 2.4 GB
        with pytest.raises(grpc.RpcError) as budget:
            stubs.prediction.Predict(one_value, 30)
        assert budget.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "--max_request_elements" in budget.value.details()
    assert server.rss_mb() - before < 100


def test_a_gzip_bomb_stops_at_the_body_limit(server: AserveProcess) -> None:
    bomb = gzip.compress(b'{"instances": [' + b" " * 100_000_000 + b"1.0]}")
    assert len(bomb) < 200_000
    before = server.peak_rss_mb
    answer = httpx.post(
        f"{server.url}/v1/models/m:predict",
        content=bomb,
        headers={"Content-Encoding": "gzip"},
        timeout=30,
    )
    assert answer.status_code == 413
    assert "Decompressed request body exceeds the limit" in answer.json()["error"]
    assert server.peak_rss_mb - before < 200  # the limit is 10 MB, not the bomb's 100 MB
    ok = httpx.post(
        f"{server.url}/v1/models/m:predict",
        content=gzip.compress(b'{"instances": [1.0]}'),
        headers={"Content-Encoding": "gzip"},
    )
    assert ok.json() == {"predictions": [2.5]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (b'{"instances": ' + b"[" * 65 + b"1.0" + b"]" * 65 + b"}", "65 dimensions"),
        (b'{"instances": [NaN, 1' + b"9" * 400 + b"]}", "Number too big"),
        (b'{"instances": [1' + b"9" * 5000 + b"]}", "Number too big"),
    ],
)
def test_client_mistakes_are_400_not_500(server: AserveProcess, body: bytes, message: str) -> None:
    answer = httpx.post(f"{server.url}/v1/models/m:predict", content=body, timeout=30)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_grpc_client_mistakes_are_invalid_argument(server: AserveProcess) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        with pytest.raises(grpc.RpcError) as undecodable:
            raw(b"\x0a\xff\xff\xff", timeout=10)
        assert undecodable.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as rank:
            Stubs(channel).prediction.Predict(claim([1] * 65), 10)
        assert rank.value.code() is grpc.StatusCode.INVALID_ARGUMENT


# -- clients that hold resources ------------------------------------------------------------


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_slow_idle_and_surplus_connections_are_closed() -> None:
    args = (
        *EXAMPLE,
        "--rest_api_header_timeout_seconds=1",
        "--rest_api_keepalive_seconds=1",
        "--max_connections=8",
    )
    with AserveProcess(*args) as server:
        server.wait_until_listening()
        address = ("127.0.0.1", server.rest_port)
        idle = socket.create_connection(address)
        slowloris = socket.create_connection(address)
        slowloris.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\n")
        kept = socket.create_connection(address)
        body = b'{"instances": [1.0]}'
        kept.sendall(
            b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n" + body
        )
        assert b"200 OK" in kept.recv(4096)
        for sock in (idle, slowloris, kept):  # header timeout, header timeout, keep-alive
            assert closed_within(sock, 5)
        held = [socket.create_connection(address) for _ in range(8)]
        surplus = socket.create_connection(address)
        assert surplus.recv(4096).startswith(b"HTTP/1.1 503")
        for sock in (*held, surplus, idle, slowloris, kept):
            sock.close()


def test_grpc_connections_over_the_cap_are_refused() -> None:
    with AserveProcess(*EXAMPLE, "--max_connections=2") as server:
        server.wait_until_listening()
        channels = [
            grpc.insecure_channel(
                server.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(3)
        ]
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0]))
        outcomes = []
        for channel in channels:
            try:
                Stubs(channel).prediction.Predict(request, 5)
                outcomes.append("OK")
            except grpc.RpcError as e:
                outcomes.append(e.code().name)
        for channel in channels:
            channel.close()
    assert outcomes[:2] == ["OK", "OK"] and outcomes[2] == "UNAVAILABLE"


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    with AserveProcess(*EXAMPLE, open_files=512) as server:
        server.wait_for_log("open files: soft limit 512 -> ")
        server.wait_until_listening()


def test_a_request_whose_client_left_never_runs(
    tmp_path: Path, built_models: dict[str, Path]
) -> None:
    shutil.copytree(built_models["gate"], tmp_path / "gate")
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "gate" base_path: "{tmp_path / "gate"}" }}\n'
        f'  config {{ name: "counter" base_path: "{TESTDATA / "saved_model_counter"}" }}\n}}\n'
    )
    gate = tmp_path / "gate.txt"
    args = (
        f"--model_config_file={config}",
        "--num_worker_threads=1",
        f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}",
    )
    with AserveProcess(*args) as server:
        server.wait_until_listening()
        holding = threading.Thread(
            target=lambda: httpx.post(
                f"{server.url}/v1/models/gate:predict",
                json={"inputs": {"path": [str(gate)]}},
                timeout=60,
            ),
            daemon=True,
        )
        holding.start()  # the only worker is busy until the gate opens
        page = f"{server.url}/monitoring/prometheus/metrics"
        gated = ':aserve:requests_in_flight{model_name="gate"} 1'
        wait_until(lambda: gated in httpx.get(page).text, what="the gate request in flight")
        increment = {"signature_name": "incr_counter_by", "inputs": {"delta": 1.0}}
        for _ in range(5):  # each client gives up while its request waits for the worker
            with pytest.raises(httpx.TimeoutException):
                httpx.post(f"{server.url}/v1/models/counter:predict", json=increment, timeout=0.3)
        staged = gate.with_suffix(".staged")
        staged.write_text("open")
        staged.rename(gate)
        holding.join(30)
        read = {"signature_name": "incr_counter_by", "inputs": {"delta": 0.0}}
        counted = httpx.post(f"{server.url}/v1/models/counter:predict", json=read).json()
    assert counted == {"outputs": 0.0}  # none of the abandoned increments ran

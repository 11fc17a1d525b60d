"""Operations, end to end: health and readiness, start-up order, graceful drain on signals."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from support import (
    HALF_PLUS_TWO,
    TESTDATA,
    AserveProcess,
    Stubs,
    copy_version,
    run_server,
    wait_until,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def half_plus_two_request(name: str = "m") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))
    return request


def gate_request(gate: Path) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "gate"
    request.inputs["path"].CopyFrom(tf.make_tensor_proto([str(gate)]))
    return request


def open_gate(gate: Path) -> None:
    staged = gate.with_suffix(".staged")
    staged.write_text("released")
    staged.rename(gate)


def slow_loading_gate(built_models: dict[str, Path], base: Path, gate: Path) -> Path:
    """The gate model whose warm-up waits for ``gate``: its load lasts until the gate opens."""
    version = base / "1"
    shutil.copytree(built_models["gate"] / "1", version)
    warmup = version / "assets.extra" / "tf_serving_warmup_requests"
    warmup.parent.mkdir()
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.CopyFrom(gate_request(gate))
    with tf.io.TFRecordWriter(str(warmup)) as writer:
        writer.write(log.SerializeToString())
    return base


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def health_status(target: str, service: str = "") -> Any:
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


# -- health and readiness -------------------------------------------------------------------


def test_live_and_ready_need_no_model_name_and_say_what_is_not_ready(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "m" base_path: "{HALF_PLUS_TWO}" model_platform: "tensorflow" }}\n'
        f'  config {{ name: "later" base_path: "{tmp_path / "later"}" '
        'model_platform: "tensorflow" }\n}\n'
    )
    (tmp_path / "later").mkdir()
    with run_server(f"--model_config_file={config}", "--enable_grpc_healthcheck_service") as server:
        server.wait_for_versions("m", {123})
        assert (
            server.get("/v2/health/live").status_code,
            server.get("/v2/health/live").json(),
        ) == (
            200,
            {"live": True},
        )
        not_ready = server.get("/v2/health/ready")
        assert not_ready.status_code == 503
        body = not_ready.json()
        assert body["ready"] is False and body["draining"] is False
        assert list(body["not_ready"]) == ["later"]
        assert "No versions of servable later found" in body["not_ready"]["later"]
        assert health_status(server.grpc_target) == NOT_SERVING

        copy_version(HALF_PLUS_TWO / "00000123", tmp_path / "later", 1)
        server.wait_for_versions("later", {1})
        ready = server.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
        assert health_status(server.grpc_target) == SERVING


# -- start-up order -----------------------------------------------------------------------


def test_ports_open_only_once_the_start_up_models_have_loaded(
    tmp_path: Path, built_models: dict[str, Path]
) -> None:
    gate = tmp_path / "gate.txt"
    base = slow_loading_gate(built_models, tmp_path / "gate", gate)
    with AserveProcess("--model_name=gate", f"--model_base_path={base}") as server:
        server.wait_for_log("gate version 1: START -> LOADING")
        time.sleep(0.5)
        assert refused(server.rest_port) and refused(server.grpc_port)  # as TF Serving
        open_gate(gate)
        server.wait_until_listening()
        # the first request a wait-for-port client sends is answered, never 404
        answer = httpx.post(
            f"{server.url}/v1/models/gate:predict", json={"inputs": {"path": [str(gate)]}}
        )
        assert (answer.status_code, answer.json()) == (200, {"outputs": ["released"]})
        with grpc.insecure_channel(server.grpc_target) as channel:
            response = Stubs(channel).prediction.Predict(gate_request(gate), 10)
        assert response.outputs["content"].string_val == [b"released"]


def test_listen_before_load_opens_the_ports_first_and_readiness_waits(
    tmp_path: Path, built_models: dict[str, Path]
) -> None:
    gate = tmp_path / "gate.txt"
    base = slow_loading_gate(built_models, tmp_path / "gate", gate)
    args = ("--model_name=gate", f"--model_base_path={base}", "--listen_before_load")
    with AserveProcess(*args, "--enable_grpc_healthcheck_service") as server:
        server.wait_until_listening()
        server.wait_for_log("gate version 1: START -> LOADING")
        ready = httpx.get(f"{server.url}/v2/health/ready")
        assert ready.status_code == 503
        assert ready.json()["not_ready"] == {"gate": "no AVAILABLE version (version 1 LOADING)"}
        assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
        assert health_status(server.grpc_target) == NOT_SERVING
        predict = httpx.post(f"{server.url}/v1/models/gate:predict", json={"inputs": {}})
        assert predict.status_code == 404
        open_gate(gate)
        wait_until(
            lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 200, 60, "ready"
        )
        assert health_status(server.grpc_target) == SERVING


# -- graceful drain -----------------------------------------------------------------------


class Load:
    """REST and gRPC clients sending half_plus_two requests until told to stop.

    Each request is remembered with whether it was sent before the signal and how it ended.
    """

    def __init__(self, server: AserveProcess, clients: int = 4) -> None:
        self.server = server
        self.signalled = threading.Event()
        self.stop = threading.Event()
        self.results: list[
            tuple[bool, str, str]
        ] = []  # (sent before the signal, protocol, outcome)
        self.threads = [
            threading.Thread(target=target, daemon=True)
            for _ in range(clients)
            for target in (self._rest, self._grpc)
        ]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _rest(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            while not self.stop.is_set():
                before = not self.signalled.is_set()
                try:
                    answer = client.post("/v1/models/m:predict", json={"instances": [1.0]})
                    outcome = str(answer.status_code)
                except httpx.TransportError as e:
                    outcome = f"connection: {type(e).__name__}"
                self.results.append((before, "rest", outcome))
                if outcome.startswith("connection"):
                    time.sleep(0.05)

    def _grpc(self) -> None:
        with grpc.insecure_channel(self.server.grpc_target) as channel:
            stubs = Stubs(channel)
            while not self.stop.is_set():
                before = not self.signalled.is_set()
                try:
                    stubs.prediction.Predict(half_plus_two_request(), 30)
                    outcome = "OK"
                except grpc.RpcError as e:
                    outcome = e.code().name
                self.results.append((before, "grpc", outcome))
                if outcome != "OK":
                    time.sleep(0.05)

    def sent_before(self) -> list[str]:
        return [outcome for before, _, outcome in self.results if before]

    def sent_after(self) -> list[str]:
        return [outcome for before, _, outcome in self.results if not before]


def two_models(tmp_path: Path, built_models: dict[str, Path]) -> Path:
    shutil.copytree(built_models["gate"], tmp_path / "gate")
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "m" base_path: "{HALF_PLUS_TWO}" model_platform: "tensorflow" }}\n'
        f'  config {{ name: "gate" base_path: "{tmp_path / "gate"}" '
        'model_platform: "tensorflow" }\n}\n'
    )
    return config


def in_flight(server: AserveProcess, model: str) -> int:
    """From the Prometheus page (the server needs --monitoring_config_file)."""
    page = httpx.get(f"{server.url}/monitoring/prometheus/metrics").raise_for_status().text
    prefix = f':aserve:requests_in_flight{{model_name="{model}"}} '
    return next(
        (int(line[len(prefix) :]) for line in page.splitlines() if line.startswith(prefix)), 0
    )


def hold(server: AserveProcess, gate: Path) -> dict[str, Any]:
    """One slow REST and one slow gRPC request, held in the gate model until it opens
    (returns once the server has both in flight)."""
    answers: dict[str, Any] = {}

    def rest() -> None:
        body = {"inputs": {"path": [str(gate)]}}
        try:
            answers["rest"] = httpx.post(
                f"{server.url}/v1/models/gate:predict", json=body, timeout=60
            )
        except httpx.HTTPError as e:
            answers["rest"] = e

    def grpc_call() -> None:
        with grpc.insecure_channel(server.grpc_target) as channel:
            try:
                answers["grpc"] = Stubs(channel).prediction.Predict(gate_request(gate), 60)
            except grpc.RpcError as e:
                answers["grpc"] = e

    for target in (rest, grpc_call):
        threading.Thread(target=target, daemon=True).start()
    try:
        wait_until(lambda: in_flight(server, "gate") == 2, 30, "both slow requests in flight")
    except AssertionError:
        raise AssertionError(f"{answers} {in_flight(server, 'gate')}\n{server.log}") from None
    return answers


def test_sigterm_drains_rest_and_grpc_without_failing_an_accepted_request(
    tmp_path: Path, built_models: dict[str, Path]
) -> None:
    gate = tmp_path / "gate.txt"
    args = (
        f"--model_config_file={two_models(tmp_path, built_models)}",
        f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}",
        "--enable_grpc_healthcheck_service",
        "--num_worker_threads=4",  # two hold the slow requests, two serve the load
        f"--access_log={tmp_path / 'access.log'}",
        "--log_format=json",
        "--drain_delay_seconds=1",
        "--shutdown_grace_seconds=20",
    )
    with AserveProcess(*args) as server:
        server.wait_until_listening()
        with Load(server) as load:
            wait_until(lambda: len(load.results) > 50, 60, "load")
            held = hold(server, gate)
            load.signalled.set()
            signalled_at = time.monotonic()
            server.signal(signal.SIGTERM)
            server.wait_for_log("draining: not ready; serving 1 s more")
            assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503  # not ready
            assert health_status(server.grpc_target) == NOT_SERVING
            server.wait_for_log("shutting down: refusing new connections")
            time.sleep(1.0)
            open_gate(gate)  # the held requests may finish now
            assert server.wait(30) == 0
            elapsed = time.monotonic() - signalled_at
    assert held["rest"].status_code == 200 and held["rest"].json() == {"outputs": ["released"]}
    assert not isinstance(held["grpc"], grpc.RpcError), (held["grpc"], server.log)
    assert held["grpc"].outputs["content"].string_val == [b"released"]
    before = load.sent_before()
    assert before and set(before) <= {"200", "OK"}, sorted(set(before))
    after = load.sent_after()
    assert {"200", "OK"} & set(after), "the drain delay kept serving"
    # after the front ends stopped accepting, new calls are refused: connections refused or
    # closed, gRPC UNAVAILABLE (GOAWAY), or CANCELLED for a call that raced the GOAWAY (grpc.aio
    # abandons calls it had not handed to any handler yet); none of those reached aserve
    refusals = {o for o in after if o not in ("200", "OK")}
    assert refusals <= {"UNAVAILABLE", "CANCELLED"} | {o for o in refusals if "connection" in o}
    served = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    assert {(r["protocol"], r["status"]) for r in served} == {("rest", "OK"), ("grpc", "OK")}
    assert len(served) >= len(before) + 2  # every accepted request was answered, and OK
    assert elapsed < 20  # within --shutdown_grace_seconds
    assert "Traceback" not in server.log


def test_requests_still_running_at_the_deadline_get_503_and_unavailable(
    tmp_path: Path, built_models: dict[str, Path]
) -> None:
    gate = tmp_path / "never.txt"
    args = (
        f"--model_config_file={two_models(tmp_path, built_models)}",
        f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}",
        "--shutdown_grace_seconds=3",
    )
    with AserveProcess(*args) as server:
        server.wait_until_listening()
        held = hold(server, gate)
        server.signal(signal.SIGTERM)
        assert server.wait(30) == 0
    wait_until(lambda: len(held) == 2, 10, "both answers")
    assert held["rest"].status_code == 503
    assert "shutting down" in held["rest"].json()["error"]
    assert held["grpc"].code() is grpc.StatusCode.UNAVAILABLE
    assert "shutdown deadline: 2 request(s) still running" in server.log


def test_a_second_signal_exits_at_once_with_status_1(
    tmp_path: Path, built_models: dict[str, Path]
) -> None:
    gate = tmp_path / "never.txt"
    args = (
        f"--model_config_file={two_models(tmp_path, built_models)}",
        f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}",
        "--shutdown_grace_seconds=60",
    )
    with AserveProcess(*args) as server:
        server.wait_until_listening()
        hold(server, gate)
        server.signal(signal.SIGTERM)
        server.wait_for_log("shutting down: refusing new connections")
        server.signal(signal.SIGINT)
        assert server.wait(10) == 1
    assert "second SIGINT during shutdown: exiting now" in server.log


def test_sigint_drains_like_sigterm() -> None:
    with AserveProcess("--model_name=m", f"--model_base_path={HALF_PLUS_TWO}") as server:
        server.wait_until_listening()
        server.signal(signal.SIGINT)
        assert server.wait(30) == 0, server.log
    assert "SIGINT: shutting down" in server.log


def test_keep_alive_connections_are_closed_after_their_current_response(
    tmp_path: Path, built_models: dict[str, Path]
) -> None:
    gate = tmp_path / "gate.txt"
    args = (
        f"--model_config_file={two_models(tmp_path, built_models)}",
        "--shutdown_grace_seconds=20",
    )
    with AserveProcess(*args) as server:
        server.wait_until_listening()
        client = httpx.Client(base_url=server.url, timeout=60)
        assert client.post("/v1/models/m:predict", json={"instances": [1.0]}).status_code == 200
        answer: dict[str, httpx.Response] = {}
        body = {"inputs": {"path": [str(gate)]}}
        thread = threading.Thread(
            target=lambda: answer.update(r=client.post("/v1/models/gate:predict", json=body))
        )
        thread.start()
        time.sleep(1.0)
        server.signal(signal.SIGTERM)
        server.wait_for_log("shutting down: refusing new connections")
        open_gate(gate)
        thread.join(30)
        assert answer["r"].status_code == 200
        assert answer["r"].headers["connection"] == "close"
        assert server.wait(30) == 0
        client.close()

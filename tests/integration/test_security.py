"""Closing a deployment: bearer tokens, an admin token, model roots, TLS on REST."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import grpc
import httpx
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_management_pb2, predict_pb2

from certs import make_pki
from support import HALF_PLUS_TWO, TESTDATA, AserveProcess, Stubs, run_server, wait_until

TOKEN, OTHER, ADMIN = "s3cret-prediction-token", "an0ther-token", "adm1n-token"


def predict_request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))
    return request


def reload_request(base_path: Path | str) -> model_management_pb2.ReloadConfigRequest:
    request = model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.config.add(
        name="m", base_path=str(base_path), model_platform="tensorflow"
    )
    return request


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "tokens").write_text(f"# prediction tokens\n{TOKEN}\n\n{OTHER}\n")
    (tmp_path / "admin").write_text(f"{ADMIN}\n")
    return tmp_path / "tokens", tmp_path / "admin"


def test_rest_needs_a_token_except_for_health_and_refuses_before_reading_the_body(
    tokens: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    args = (
        "--model_name=m",
        f"--model_base_path={HALF_PLUS_TWO}",
        f"--auth_token_file={tokens[0]}",
        f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}",
        "--rest_api_max_body_bytes=1000",
    )
    with run_server(*args) as server:
        body = {"instances": [1.0]}
        missing = server.post("/v1/models/m:predict", body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json() == {"error": "Missing bearer token"}
        wrong = server.post("/v1/models/m:predict", body, headers=bearer("guess"))
        assert (wrong.status_code, wrong.json()) == (401, {"error": "Invalid bearer token"})
        ok = server.post("/v1/models/m:predict", body, headers=bearer(OTHER))
        assert (ok.status_code, ok.json()) == (200, {"predictions": [2.5]})
        # refused before the body is read: a body over the limit still gets 401, not 413
        huge = server.post("/v1/models/m:predict", content=b"[" * 5000)
        assert huge.status_code == 401
        assert server.get("/nowhere").status_code == 401
        assert server.http.get("/nowhere", headers=bearer(TOKEN)).status_code == 404
        # open without a token: health, and the metrics page unless --auth_metrics
        assert server.get("/v2/health/live").status_code == 200
        assert server.get("/v2/health/ready").status_code == 200
        page = server.get("/monitoring/prometheus/metrics")
        assert page.status_code == 200
        assert ':aserve:requests_refused{reason="unauthenticated",protocol="rest"} 4' in page.text
    assert TOKEN not in caplog.text and OTHER not in caplog.text


def test_status_requests_need_a_token_too(tokens: tuple[Path, Path]) -> None:
    args = (
        "--model_name=m",
        f"--model_base_path={HALF_PLUS_TWO}",
        f"--auth_token_file={tokens[0]}",
    )
    with run_server(*args) as server:
        assert server.http.get("/v1/models/m", headers=bearer(TOKEN)).status_code == 200
        assert server.get("/v1/models/m").status_code == 401


def test_auth_metrics_protects_the_metrics_page(tokens: tuple[Path, Path]) -> None:
    args = (
        "--model_name=m",
        f"--model_base_path={HALF_PLUS_TWO}",
        f"--auth_token_file={tokens[0]}",
        f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}",
        "--auth_metrics",
    )
    with run_server(*args) as server:
        path = "/monitoring/prometheus/metrics"
        assert server.get(path).status_code == 401
        assert server.http.get(path, headers=bearer(TOKEN)).status_code == 200


def test_grpc_needs_the_same_token_and_management_the_admin_one(
    tokens: tuple[Path, Path],
) -> None:
    args = (
        "--model_name=m",
        f"--model_base_path={HALF_PLUS_TWO}",
        f"--auth_token_file={tokens[0]}",
        f"--admin_token_file={tokens[1]}",
        "--enable_grpc_healthcheck_service",
    )
    with run_server(*args) as server, grpc.insecure_channel(server.grpc_target) as channel:
        stubs = Stubs(channel)
        wait_until(lambda: server.http.get("/v2/health/ready").status_code == 200, 60, "ready")
        with pytest.raises(grpc.RpcError) as missing:
            stubs.prediction.Predict(predict_request(), 10)
        assert missing.value.code() is grpc.StatusCode.UNAUTHENTICATED
        metadata = [("authorization", f"Bearer {TOKEN}")]
        response = stubs.prediction.Predict(predict_request(), 10, metadata=metadata)
        assert list(response.outputs["y"].float_val) == [2.5]
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == (
            health_pb2.HealthCheckResponse.SERVING
        )
        reload = reload_request(HALF_PLUS_TWO)
        with pytest.raises(grpc.RpcError) as forbidden:
            stubs.model.HandleReloadConfigRequest(reload, 10, metadata=metadata)
        assert forbidden.value.code() is grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as anonymous:
            stubs.model.HandleReloadConfigRequest(reload, 10)
        assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
        admin = [("authorization", f"Bearer {ADMIN}")]
        stubs.model.HandleReloadConfigRequest(reload, 30, metadata=admin)


def test_token_files_are_re_read_when_they_change(tokens: tuple[Path, Path]) -> None:
    args = (
        "--model_name=m",
        f"--model_base_path={HALF_PLUS_TWO}",
        f"--auth_token_file={tokens[0]}",
    )
    with run_server(*args) as server:
        path = "/v1/models/m"
        assert server.http.get(path, headers=bearer(TOKEN)).status_code == 200
        staged = tokens[0].with_suffix(".new")
        staged.write_text("rotated-token\n")
        os.replace(staged, tokens[0])
        wait_until(
            lambda: server.http.get(path, headers=bearer("rotated-token")).status_code != 401,
            10,
            "the new token",
        )
        assert server.http.get(path, headers=bearer(TOKEN)).status_code == 401


def test_base_paths_outside_the_allowed_roots_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "m").mkdir(parents=True)
    (root / "m" / "1").symlink_to(HALF_PLUS_TWO / "00000123")  # a version may be a link
    (root / "escape").symlink_to(HALF_PLUS_TWO)  # a base path that resolves outside
    args = ("--model_name=m", f"--model_base_path={root / 'm'}", f"--allowed_model_roots={root}")
    with run_server(*args) as server, grpc.insecure_channel(server.grpc_target) as channel:
        server.wait_for_versions("m", {1})
        stubs = Stubs(channel)
        for outside in (HALF_PLUS_TWO, root / "escape"):
            with pytest.raises(grpc.RpcError) as refused:
                stubs.model.HandleReloadConfigRequest(reload_request(outside), 10)
            assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "is outside --allowed_model_roots" in refused.value.details()
        assert server.post("/v1/models/m:predict", {"instances": [1.0]}).status_code == 200


def test_a_start_up_model_outside_the_allowed_roots_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    args = (
        "--model_name=m",
        "--model_base_path=examples/models/half_plus_two",
        f"--allowed_model_roots={tmp_path / 'root'}",
    )
    with AserveProcess(*args) as server:
        assert server.wait(60) == 1
    assert "is outside --allowed_model_roots" in server.log
    assert "Traceback" not in server.log


def test_rest_over_tls_and_mutual_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = (
        f"--rest_api_ssl_certfile={pki['server.pem']}",
        f"--rest_api_ssl_keyfile={pki['server.key']}",
    )
    with AserveProcess(
        "--model_name=m", "--model_base_path=examples/models/half_plus_two", *tls
    ) as server:
        server.wait_until_listening()
        url = f"https://127.0.0.1:{server.rest_port}/v1/models/m:predict"
        context = ssl.create_default_context(cafile=pki["ca.pem"])
        answer = httpx.post(url, json={"instances": [1.0]}, verify=context)
        assert answer.json() == {"predictions": [2.5]}
        with pytest.raises(httpx.HTTPError):
            httpx.post(url.replace("https", "http"), json={"instances": [1.0]})
    mutual = (*tls, f"--rest_api_ssl_ca_file={pki['ca.pem']}")
    with AserveProcess(
        "--model_name=m", "--model_base_path=examples/models/half_plus_two", *mutual
    ) as server:
        server.wait_until_listening()
        url = f"https://127.0.0.1:{server.rest_port}/v1/models/m:predict"
        context = ssl.create_default_context(cafile=pki["ca.pem"])
        with pytest.raises(httpx.HTTPError):  # no client certificate
            httpx.post(url, json={"instances": [1.0]}, verify=context)
        context.load_cert_chain(pki["client.pem"], pki["client.key"])
        assert httpx.post(url, json={"instances": [1.0]}, verify=context).status_code == 200

"""``--monitoring_config_file``: TF Serving's Prometheus page on the REST port, with real counts.

One server of its own (half_plus_two as ``hpt``, batching on), so every count is exact.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from aserve import flags
from aserve.server import Server, StartupError
from support import HALF_PLUS_TWO, TESTDATA, RunningServer, Stubs, run_server

PAGE = "/monitoring/prometheus/metrics"  # the path in TF Serving's monitoring_config.txt
SAMPLE = re.compile(r"^([^\s{]+)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Key = tuple[str, frozenset[tuple[str, str]]]


def scrape(server: RunningServer) -> dict[Key, float]:
    response = server.get(PAGE)
    assert response.status_code == 200, response.text
    samples: dict[Key, float] = {}
    for line in response.text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        name, labels, value = match.groups()
        samples[(name, frozenset(LABEL.findall(labels or "")))] = float(value)
    return samples


def key(name: str, **labels: str) -> Key:
    return (name, frozenset(labels.items()))


def grpc_predict(stubs: Stubs, name: str, value: object) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(value))
    stubs.prediction.Predict(request, timeout=30)


@pytest.fixture(scope="module")
def metered() -> Iterator[RunningServer]:
    with run_server(
        "--model_name=hpt",
        f"--model_base_path={HALF_PLUS_TWO}",
        f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}",
        "--enable_batching",
    ) as server:
        server.wait_for_state("hpt", 123)
        yield server


@pytest.fixture(scope="module")
def metered_stubs(metered: RunningServer) -> Iterator[Stubs]:
    with grpc.insecure_channel(metered.grpc_target) as channel:
        yield Stubs(channel)


def test_page_is_plain_text_with_type_lines_and_the_load(metered: RunningServer) -> None:
    response = metered.get(PAGE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in text
    assert "# HELP" not in text and text.endswith("\n")
    loads = scrape(metered)
    version = str(Path(HALF_PLUS_TWO) / "00000123")
    attempts = key(":tensorflow:cc:saved_model:load_attempt_count", model_path=version)
    assert loads[(attempts[0], attempts[1] | {("status", "success")})] == 1
    assert loads[key(":tensorflow:cc:saved_model:load_latency", model_path=version)] > 0


def test_rest_and_grpc_requests_are_counted_by_model_and_status(
    metered: RunningServer, metered_stubs: Stubs
) -> None:
    before = scrape(metered)
    for x in (1.0, 2.0):
        ok = metered.post("/v1/models/hpt:predict", {"instances": [x]})
        assert ok.json() == {"predictions": [2.5 + (x - 1.0) * 0.5]}
    assert metered.post("/v1/models/nope:predict", {"instances": [1.0]}).status_code == 404
    grpc_predict(metered_stubs, "hpt", [3.0])
    with pytest.raises(grpc.RpcError) as failed:
        grpc_predict(metered_stubs, "hpt", ["not a float"])
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = scrape(metered)

    def delta(name: str, **labels: str) -> float:
        k = key(name, **labels)
        return after.get(k, 0) - before.get(k, 0)

    count = ":tensorflow:serving:request_count"
    assert delta(count, model_name="hpt", status="OK") == 3
    assert delta(count, model_name="hpt", status="INVALID_ARGUMENT") == 1
    assert delta(count, model_name="nope", status="NOT_FOUND") == 1
    latency = ":tensorflow:serving:request_latency_count"
    assert delta(latency, model_name="hpt", API="predict", entrypoint="REST") == 2
    assert delta(latency, model_name="hpt", API="Predict", entrypoint="GRPC") == 1
    runtime = ":tensorflow:serving:runtime_latency_count"
    assert delta(runtime, model_name="hpt", API="Predict", runtime="TF1") == 3
    assert delta(":aserve:batching:batch_size_count", model_name="hpt") == 3
    queued = ":tensorflow:serving:batching_session:queuing_latency_count"
    # tensorflow_model_server's pool name when --enable_batching comes without a file
    assert delta(queued, thread_pool_name="model_server_batch_threads") == 3


def test_classify_records_its_example_count(metered: RunningServer) -> None:
    before = scrape(metered)
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]}
    assert metered.post("/v1/models/hpt:classify", body).status_code == 200
    after = scrape(metered)
    total = key(":tensorflow:serving:request_example_count_total", model="hpt")
    assert after[total] - before.get(total, 0) == 3
    le_2 = key(":tensorflow:serving:request_example_counts_bucket", model="hpt", le="2")
    le_4 = key(":tensorflow:serving:request_example_counts_bucket", model="hpt", le="4")
    assert after.get(le_2, 0) - before.get(le_2, 0) == 0  # 3 examples: not <= 2
    assert after[le_4] - before.get(le_4, 0) == 1
    timed = key(
        ":tensorflow:serving:request_latency_count",
        model_name="hpt",
        API="classify",
        entrypoint="REST",
    )
    assert after[timed] - before.get(timed, 0) == 1


def test_page_is_absent_unless_enabled(zoo: RunningServer) -> None:
    assert zoo.get(PAGE).status_code == 404


def test_disabled_prometheus_config_serves_no_page(tmp_path: Path) -> None:
    config = tmp_path / "monitoring.config"
    config.write_text(f'prometheus_config {{ enable: false path: "{PAGE}" }}\n')
    with run_server(
        f"--model_base_path={HALF_PLUS_TWO}", f"--monitoring_config_file={config}"
    ) as server:
        assert server.get(PAGE).status_code == 404


def test_a_broken_monitoring_config_stops_start_up_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enabled: true }\n")
    server = Server(
        flags.parse([f"--model_base_path={HALF_PLUS_TWO}", f"--monitoring_config_file={config}"])
    )
    with pytest.raises(StartupError) as failed:
        asyncio.run(server.serve())
    assert str(failed.value).startswith(
        "Error parsing text-format tensorflow.serving.MonitoringConfig: 1:"
    )
    assert "\n" not in str(failed.value)


def test_status_requests_are_counted_but_not_timed(metered: RunningServer) -> None:
    before = scrape(metered)
    assert metered.get("/v1/models/hpt").status_code == 200
    assert metered.get("/v1/models/hpt/metadata").status_code == 200
    after = scrape(metered)
    ok = key(":tensorflow:serving:request_count", model_name="hpt", status="OK")
    assert after[ok] - before[ok] == 2
    latency_names = {k for k in after if k[0] == ":tensorflow:serving:request_latency_count"}
    assert {dict(labels)["API"] for _, labels in latency_names} <= {
        "predict",
        "classify",
        "regress",
        "Predict",
        "Classify",
        "Regress",
        "MultiInference",
    }

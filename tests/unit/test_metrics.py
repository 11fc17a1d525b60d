"""The Prometheus observer: TF Serving's names and counting rules, label escaping, buckets."""

from __future__ import annotations

import pytest

from aserve.errors import Code
from aserve.metrics import LATENCY_BUCKETS_US, Counter, Histogram, Metrics, prometheus_name
from aserve.records import BatchRecord, LoadRecord, Observers, RequestRecord


def test_metric_paths_become_prometheus_names() -> None:
    assert prometheus_name("/tensorflow/serving/request_count") == (
        ":tensorflow:serving:request_count"
    )
    assert prometheus_name("9lives/x-y") == "_9lives:x:y"


def test_counter_lines_escape_label_values() -> None:
    counter = Counter("/c", ("model_path", "status"))
    counter.inc('/m/"q"\\1', "success")
    counter.inc('/m/"q"\\1', "success", by=2)
    assert list(counter.lines(":c")) == [':c{model_path="/m/\\"q\\"\\\\1",status="success"} 3']
    assert counter.value('/m/"q"\\1', "success") == 3


def test_histogram_buckets_are_cumulative_and_end_with_inf() -> None:
    histogram = Histogram("/h", ("model",), (1.0, 2.0, 4.0))
    for value in (0.5, 1.0, 3.0, 100.0):
        histogram.observe(value, "m")
    assert list(histogram.lines(":h")) == [
        ':h_bucket{model="m",le="1"} 2',
        ':h_bucket{model="m",le="2"} 2',
        ':h_bucket{model="m",le="4"} 3',
        ':h_bucket{model="m",le="+Inf"} 4',
        ':h_sum{model="m"} 104.5',
        ':h_count{model="m"} 4',
    ]


def test_latency_buckets_are_tfs_exponential_scale() -> None:
    assert len(LATENCY_BUCKETS_US) == 33
    assert LATENCY_BUCKETS_US[:3] == (10.0, 18.0, 10 * 1.8**2)


def request(
    protocol: str, api: str, model: str = "m", code: Code = Code.OK, **fields: object
) -> RequestRecord:
    record = RequestRecord(protocol, "id", "peer", 0)
    record.api, record.model, record.code, record.latency = api, model, code, 0.002
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def test_page_has_type_lines_only_and_times_successes_only() -> None:
    metrics = Metrics()
    metrics.request_finished(request("grpc", "Predict"))
    metrics.request_finished(request("grpc", "Predict", code=Code.NOT_FOUND))
    metrics.load_finished(LoadRecord("/models/m/1", ok=True, seconds=0.25))
    metrics.load_finished(LoadRecord("/models/m/2", ok=False, seconds=0.0))
    page = metrics.render()
    assert page.endswith("\n") and "# HELP" not in page
    lines = page.splitlines()
    assert "# TYPE :tensorflow:serving:request_count counter" in lines
    assert "# TYPE :tensorflow:serving:request_latency histogram" in lines
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 1' in lines
    assert ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"} 1' in lines
    assert (
        ':tensorflow:serving:request_latency_count{model_name="m",API="Predict",entrypoint="GRPC"} 1'
        in lines
    )
    assert (
        ':tensorflow:cc:saved_model:load_attempt_count{model_path="/models/m/1",status="success"} 1'
        in lines
    )
    assert (
        ':tensorflow:cc:saved_model:load_attempt_count{model_path="/models/m/2",status="fail"} 1'
        in lines
    )
    assert ':tensorflow:cc:saved_model:load_latency{model_path="/models/m/1"} 250000' in lines


def test_requests_are_counted_as_tf_serving_counts_them() -> None:
    metrics = Metrics()
    metrics.request_finished(request("rest", "status"))  # REST: every request naming a model
    metrics.request_finished(request("rest", "", model=""))  # an unknown path names none
    metrics.request_finished(request("grpc", "GetModelStatus"))  # gRPC: inference calls only
    metrics.request_finished(request("rest", "predict", runtime=0.001, batch_size=4))
    metrics.request_finished(request("grpc", "Classify", runtime=0.001, examples=3))
    assert metrics.request_count.value("m", "OK") == 3
    lines = metrics.render().splitlines()
    assert (
        ':tensorflow:serving:request_latency_count{model_name="m",API="predict",entrypoint="REST"} 1'
        in lines
    )
    assert (
        ':tensorflow:serving:runtime_latency_count{model_name="m",API="Predict",runtime="TF1"} 1'
        in lines
    )
    assert (
        ':tensorflow:serving:runtime_latency_count{model_name="m",API="Classify",runtime="TF1"} 1'
        in lines
    )
    assert ':tensorflow:serving:request_example_count_total{model="m"} 3' in lines


def test_batches_give_queuing_latency_and_batch_size() -> None:
    metrics = Metrics()
    metrics.batch_started(BatchRecord("m", 4, (0.001, 0.002), "pool", "full"))
    lines = metrics.render().splitlines()
    assert ':aserve:batching:batch_size_count{model_name="m"} 1' in lines
    assert ':aserve:batching:batch_size_sum{model_name="m"} 4' in lines
    assert (
        ':tensorflow:serving:batching_session:queuing_latency_count{thread_pool_name="pool"} 2'
        in lines
    )


def test_an_observer_that_raises_is_logged_and_the_others_still_see_the_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[RequestRecord] = []

    class Broken:
        def request_finished(self, record: RequestRecord) -> None:
            raise RuntimeError("observer bug")

    class Good:
        def request_finished(self, record: RequestRecord) -> None:
            seen.append(record)

    record = request("rest", "predict")
    Observers([Broken(), Good(), object()]).request_finished(record)
    assert seen == [record]
    assert "observer bug" in caplog.text

"""The Prometheus page: TF Serving's names, label escaping, cumulative histogram buckets."""

from __future__ import annotations

from aserve.errors import Code
from aserve.metrics import LATENCY_BUCKETS_US, Counter, Histogram, Metrics, prometheus_name


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


def test_page_has_type_lines_only_and_times_successes_only() -> None:
    metrics = Metrics()
    metrics.record_request("m", "Predict", "GRPC", Code.OK, 0.002)
    metrics.record_request("m", "Predict", "GRPC", Code.NOT_FOUND, 0.001)
    metrics.record_load("/models/m/1", True, 0.25)
    metrics.record_load("/models/m/2", False, 0.1)
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

"""``tensorflow.ProfilerService`` on the gRPC port, driven by TensorFlow's own profiler client
(what TF Serving's ``test_profiler_service_with_valid_trace_request`` and TensorBoard's
"capture profile" use) while requests run."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest

from aserve.profiling import count_events
from support import RunningServer, run_server


def _predict_until(server: RunningServer, stop: threading.Event) -> None:
    while not stop.is_set():
        response = server.post("/v1/models/half_plus_two:predict", {"instances": [2.0, 3.0]})
        assert response.status_code == 200


def test_a_trace_is_collected_while_requests_run(zoo: RunningServer, tmp_path: Path) -> None:
    import tensorflow as tf

    stop = threading.Event()
    load = threading.Thread(target=_predict_until, args=(zoo, stop))
    load.start()
    try:
        tf.profiler.experimental.client.trace(
            f"grpc://{zoo.grpc_target}", str(tmp_path), duration_ms=1000, num_tracing_attempts=3
        )
    finally:
        stop.set()
        load.join(30)
    traces = list((tmp_path / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1, list(tmp_path.rglob("*"))
    assert traces[0].name == f"{zoo.grpc_target.replace(':', '_')}.xplane.pb"
    assert count_events(traces[0].read_bytes()) > 0  # the host tracer saw TensorFlow at work


def test_monitor_is_unimplemented_and_the_service_needs_admin(tmp_path: Path) -> None:
    from aserve._proto import profiler_service_pb2 as pb

    (tmp_path / "admin").write_text("secret\n")
    args = (
        "--model_name=m",
        f"--model_base_path={tmp_path}",
        f"--admin_token_file={tmp_path / 'admin'}",
    )
    with run_server(*args) as server, grpc.insecure_channel(server.grpc_target) as channel:
        monitor = channel.unary_unary(
            "/tensorflow.ProfilerService/Monitor",
            request_serializer=pb.MonitorRequest.SerializeToString,
            response_deserializer=pb.MonitorResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            monitor(pb.MonitorRequest(duration_ms=10))
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as unimplemented:
            monitor(pb.MonitorRequest(), metadata=[("authorization", "Bearer secret")])
        assert unimplemented.value.code() is grpc.StatusCode.UNIMPLEMENTED

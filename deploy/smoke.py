"""The image smoke test's client (deploy/build-image.sh): readiness, REST and gRPC predict, metrics.

    python deploy/smoke.py --rest 127.0.0.1:8501 --grpc 127.0.0.1:8500 --model half_plus_two \
        --started "$(date +%s.%N)" --metrics /monitoring/prometheus/metrics

Prints what it checked, the first line being ``ready <seconds>``: from ``--started`` (when the
container was started) until ``/v2/health/ready`` first answered 200. Exits non-zero, saying
why, on any failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

EXPECTED = [2.5, 3.0, 4.5]  # half_plus_two: y = 0.5 x + 2 for x = 1, 2, 5


def wait_ready(rest: str, started: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{rest}/v2/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return time.time() - started
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"not ready within {timeout:g} s")


def predict_rest(rest: str, model: str) -> list[float]:
    body = json.dumps({"instances": [1.0, 2.0, 5.0]}).encode()
    url = f"http://{rest}/v1/models/{model}:predict"
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as answer:
        return [float(y) for y in json.load(answer)["predictions"]]


def predict_grpc(target: str, model: str) -> list[float]:
    # imported only now: importing TensorFlow's protos takes seconds, readiness is timed first
    import grpc
    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    x = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0, 5.0])
    x.tensor_shape.dim.add(size=3)
    request.inputs["x"].CopyFrom(x)
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        answer = stub.Predict(request, timeout=10)
    return list(answer.outputs["y"].float_val)


def metrics(rest: str, path: str) -> str:
    with urllib.request.urlopen(f"http://{rest}{path}", timeout=10) as answer:
        return str(answer.read().decode())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rest", required=True)
    parser.add_argument("--grpc", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--started", type=float, default=time.time())
    parser.add_argument("--metrics", default="")
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()
    ready = wait_ready(args.rest, args.started, args.timeout)
    print(f"ready {ready:.1f}", flush=True)
    for protocol, answer in [
        ("REST", predict_rest(args.rest, args.model)),
        ("gRPC", predict_grpc(args.grpc, args.model)),
    ]:
        if answer != EXPECTED:
            raise SystemExit(f"{protocol} predict answered {answer}, not {EXPECTED}")
        print(f"{protocol} predict: {answer}")
    if args.metrics:
        page = metrics(args.rest, args.metrics)
        counted = f':tensorflow:serving:request_count{{model_name="{args.model}",status="OK"}} 2'
        if counted not in page:
            raise SystemExit(f"metrics page lacks {counted!r}")
        print("metrics: both requests counted")
    return 0


if __name__ == "__main__":
    sys.exit(main())

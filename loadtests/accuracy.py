"""The TF Serving tutorial's accuracy client (``mnist_client.py``), on bundled digits.

Sends the held-out test images of :mod:`loadtests.digits` to a model server as gRPC
``Predict`` calls on the ``predict_images`` signature, keeps ``--concurrency`` calls in
flight, compares each answer's argmax with the label and prints the error rate::

    python -m loadtests.digits --steps 100 --export /tmp/digits/1
    python -m aserve --model_name=digits --model_base_path=/tmp/digits --port=8500 ...
    python -m loadtests.accuracy --server 127.0.0.1:8500 --model digits --num_tests 1000
    Inference error rate: 11.1%

A failed call counts as a wrong answer (as in the tutorial) and is reported. The test
set has 540 images; a larger ``--num_tests`` is cut to that.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtests import digits
from loadtests.targets import grpc_endpoint


@dataclass(frozen=True, slots=True)
class Score:
    """How one run went: wrong answers include failed calls."""

    tests: int
    wrong: int
    failed: int
    first_failure: str = ""

    @property
    def error_rate(self) -> float:
        return self.wrong / self.tests if self.tests else float("nan")


async def evaluate(
    server: str,
    model: str,
    num_tests: int,
    *,
    concurrency: int = 1,
    signature: str = "predict_images",
    version: int | None = None,
) -> Score:
    """Classify the first ``num_tests`` test images through ``server``."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    test = digits.test_set()
    count = min(num_tests, len(test.labels))
    pending = iter(range(count))
    outcomes: list[bool | str] = [False] * count
    async with grpc.aio.insecure_channel(grpc_endpoint(server).authority) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        async def worker() -> None:
            for i in pending:
                request = _request(model, signature, version, test.images[i])
                outcomes[i] = await _classify(stub, request, int(test.labels[i]))

        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    failures = [o for o in outcomes if isinstance(o, str)]
    wrong = sum(1 for o in outcomes if o is not True)
    return Score(count, wrong, len(failures), failures[0] if failures else "")


async def _classify(stub: Any, request: Any, label: int) -> bool | str:
    """True if the top score is ``label``, False if not, the error text if the call failed."""
    import grpc
    import tensorflow as tf

    try:
        response = await stub.Predict(request, timeout=30)
    except grpc.aio.AioRpcError as e:
        return f"{e.code().name}: {e.details()}"
    scores = tf.make_ndarray(response.outputs["scores"])
    return int(np.argmax(scores[0])) == label


def _request(model: str, signature: str, version: int | None, image: np.ndarray) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(image, shape=[1, image.size]))
    return request


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.accuracy", description=__doc__)
    parser.add_argument("--server", default="127.0.0.1:8500", help="gRPC host:port")
    parser.add_argument("--model", default="digits")
    parser.add_argument("--signature", default="predict_images")
    parser.add_argument("--version", type=int, help="a specific version (default: latest)")
    parser.add_argument("--num_tests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=1, help="calls in flight")
    args = parser.parse_args(argv)
    score = asyncio.run(
        evaluate(
            args.server,
            args.model,
            args.num_tests,
            concurrency=args.concurrency,
            signature=args.signature,
            version=args.version,
        )
    )
    if score.tests < args.num_tests:
        print(f"(the test set has {score.tests} images; used them all)", file=sys.stderr)
    if score.failed:
        print(f"{score.failed} calls failed, e.g. {score.first_failure}", file=sys.stderr)
    print(f"Inference error rate: {score.error_rate:.1%}")
    return 1 if score.failed == score.tests else 0


if __name__ == "__main__":
    sys.exit(main())

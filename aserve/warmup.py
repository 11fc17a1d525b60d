"""Model warm-up: replay ``assets.extra/tf_serving_warmup_requests`` while a version loads.

The file is a TFRecord of ``PredictionLog`` protos, as TF Serving reads it
(REFERENCE §5.8): predict, classify, regress and multi-inference records run
directly against the loading model (their ModelSpec names no other model), each
``iterations`` times; a record with no request is skipped. Any failure fails
the load, with TF Serving's error texts. Runs in the load thread.
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from aserve import inference, tensors
from aserve.errors import Code, ServingError, invalid_argument
from aserve.loader import Model
from aserve.signatures import CLASSIFY_METHOD, REGRESS_METHOD

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000


def warm_up(model: Model, iterations: int = 1) -> int:
    """Replay the warm-up records of ``model``; returns how many records ran."""
    path = os.path.join(model.path, WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    count = 0
    for record in _records(path):
        count += 1
        if count > MAX_RECORDS:
            raise invalid_argument(
                f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}"
            )
        job = _job(model, _parse(record))
        for _ in range(max(iterations, 1)):
            if job is not None:
                job.finish(model.run(job.plan.feeds, job.plan.fetches))
    return count


def _records(path: str) -> Any:
    try:
        yield from tf.compat.v1.io.tf_record_iterator(path)
    except tf.errors.OpError as e:
        raise ServingError(
            Code.DATA_LOSS, f"{e.message}. Please verify your warmup data is in TFRecord format."
        ) from None


def _parse(record: bytes) -> Any:
    log = prediction_log_pb2.PredictionLog()
    try:
        log.ParseFromString(record)
    except Exception as e:
        raise invalid_argument(f"Failed to parse warmup record: {e}") from None
    return log


def _job(model: Model, log: Any) -> inference.Job | None:
    kind = log.WhichOneof("log_type")
    signatures = model.signatures
    if kind == "predict_log":
        request = log.predict_log.request
        signature = inference.predict_signature(signatures, request.model_spec.signature_name)
        inputs = {alias: tensors.array_from_proto(t) for alias, t in request.inputs.items()}
        return inference.predict_job(signature, inputs, request.output_filter)
    if kind in ("classify_log", "regress_log"):
        request = getattr(log, kind).request
        method = CLASSIFY_METHOD if kind == "classify_log" else REGRESS_METHOD
        return inference.examples_job(
            signatures, request.model_spec.signature_name, method, request.input
        )
    if kind == "multi_inference_log":
        request = log.multi_inference_log.request
        tasks = [(t.model_spec.signature_name, t.method_name) for t in request.tasks]
        return inference.multi_inference_job(signatures, tasks, request.input)
    if kind is None:
        return None
    number = log.DESCRIPTOR.fields_by_name[kind].number
    raise ServingError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {number}")

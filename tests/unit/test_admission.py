"""Admission before decoding: which model a gRPC request names, read from its raw bytes."""

from tensorflow_serving.apis import classification_pb2, predict_pb2

from aserve.grpc_api import _spec_of
from aserve.ids import ServableRequest


def test_the_model_spec_is_read_from_the_first_field_alone() -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.model_spec.version.value = 3
    request.inputs["x"].float_val.extend([1.0] * 1000)
    assert _spec_of(request.SerializeToString()) == ServableRequest.specific("m", 3)
    labeled = classification_pb2.ClassificationRequest()
    labeled.model_spec.name = "n" * 300  # a length of more than one varint byte
    labeled.model_spec.version_label = "canary"
    assert _spec_of(labeled.SerializeToString()) == ServableRequest.labeled("n" * 300, "canary")


def test_anything_else_is_left_to_the_full_parse() -> None:
    no_spec = predict_pb2.PredictRequest()
    no_spec.inputs["x"].float_val.append(1.0)
    nameless = predict_pb2.PredictRequest()
    nameless.model_spec.signature_name = "s"
    for data in (b"", no_spec.SerializeToString(), nameless.SerializeToString(), b"\x0a\x05ab"):
        assert _spec_of(data) is None

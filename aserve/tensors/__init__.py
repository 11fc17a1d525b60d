"""The one tensor codec: REST JSON and gRPC TensorProto to and from numpy.

JSON follows TF Serving's ``util/json_tensor.cc`` (rapidjson) rule for rule and error text
for error text; TensorProto follows TensorFlow's ``Tensor::FromProto`` / ``AsProtoField`` /
``AsProtoTensorContent``. String tensors are numpy object arrays of ``bytes``. Only
TensorFlow's protos are imported, never its runtime.

    dtypes      DataType <-> name <-> numpy
    json_text   parsing request bodies, JSON values quoted in errors
    json_codec  predict/classify/regress bodies <-> arrays and results
    proto       TensorProto <-> arrays
"""

from aserve.tensors.dtypes import dtype_name, dtype_of, numpy_dtype
from aserve.tensors.json_codec import (
    classification_result_to_json,
    error_json,
    input_from_json,
    predict_inputs_from_json,
    predict_outputs_to_json,
    regression_result_to_json,
    signature_name_from_json,
)
from aserve.tensors.json_text import parse_json
from aserve.tensors.proto import array_from_proto, array_to_proto

__all__ = [
    "array_from_proto",
    "array_to_proto",
    "classification_result_to_json",
    "dtype_name",
    "dtype_of",
    "error_json",
    "input_from_json",
    "numpy_dtype",
    "parse_json",
    "predict_inputs_from_json",
    "predict_outputs_to_json",
    "regression_result_to_json",
    "signature_name_from_json",
]

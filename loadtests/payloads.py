"""Request bodies for load runs: one example repeated ``batch`` times.

REST gets TF Serving's row format, ``{"instances": [example, ...]}``; gRPC gets a
``PredictRequest`` whose input tensor is float32 with a leading batch dimension. KServe V2
gets the same float32 tensor: as JSON ``data``, as binary data after the JSON (with its
``Inference-Header-Content-Length`` header, binary outputs asked for), or as a serialized
``ModelInferRequest`` with ``raw_input_contents``.
Importing the gRPC half pulls in TensorFlow (the official stubs import it), so it is
only imported when called.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tensorflow_serving.apis.predict_pb2 import PredictRequest


def rest_body(example: Any, batch: int = 1) -> bytes:
    """``{"instances": [example] * batch}`` as JSON bytes."""
    return json.dumps({"instances": [example] * batch}, separators=(",", ":")).encode()


def predict_request(
    model: str,
    example: Any,
    batch: int = 1,
    *,
    input_name: str = "x",
    signature: str = "",
) -> PredictRequest:
    """A PredictRequest with ``input_name`` = float32 ``[batch, *shape(example)]``."""
    import numpy as np
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if signature:
        request.model_spec.signature_name = signature
    values = np.asarray([example] * batch, dtype="<f4")
    request.inputs[input_name].CopyFrom(_float_tensor(values))
    return request


def _float_tensor(values: Any) -> Any:
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in values.shape]
    )
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=values.tobytes()
    )


def request_from_json(text: str) -> PredictRequest:
    """A PredictRequest from its protobuf JSON form (``--body`` for gRPC)."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import predict_pb2

    return json_format.Parse(text, predict_pb2.PredictRequest())


V2_HEADER_LENGTH = "Inference-Header-Content-Length"


def v2_rest_body(
    example: Any, batch: int = 1, *, input_name: str = "x", binary: bool = False
) -> tuple[bytes, dict[str, str]]:
    """A V2 REST inference body and its extra headers: JSON ``data``, or binary both ways."""
    import numpy as np

    values = np.asarray([example] * batch, dtype="<f4")
    tensor: dict[str, Any] = {"name": input_name, "datatype": "FP32", "shape": list(values.shape)}
    if not binary:
        tensor["data"] = values.reshape(-1).tolist()
        return json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode(), {}
    tensor["parameters"] = {"binary_data_size": values.nbytes}
    doc = {"parameters": {"binary_data_output": True}, "inputs": [tensor]}
    header = json.dumps(doc, separators=(",", ":")).encode()
    return header + values.tobytes(), {V2_HEADER_LENGTH: str(len(header))}


def v2_infer_request(model: str, example: Any, batch: int = 1, *, input_name: str = "x") -> bytes:
    """A serialized V2 ``ModelInferRequest``: the float32 tensor in ``raw_input_contents``."""
    import numpy as np

    from aserve._proto import grpc_predict_v2_pb2 as pb

    values = np.asarray([example] * batch, dtype="<f4")
    request = pb.ModelInferRequest(model_name=model, raw_input_contents=[values.tobytes()])
    request.inputs.add(name=input_name, datatype="FP32", shape=list(values.shape))
    return request.SerializeToString()

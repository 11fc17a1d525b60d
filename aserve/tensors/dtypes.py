"""TensorFlow DataTypes: their names (as ``DataTypeString`` spells them) and numpy types."""

from __future__ import annotations

from typing import Any, Final

import ml_dtypes
import numpy as np
from tensorflow.core.framework import types_pb2

from aserve.errors import Code, ServingError

MAX_RANK: Final = 64  # numpy's limit (TensorFlow allows 254)

DT: Final = types_pb2  # DataType enum values: DT.DT_FLOAT, ...

# ----------------------------------------------------------------------------- dtypes

# DataType -> (TF's DataTypeString, numpy type, TensorProto typed field); None: not held here.
_DTYPES: Final[dict[int, tuple[str, Any, str | None]]] = {
    DT.DT_INVALID: ("INVALID", None, None),
    DT.DT_FLOAT: ("float", np.float32, "float_val"),
    DT.DT_DOUBLE: ("double", np.float64, "double_val"),
    DT.DT_INT32: ("int32", np.int32, "int_val"),
    DT.DT_UINT8: ("uint8", np.uint8, "int_val"),
    DT.DT_INT16: ("int16", np.int16, "int_val"),
    DT.DT_INT8: ("int8", np.int8, "int_val"),
    DT.DT_STRING: ("string", object, "string_val"),
    DT.DT_COMPLEX64: ("complex64", np.complex64, "scomplex_val"),
    DT.DT_INT64: ("int64", np.int64, "int64_val"),
    DT.DT_BOOL: ("bool", np.bool_, "bool_val"),
    DT.DT_QINT8: ("qint8", None, None),
    DT.DT_QUINT8: ("quint8", None, None),
    DT.DT_QINT32: ("qint32", None, None),
    DT.DT_BFLOAT16: ("bfloat16", ml_dtypes.bfloat16, "half_val"),
    DT.DT_QINT16: ("qint16", None, None),
    DT.DT_QUINT16: ("quint16", None, None),
    DT.DT_UINT16: ("uint16", np.uint16, "int_val"),
    DT.DT_COMPLEX128: ("complex128", np.complex128, "dcomplex_val"),
    DT.DT_HALF: ("half", np.float16, "half_val"),
    DT.DT_RESOURCE: ("resource", None, None),
    DT.DT_VARIANT: ("variant", None, None),
    DT.DT_UINT32: ("uint32", np.uint32, "uint32_val"),
    DT.DT_UINT64: ("uint64", np.uint64, "uint64_val"),
    DT.DT_FLOAT8_E5M2: ("float8_e5m2", ml_dtypes.float8_e5m2, "float8_val"),
    DT.DT_FLOAT8_E4M3FN: ("float8_e4m3fn", ml_dtypes.float8_e4m3fn, "float8_val"),
    DT.DT_FLOAT8_E4M3FNUZ: ("float8_e4m3fnuz", ml_dtypes.float8_e4m3fnuz, "float8_val"),
    DT.DT_FLOAT8_E4M3B11FNUZ: ("float8_e4m3b11fnuz", ml_dtypes.float8_e4m3b11fnuz, "float8_val"),
    DT.DT_FLOAT8_E5M2FNUZ: ("float8_e5m2fnuz", ml_dtypes.float8_e5m2fnuz, "float8_val"),
    DT.DT_INT4: ("int4", ml_dtypes.int4, "int_val"),
    DT.DT_UINT4: ("uint4", ml_dtypes.uint4, "int_val"),
    DT.DT_INT2: ("int2", None, None),
    DT.DT_UINT2: ("uint2", None, None),
    DT.DT_FLOAT4_E2M1FN: ("float4_e2m1fn", None, None),
}
NAMES: Final = {dtype: row[0] for dtype, row in _DTYPES.items()}
NUMPY: Final[dict[int, np.dtype[Any]]] = {
    dtype: np.dtype(row[1]) for dtype, row in _DTYPES.items() if row[1]
}
FIELDS: Final = {dtype: row[2] for dtype, row in _DTYPES.items() if row[2]}
_FROM_NUMPY: Final = {np_dtype: dtype for dtype, np_dtype in NUMPY.items() if np_dtype.kind != "O"}
_REF_OFFSET: Final = 100


def numpy_dtype(dtype: int) -> np.dtype:
    """numpy dtype holding a tensor of ``dtype``; UNIMPLEMENTED when numpy has none."""
    try:
        return NUMPY[dtype]
    except KeyError:
        message = f"Tensor type {dtype_name(dtype)} has no numpy equivalent"
        raise ServingError(Code.UNIMPLEMENTED, message) from None


def dtype_name(dtype: int) -> str:
    """TensorFlow's ``DataTypeString``: DT_FLOAT -> "float", DT_FLOAT_REF -> "float_ref"."""
    if dtype > _REF_OFFSET and dtype - _REF_OFFSET in NAMES:
        return NAMES[dtype - _REF_OFFSET] + "_ref"
    return NAMES.get(dtype, f"unknown dtype enum ({dtype})")


def dtype_of(array: np.ndarray) -> int:
    """DataType of a numpy array; object, bytes and str arrays are DT_STRING."""
    if array.dtype.kind in "OSU":
        return int(DT.DT_STRING)
    try:
        return _FROM_NUMPY[array.dtype]
    except KeyError:
        message = f"numpy dtype {array.dtype} has no TensorFlow equivalent"
        raise ServingError(Code.UNIMPLEMENTED, message) from None


def object_array(values: list[Any]) -> np.ndarray:
    array = np.empty(len(values), object)
    array[:] = values
    return array


def shape_text(shape: list[int]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"

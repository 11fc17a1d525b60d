"""The Open Inference Protocol's (KServe V2) tensors <-> numpy.

Three wire forms of one tensor, each checked against its ``datatype`` and ``shape`` and
charged to the request's :class:`~aserve.tensors.budget.Budget` before it is allocated:

* JSON ``data``: numbers, booleans or strings, flat or nested (row-major either way);
* binary (the REST binary tensor data extension, and gRPC's ``raw_input_contents``):
  little-endian, row-major, no padding; BOOL one byte each; BYTES elements each a 4-byte
  little-endian length and the bytes;
* gRPC's typed ``InferTensorContents`` (``fp32_contents``, ``bytes_contents``, ...).

V2 datatypes map onto TensorFlow's DataTypes (:data:`DATATYPES`); BYTES tensors are numpy
object arrays of ``bytes``, as everywhere in aserve. Only TensorFlow's protos are read.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any, Final

import numpy as np

from aserve.errors import Code, ServingError, invalid_argument
from aserve.tensors.budget import STRING_ELEMENT_BYTES, Budget
from aserve.tensors.dtypes import DT, MAX_RANK, NUMPY, dtype_name, dtype_of, object_array

# V2 datatype -> TensorFlow DataType
DATATYPES: Final[dict[str, int]] = {
    "BOOL": DT.DT_BOOL,
    "UINT8": DT.DT_UINT8,
    "UINT16": DT.DT_UINT16,
    "UINT32": DT.DT_UINT32,
    "UINT64": DT.DT_UINT64,
    "INT8": DT.DT_INT8,
    "INT16": DT.DT_INT16,
    "INT32": DT.DT_INT32,
    "INT64": DT.DT_INT64,
    "FP16": DT.DT_HALF,
    "BF16": DT.DT_BFLOAT16,
    "FP32": DT.DT_FLOAT,
    "FP64": DT.DT_DOUBLE,
    "BYTES": DT.DT_STRING,
}
_V2_NAMES: Final = {dtype: name for name, dtype in DATATYPES.items()}
# the typed InferTensorContents field of each datatype (FP16 and BF16 have none: raw only)
CONTENTS_FIELDS: Final = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_INTEGERS: Final = frozenset(name for name in DATATYPES if "INT" in name)
_FLOATS: Final = frozenset({"FP16", "BF16", "FP32", "FP64"})
_LENGTH: Final = struct.Struct("<I")


# -- datatypes and shapes ---------------------------------------------------------------


def datatype_of(dtype: int) -> str:
    """The V2 datatype of a TensorFlow DataType; a type V2 lacks keeps TensorFlow's name in
    capitals ("COMPLEX64"), which no request can send."""
    return _V2_NAMES.get(dtype) or dtype_name(dtype).upper()


def array_datatype(array: np.ndarray, name: str) -> str:
    """The V2 datatype of an output array; UNIMPLEMENTED for a type V2 cannot carry."""
    dtype = dtype_of(array)
    if dtype not in _V2_NAMES:
        raise ServingError(
            Code.UNIMPLEMENTED,
            f"Output '{name}' is {dtype_name(dtype)}, which the V2 protocol has no datatype for",
        )
    return _V2_NAMES[dtype]


def check_datatype(datatype: Any, name: str) -> str:
    if type(datatype) is not str or datatype not in DATATYPES:
        raise invalid_argument(
            f"Input '{name}': invalid datatype {datatype!r}; one of {', '.join(DATATYPES)}"
        )
    return datatype


def check_shape(shape: Any, name: str) -> tuple[int, ...]:
    """A request tensor's shape: a list of at most 64 non-negative integers."""
    if not isinstance(shape, list | tuple) or len(shape) > MAX_RANK:
        raise invalid_argument(f"Input '{name}': 'shape' must be a list of dimension sizes")
    for size in shape:
        if type(size) is not int or size < 0:
            raise invalid_argument(
                f"Input '{name}': invalid shape {list(shape)}: sizes are integers >= 0"
            )
    return tuple(shape)


def _np_dtype(datatype: str) -> np.dtype[Any]:
    return NUMPY[DATATYPES[datatype]]


def _elements(name: str, shape: Sequence[int], given: int) -> int:
    count = math.prod(shape)
    if given != count:
        raise invalid_argument(
            f"Input '{name}': shape {list(shape)} has {count} elements, but {given} were given"
        )
    return count


# -- JSON ---------------------------------------------------------------------------------


def array_from_json(
    name: str, datatype: str, shape: tuple[int, ...], data: Any, budget: Budget
) -> np.ndarray:
    """A tensor from its JSON ``data`` (flat or nested, row-major)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        budget.take(count, count * STRING_ELEMENT_BYTES)
        values = _strings(name, data)
        _elements(name, shape, len(values))
        return object_array(values).reshape(shape)
    np_dtype = _np_dtype(datatype)
    budget.take(count, count * np_dtype.itemsize)
    array = _numbers(name, datatype, data)
    _elements(name, shape, array.size)
    return array.astype(np_dtype, copy=False).reshape(shape)


def _numbers(name: str, datatype: str, data: Any) -> np.ndarray:
    try:
        array = np.asarray(data)
    except (ValueError, OverflowError):
        raise invalid_argument(
            f"Input '{name}': 'data' is not a list of numbers of one nesting (a ragged list?)"
        ) from None
    kind = array.dtype.kind
    if array.size == 0:
        return array
    if datatype == "BOOL":
        ok = kind == "b"
    elif datatype in _FLOATS:
        ok = kind in "iuf"
    else:
        if kind == "f" and datatype == "UINT64":  # numpy reads ints past int64 as floats
            array, kind = _exact_uint64(data, array), "u"
        ok = kind in "iu"
    if not ok:
        raise invalid_argument(
            f"Input '{name}': 'data' holds {_kind_text(kind)}, not {datatype} values"
        )
    if datatype in _INTEGERS:
        _check_range(name, datatype, array)
    return array


def _exact_uint64(data: Any, approximate: np.ndarray) -> np.ndarray:
    try:
        exact = np.asarray(data, dtype=np.uint64)
    except (ValueError, OverflowError, TypeError):
        return approximate
    return exact if np.array_equal(exact.astype(np.float64), approximate) else approximate


def _kind_text(kind: str) -> str:
    return {"b": "booleans", "f": "floats", "i": "integers", "u": "integers", "U": "strings"}.get(
        kind, "values of mixed or non-numeric types"
    )


def _check_range(name: str, datatype: str, array: np.ndarray) -> None:
    info = np.iinfo(_np_dtype(datatype))
    if int(array.min()) < info.min or int(array.max()) > info.max:
        raise invalid_argument(
            f"Input '{name}': a value is out of the range of {datatype} ({info.min}..{info.max})"
        )


def _strings(name: str, data: Any) -> list[bytes]:
    """The UTF-8 bytes of every string in ``data``, flattened row-major."""
    out: list[bytes] = []
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if type(value) is str:
            out.append(value.encode())
        elif type(value) is list and depth < MAX_RANK:
            stack.extend((item, depth + 1) for item in reversed(value))
        else:
            raise invalid_argument(f"Input '{name}': BYTES 'data' must be strings, nested or flat")
    return out


def json_data(array: np.ndarray, name: str) -> Any:
    """An output's ``data``: flat, row-major; what ``orjson`` writes with OPT_SERIALIZE_NUMPY.

    BYTES elements become strings, so they must be UTF-8 (binary output carries any bytes).
    """
    flat = array.reshape(-1)
    if flat.dtype == object:
        try:
            return [v.decode() if isinstance(v, bytes) else str(v) for v in flat.tolist()]
        except UnicodeDecodeError:
            raise invalid_argument(
                f"Output '{name}' holds bytes that are not UTF-8, which JSON cannot carry: "
                "ask for it as binary data (parameters.binary_data)"
            ) from None
    if flat.dtype.kind == "V" or flat.dtype.name == "bfloat16":
        return np.ascontiguousarray(flat.astype(np.float32))
    return np.ascontiguousarray(flat)


# -- binary -------------------------------------------------------------------------------


def array_from_binary(
    name: str, datatype: str, shape: tuple[int, ...], data: bytes | memoryview, budget: Budget
) -> np.ndarray:
    """A tensor from its binary form (row-major, little-endian, BYTES length-prefixed)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        budget.take(count, count * STRING_ELEMENT_BYTES + len(data))
        return object_array(_unpack_strings(name, data, count)).reshape(shape)
    np_dtype = _np_dtype(datatype)
    if len(data) != count * np_dtype.itemsize:
        raise invalid_argument(
            f"Input '{name}': {len(data)} bytes of data for shape {list(shape)} of {datatype}, "
            f"which needs {count * np_dtype.itemsize}"
        )
    budget.take(count, len(data))
    if datatype == "BOOL":
        return np.frombuffer(data, np.uint8).astype(np.bool_).reshape(shape)
    return np.frombuffer(data, np_dtype.newbyteorder("<")).reshape(shape)


def _unpack_strings(name: str, data: bytes | memoryview, count: int) -> list[bytes]:
    view, pos = memoryview(data), 0
    out: list[bytes] = []
    while pos < len(view) and len(out) < count:
        if pos + 4 > len(view):
            break
        (length,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        if pos + length > len(view):
            break
        out.append(bytes(view[pos : pos + length]))
        pos += length
    if len(out) != count or pos != len(view):
        raise invalid_argument(
            f"Input '{name}': the BYTES data does not hold exactly {count} length-prefixed "
            "elements (each a 4-byte little-endian length, then the bytes)"
        )
    return out


def array_to_binary(array: np.ndarray) -> bytes:
    """An output in binary form (the inverse of :func:`array_from_binary`)."""
    if array.dtype == object:
        items = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1).tolist()]
        return b"".join(chain.from_iterable((_LENGTH.pack(len(v)), v) for v in items))
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()


# -- gRPC typed contents ----------------------------------------------------------------------


def array_from_contents(
    name: str, datatype: str, shape: tuple[int, ...], contents: Any, budget: Budget
) -> np.ndarray:
    """A tensor from an ``InferTensorContents`` message (the field of its datatype)."""
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise invalid_argument(
            f"Input '{name}': {datatype} has no typed contents field; send it in raw_input_contents"
        )
    values = getattr(contents, field)
    count = _elements(name, shape, len(values))
    if datatype == "BYTES":
        budget.take(count, count * STRING_ELEMENT_BYTES + sum(map(len, values)))
        return object_array(list(values)).reshape(shape)
    np_dtype = _np_dtype(datatype)
    budget.take(count, count * np_dtype.itemsize)
    array = np.array(values, dtype=np.int64 if datatype in _INTEGERS - {"UINT64"} else np_dtype)
    if datatype in _INTEGERS and array.size:
        _check_range(name, datatype, array)
    return array.astype(np_dtype, copy=False).reshape(shape)


def fill_contents(array: np.ndarray, datatype: str, contents: Any) -> None:
    """Write an output into an ``InferTensorContents`` message (FP16/BF16: not possible)."""
    flat = array.reshape(-1)
    values: Iterable[Any] = flat.tolist()
    if datatype == "BYTES":
        values = [v if isinstance(v, bytes) else str(v).encode() for v in flat.tolist()]
    getattr(contents, CONTENTS_FIELDS[datatype]).extend(values)

"""REST JSON <-> numpy, rule for rule and error text for error text as TF Serving's
``util/json_tensor.cc``.

Request JSON is checked level by level with C-speed builtins and converted with numpy in
bulk; the exact element-by-element walk (``_fill``) runs only when the bulk path declines,
which for valid input is rare, and it is what produces TF's error messages. Floats are
rendered with TF Serving's WriteDecimal rule.
"""

from __future__ import annotations

import binascii
import math
import re
import struct
from collections.abc import Mapping
from itertools import chain
from typing import Any, Final

import numpy as np
import orjson
from tensorflow_serving.apis import input_pb2

from aserve.errors import Code, ServingError, invalid_argument
from aserve.signatures import TensorSpec
from aserve.tensors.dtypes import (
    DT,
    MAX_RANK,
    NUMPY,
    dtype_name,
    dtype_of,
    numpy_dtype,
    object_array,
    shape_text,
)
from aserve.tensors.json_text import debug_text, format_error, json_type, type_error


# ------------------------------------------------------------------ JSON -> tensors
def signature_name_from_json(doc: dict[str, Any]) -> str:
    """The request's "signature_name" ("" when absent); it must be a string."""
    name = doc.get("signature_name", "")
    if type(name) is not str:
        raise format_error(
            doc, "not formatted correctly. 'signature_name' key must be a string value."
        )
    return name


_FLOATS: Final = frozenset({DT.DT_FLOAT, DT.DT_DOUBLE})
_FLOAT32_MAX: Final = float(np.finfo(np.float32).max)
_I32: Final = (-(2**31), 2**31 - 1)
_INT_RANGES: Final = {
    DT.DT_INT32: _I32,
    DT.DT_INT16: _I32,
    DT.DT_INT8: _I32,
    DT.DT_UINT8: _I32,
    DT.DT_INT64: (-(2**63), 2**63 - 1),
    DT.DT_UINT32: (0, 2**32 - 1),
    DT.DT_UINT64: (0, 2**64 - 1),
}
_NUMBERS: Final = frozenset({int, float})
_TEXT: Final = frozenset({str, dict})
_B64_LENIENT: Final = re.compile(r"([A-Za-z0-9+/ \t\n\v\f\r]*)([=. \t\n\v\f\r]*)")
_SPACE: Final = re.compile(r"[ \t\n\v\f\r]")

Flat = tuple[list[int], np.ndarray]  # a tensor as (shape, values in row-major order)


def predict_inputs_from_json(
    doc: dict[str, Any], inputs: Mapping[str, TensorSpec]
) -> tuple[dict[str, np.ndarray], bool]:
    """Tensors of a :predict body: (alias -> array, True for row format "instances")."""
    if not inputs:
        name = signature_name_from_json(doc) or "DEFAULT"
        raise invalid_argument(f"Failed to get input map for signature: {name}")
    if "instances" in doc:
        if "inputs" in doc:
            raise format_error(
                doc,
                "Not formatted correctly expecting only one of 'inputs' "
                "or 'instances' keys to exist ",
            )
        instances = doc["instances"]
        if type(instances) is not list:
            raise format_error(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise format_error(doc, "No values in 'instances' array")
        return _rows(instances, inputs), True
    if "inputs" in doc:
        return _columns(doc["inputs"], inputs), False
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _columns(value: Any, inputs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    if type(value) is not dict or _is_b64(value):
        if len(inputs) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as "
                "multiple input tensors required as per tensorinfo_map"
            )
        alias = min(inputs)
        return {alias: _array(value, inputs[alias].dtype)}
    arrays = {}
    for alias in sorted(inputs):
        if alias not in value:
            raise invalid_argument(f"Missing named input: {alias} in 'inputs' object.")
        arrays[alias] = _array(value[alias], inputs[alias].dtype)
    return arrays


def _rows(instances: list[Any], inputs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    if type(instances[0]) is not dict and len(inputs) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as "
            "multiple input tensors required as per tensorinfo_map"
        )
    names = set(inputs)
    if _is_named(instances[0]):
        if all(_is_named(e) and e.keys() == names for e in instances):
            columns = {a: _fast([e[a] for e in instances], inputs[a].dtype) for a in names}
            arrays = {a: _shaped(c) for a, c in sorted(columns.items()) if c is not None}
            if len(arrays) == len(names):
                return arrays
        return _exact_rows(instances, inputs, objects=True)
    alias = min(inputs)
    fast = _fast(instances, inputs[alias].dtype)
    if fast is None:
        return _exact_rows(instances, inputs, objects=False)
    return {alias: _shaped(fast)}


def _exact_rows(
    instances: list[Any], inputs: Mapping[str, TensorSpec], *, objects: bool
) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList, element by element, for its exact errors."""
    names = sorted(inputs)
    columns: dict[str, list[Flat]] = {}
    for index, element in enumerate(instances):
        if objects != _is_named(element):
            wanted = "object but got list" if objects else "value/list but got object"
            raise invalid_argument(f"Expecting {wanted} at item {index} of input list")
        for key, value in element.items() if objects else [(names[0], element)]:
            try:
                _add_instance_item(columns, key, value, inputs)
            except ServingError as err:
                where = f" key: {key}" if objects else ""
                raise invalid_argument(
                    f"Failed to process element: {index}{where} of 'instances' list. Error: {err}"
                ) from None
        if objects and element.keys() != set(names):
            raise invalid_argument(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{debug_text(element)} keys must be equal to: {','.join(names)}"
            )
    return {
        alias: _shaped(([len(instances), *parts[0][0]], np.concatenate([f for _, f in parts])))
        for alias, parts in sorted(columns.items())
    }


def _add_instance_item(
    columns: dict[str, list[Flat]], name: str, value: Any, inputs: Mapping[str, TensorSpec]
) -> None:
    if name not in inputs:
        raise invalid_argument(f"JSON object: does not have named input: {name}")
    shape, flat = _tensor(value, inputs[name].dtype)
    parts = columns.setdefault(name, [])
    if parts and parts[0][1].size != flat.size:
        raise invalid_argument(f"Expecting tensor size: {parts[0][1].size} but got: {flat.size}")
    if parts and parts[0][0] != shape:
        raise invalid_argument(
            f"Expecting shape {shape_text(parts[0][0])} but got: {shape_text(shape)}"
        )
    parts.append((shape, flat))


def _is_b64(val: Any) -> bool:
    return type(val) is dict and len(val) == 1 and type(val.get("b64")) is str


def _is_named(val: Any) -> bool:
    return type(val) is dict and not _is_b64(val)


def _array(value: Any, dtype: int) -> np.ndarray:
    return _shaped(_tensor(value, dtype))


def _shaped(tensor: Flat) -> np.ndarray:
    shape, flat = tensor
    if len(shape) > MAX_RANK:
        raise invalid_argument(
            f"A tensor of {len(shape)} dimensions: at most {MAX_RANK} are supported"
        )
    return flat.reshape(shape)


def _tensor(value: Any, dtype: int) -> Flat:
    return _fast(value, dtype) or _exact(value, dtype)


def _fast(value: Any, dtype: int) -> Flat | None:
    """Bulk conversion of a uniform value; None when anything needs a closer look."""
    shape: list[int] = []
    items, types = [value], {type(value)}
    while list in types:
        if len(types) != 1:
            return None
        sizes = set(map(len, items))
        if len(sizes) != 1:
            return None
        shape.append(sizes.pop())
        items = items[0] if len(items) == 1 else list(chain.from_iterable(items))
        types = set(map(type, items))
    flat = _fast_values(items, types, dtype)
    return None if flat is None else (shape, flat)


def _fast_values(leaves: list[Any], types: set[type], dtype: int) -> np.ndarray | None:
    if not leaves:
        return np.empty(0, numpy_dtype(dtype))
    if dtype in _FLOATS:
        return _flat_array(leaves, dtype) if types <= _NUMBERS else None
    if dtype in _INT_RANGES:
        if types != {int}:
            return None
        try:
            wide = _wide_ints(leaves, dtype)
        except OverflowError:
            return None
        low, high = _INT_RANGES[dtype]
        return wide.astype(NUMPY[dtype]) if low <= wide.min() and wide.max() <= high else None
    if dtype == DT.DT_BOOL:
        return np.array(leaves, np.bool_) if types == {bool} else None
    if dtype == DT.DT_STRING and types <= _TEXT:
        try:
            values = [v.encode() if type(v) is str else _b64_value(v) for v in leaves]
        except UnicodeEncodeError:
            return None
        return None if None in values else object_array(values)
    return None


def _exact(value: Any, dtype: int) -> Flat:
    """FillTensorProto: the first error in document order, or the values."""
    shape, probe = [], value
    while type(probe) is list:
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    values: list[Any] = []
    _fill(value, 0, shape, dtype, values)
    return shape, _flat_array(values, dtype)


def _fill(val: Any, level: int, shape: list[int], dtype: int, out: list[Any]) -> None:
    rank = len(shape)
    if type(val) is not list:
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {debug_text(val)} found at incorrect level: "
                f"{level + 1} in the JSON DOM. Expected at level: {rank}"
            )
        out.append(_leaf(val, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(val) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(val)} at level: "
            f"{level} expected size: {shape[level]}"
        )
    for item in val:
        _fill(item, level + 1, shape, dtype, out)


def _leaf(val: Any, dtype: int) -> Any:
    """AddValueToTensor (and the b64 object case): the value to store, or TF's error."""
    kind = type(val)
    if kind is dict:
        if dtype != DT.DT_STRING:
            raise type_error(val, dtype)
        return _b64_object(val)
    if dtype in _FLOATS:
        ok = kind is float or kind is int
    elif dtype in _INT_RANGES:
        ok = kind is int and _INT_RANGES[dtype][0] <= val <= _INT_RANGES[dtype][1]
    elif dtype == DT.DT_BOOL:
        ok = kind is bool
    elif dtype == DT.DT_STRING:
        if kind is str:
            return _utf8(val)
        ok = False
    else:
        message = f"Conversion of JSON Value: {debug_text(val)} to type: {dtype_name(dtype)}"
        raise ServingError(Code.UNIMPLEMENTED, message)
    if not ok:
        raise type_error(val, dtype)
    return val


def _flat_array(values: list[Any], dtype: int) -> np.ndarray:
    if dtype == DT.DT_STRING:
        return object_array(values)
    if dtype in _INT_RANGES:
        return _wide_ints(values, dtype).astype(NUMPY[dtype])
    if dtype == DT.DT_DOUBLE or (
        dtype == DT.DT_FLOAT
        and len(values) <= _SMALL
        and min(values) >= -_FLOAT32_MAX
        and max(values) <= _FLOAT32_MAX
    ):  # cannot overflow: np.errstate costs ~2.8 µs, more than a small request's conversion
        return np.fromiter(values, numpy_dtype(dtype), len(values))
    with np.errstate(over="ignore"):  # JSON numbers beyond float32 become +-inf, as in TF
        return np.fromiter(values, numpy_dtype(dtype), len(values))


def _wide_ints(values: list[Any], dtype: int) -> np.ndarray:
    return np.fromiter(values, np.uint64 if dtype == DT.DT_UINT64 else np.int64, len(values))


def _utf8(text: str) -> bytes:
    """UTF-8 bytes; raw bytes kept by the lenient parser come back as they were."""
    for errors in ("strict", "surrogateescape"):
        try:
            return text.encode("utf-8", errors)
        except UnicodeEncodeError:
            pass
    return text.encode("utf-8", "surrogatepass")


def _b64_value(val: Any) -> bytes | None:
    return _b64decode(val["b64"]) if _is_b64(val) else None


def _b64_object(val: Any) -> bytes:
    """JsonDecodeBase64Object."""
    if not _is_b64(val):
        raise format_error(val, "not formatted correctly for base64 data")
    decoded = _b64decode(val["b64"])
    if decoded is None:
        raise invalid_argument("Unable to base64 decode")
    return decoded


def _b64decode(text: str) -> bytes | None:
    """absl::Base64Unescape: standard alphabet, whitespace skipped, padding optional."""
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    match = _B64_LENIENT.fullmatch(text)
    if match is None:
        return None
    data = _SPACE.sub("", match[1])
    pads = len(_SPACE.sub("", match[2]))
    expected = (0, None, 2, 1)[len(data) % 4]
    if expected is None or pads not in (0, expected):
        return None
    return binascii.a2b_base64(data + "=" * expected)


# ------------------------------------------------------------------ tensors -> JSON

_JSON_INTS: Final = frozenset(
    {DT.DT_INT32, DT.DT_INT16, DT.DT_INT8, DT.DT_UINT8, DT.DT_INT64, DT.DT_UINT32, DT.DT_UINT64}
)


def predict_outputs_to_json(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """{"predictions": ...} (row format) or {"outputs": ...} (columnar), as TF writes them."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    aliases = sorted(outputs)
    if row_format:
        return ('{"predictions":[' + ",".join(_row_texts(outputs, aliases)) + "]}").encode()
    if len(aliases) == 1:
        return ('{"outputs":' + _tensor_text(outputs[aliases[0]], aliases[0]) + "}").encode()
    members = (_key(a) + ":" + _tensor_text(outputs[a], a) for a in aliases)
    return ('{"outputs":{' + ",".join(members) + "}}").encode()


def _row_texts(outputs: Mapping[str, np.ndarray], aliases: list[str]) -> list[str]:
    batch = -1
    for alias in aliases:
        shape = outputs[alias].shape
        if not shape:
            raise invalid_argument(f"Tensor name: {alias} has no shape information ")
        if batch >= 0 and shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {alias} has inconsistent batch size: {shape[0]} expecting: {batch}"
            )
        batch = shape[0]
    items = {a: _nest(_tokens(outputs[a], a), outputs[a].shape) for a in aliases}
    if len(aliases) == 1:
        return items[aliases[0]]
    keys = {alias: _key(alias) + ":" for alias in aliases}
    return ["{" + ",".join(keys[a] + items[a][i] for a in aliases) + "}" for i in range(batch)]


def _tensor_text(array: np.ndarray, alias: str) -> str:
    items = _nest(_tokens(array, alias), array.shape)
    return items[0] if not array.shape else "[" + ",".join(items) + "]"


def _nest(tokens: list[str], shape: tuple[int, ...]) -> list[str]:
    """Group flat JSON tokens into nested arrays; returns the JSON text of each array[i]."""
    items = tokens
    for level in range(len(shape) - 1, 0, -1):
        size, count = shape[level], math.prod(shape[:level])
        items = ["[" + ",".join(items[i * size : (i + 1) * size]) + "]" for i in range(count)]
    return items


def _tokens(array: np.ndarray, alias: str) -> list[str]:
    """JSON text of every element (AddSingleValueAndAdvance), row-major."""
    flat = array.ravel()
    if not flat.size:
        return []
    dtype = dtype_of(array)
    if dtype in _FLOATS:
        return _float_tokens(flat, dtype == DT.DT_DOUBLE)
    if dtype in _JSON_INTS:
        return list(map(str, flat.tolist()))
    if dtype == DT.DT_BOOL:
        return ["true" if v else "false" for v in flat.tolist()]
    if dtype == DT.DT_STRING:
        as_b64 = alias.endswith("_bytes")
        return [_string_token(v, as_b64) for v in flat.tolist()]
    raise invalid_argument(f"Failed to write JSON value for tensor type: {dtype_name(dtype)}")


def _string_token(value: bytes | str, as_b64: bool) -> str:
    data = value.encode() if isinstance(value, str) else value
    if as_b64:
        return '{"b64":"' + binascii.b2a_base64(data, newline=False).decode() + '"}'
    return orjson.dumps(data.decode("utf-8", "replace")).decode()


def _key(alias: str) -> str:
    return orjson.dumps(alias).decode()


def _float_tokens(flat: np.ndarray, is_double: bool) -> list[str]:
    """TF's WriteDecimal for a whole array: "%g" unless that does not read back as the same
    float (double), then "%.9g" ("%.17g"); ".0" when the text has neither '.' nor 'e'.

    Small arrays go element by element (numpy's per-call cost dominates below ~16 values:
    a one-value answer took ~15 µs the vectorised way, ~1 µs this way)."""
    if flat.size <= _SMALL:
        return [_float_token(v, is_double) for v in flat.tolist()]
    finite = np.isfinite(flat)
    values = flat if finite.all() else np.where(finite, flat, 0)
    tokens = _formatted("%g", values, 1e6)
    back = np.array(orjson.loads("[" + ",".join(tokens) + "]"), np.float64)
    exact = back == values if is_double else back.astype(np.float32) == values
    redo = np.flatnonzero(~exact & finite)
    if redo.size:
        precise = (
            _formatted("%.17g", values[redo], 1e17)
            if is_double
            else _formatted("%.9g", values[redo], 1e9)
        )
        for i, token in zip(redo.tolist(), precise, strict=True):
            tokens[i] = token
    for i in np.flatnonzero(~finite).tolist():
        tokens[i] = "NaN" if np.isnan(flat[i]) else "-Infinity" if flat[i] < 0 else "Infinity"
    return tokens


_SMALL: Final = 16
_AS_FLOAT32: Final = struct.Struct("f")


def _float_token(value: float, is_double: bool) -> str:
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    back = float(text)  # equal: it reads back as the same float32 too (value is one)
    if back != value and (is_double or _AS_FLOAT32.unpack(_AS_FLOAT32.pack(back))[0] != value):
        text = f"{value:.17g}" if is_double else f"{value:.9g}"
    return text if ("." in text or "e" in text) else text + ".0"


def _formatted(spec: str, values: np.ndarray, exponent_from: float) -> list[str]:
    """printf each value; append ".0" to the integers printed without '.' or 'e'."""
    tokens = (((spec + ",") * values.size)[:-1] % tuple(values.tolist())).split(",")
    whole = (np.trunc(values) == values) & (abs(values) < exponent_from)
    for i in np.flatnonzero(whole).tolist():
        tokens[i] += ".0"
    return tokens


def classification_result_to_json(result: Any) -> bytes:
    """ClassificationResult -> {"results": [[[label, score], ...], ...]}."""
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    scores = np.array([c.score for r in result.classifications for c in r.classes], np.float32)
    tokens = iter(_float_tokens(scores, False) if scores.size else [])
    rows = (
        "[" + ",".join(f"[{_key(c.label)},{next(tokens)}]" for c in r.classes) + "]"
        for r in result.classifications
    )
    return ('{"results":[' + ",".join(rows) + "]}").encode()


def regression_result_to_json(result: Any) -> bytes:
    """RegressionResult -> {"results": [value, ...]}."""
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = np.array([r.value for r in result.regressions], np.float32)
    return ('{"results":[' + ",".join(_float_tokens(values, False)) + "]}").encode()


def error_json(message: str) -> bytes:
    """{"error": message}, TF Serving's error body."""
    return orjson.dumps({"error": message.encode("utf-8", "replace").decode()})


# ----------------------------------------------------------- classify/regress input

_INT64: Final = (-(2**63), 2**63 - 1)
_LISTS: Final = {"int64": "int64_list", "float": "float_list", "bytes": "bytes_list"}


def input_from_json(doc: dict[str, Any]) -> input_pb2.Input:
    """The Input of a :classify or :regress body ("context", "examples")."""
    request_input = input_pb2.Input()
    if "context" in doc:
        with_context = request_input.example_list_with_context
        with_context.context.SetInParent()
        _fill_example(doc["context"], with_context.context)
        target = with_context.examples
    else:
        target = request_input.example_list.examples
    if "examples" not in doc:
        raise format_error(
            doc, "When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if type(examples) is not list:
        raise format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise format_error(doc, "'examples' value is an empty array")
    for value in examples:
        _fill_example(value, target.add())
    return request_input


def _fill_example(value: Any, example: Any) -> None:
    """MakeExampleFromJsonObject."""
    if type(value) is not dict:
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
    features = example.features.feature
    for name, content in value.items():
        values = content if type(content) is list else [content]
        if not _fill_feature_fast(values, features[name]):
            _fill_feature(values, name, features[name])


def _fill_feature_fast(values: list[Any], feature: Any) -> bool:
    types = set(map(type, values))
    if types == {float}:
        feature.float_list.value.extend(values)
    elif types == {int} and _INT64[0] <= min(values) and max(values) <= _INT64[1]:
        feature.int64_list.value.extend(values)
    elif types == {str}:
        feature.bytes_list.value.extend(list(map(_utf8, values)))
    else:
        return not values
    return True


def _fill_feature(values: list[Any], name: str, feature: Any) -> None:
    """AddValueToFeature for each element: one kind per feature, TF's errors."""
    current = None
    for val in values:
        kind, value = _feature_kind(val, name)
        wanted = "int64" if kind == "uint64" else kind
        if current not in (None, wanted):
            raise invalid_argument(
                f"Unexpected element type in feature: {name} expecting type: {current}"
            )
        if kind == "uint64":
            raise invalid_argument(
                f"Feature: {name} has uint64_t element. Only int64_t is supported."
            )
        value = _b64_object(value) if type(value) is dict else value
        getattr(feature, _LISTS[wanted]).value.append(value)
        current = wanted


def _feature_kind(val: Any, name: str) -> tuple[str, Any]:
    kind = type(val)
    if kind is bool:
        return "int64", int(val)
    if kind is float:
        return "float", val
    if kind is int:  # ints outside uint64 were doubles to rapidjson
        if _INT64[0] <= val <= _INT64[1]:
            return "int64", val
        return ("uint64", val) if 0 <= val < 2**64 else ("float", float(val))
    if kind is str:
        return "bytes", _utf8(val)
    if _is_b64(val):
        return "bytes", val
    raise invalid_argument(
        f"Feature: {name} has element with unexpected JSON type: {json_type(val)}"
    )

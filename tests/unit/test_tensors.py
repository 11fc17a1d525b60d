"""aserve.tensors against TF Serving's json_tensor.cc and TensorFlow's Tensor proto codec.

Expected texts are copied from json_tensor.cc; TensorFlow itself (``tf.io.parse_tensor`` is
C++ ``Tensor::FromProto``, ``tf.io.serialize_tensor`` is ``AsProtoTensorContent``) is the
oracle for the TensorProto half.
"""

from __future__ import annotations

import json
import math
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import classification_pb2, predict_pb2, regression_pb2

from aserve import tensors
from aserve.errors import Code, ServingError
from aserve.signatures import TensorSpec
from aserve.tensors.proto import tensor_wire

DT = types_pb2
INVALID, UNIMPLEMENTED = Code.INVALID_ARGUMENT, Code.UNIMPLEMENTED


def specs(**dtypes: int) -> dict[str, TensorSpec]:
    return {alias: TensorSpec(alias, f"{alias}:0", dtype) for alias, dtype in dtypes.items()}


def predict(body: bytes | str, inputs: dict[str, TensorSpec]) -> tuple[dict[str, Any], bool]:
    raw = body.encode() if isinstance(body, str) else body
    return tensors.predict_inputs_from_json(tensors.parse_json(raw), inputs)


def column(body: str, dtype: int) -> np.ndarray:
    return predict(f'{{"inputs": {body}}}', specs(x=dtype))[0]["x"]


def error_of(call: Any, *args: Any) -> tuple[Code, str]:
    with pytest.raises(ServingError) as info:
        call(*args)
    return info.value.code, info.value.message


def assert_array(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if actual.dtype.kind == "O":
        assert actual.tolist() == expected.tolist()
    else:
        assert np.array_equal(actual, expected, equal_nan=actual.dtype.kind in "fc")


# ------------------------------------------------------------------------------ dtypes

NUMPY_DTYPES = [
    (DT.DT_FLOAT, np.float32, "float"),
    (DT.DT_DOUBLE, np.float64, "double"),
    (DT.DT_INT32, np.int32, "int32"),
    (DT.DT_UINT8, np.uint8, "uint8"),
    (DT.DT_INT16, np.int16, "int16"),
    (DT.DT_INT8, np.int8, "int8"),
    (DT.DT_COMPLEX64, np.complex64, "complex64"),
    (DT.DT_INT64, np.int64, "int64"),
    (DT.DT_BOOL, np.bool_, "bool"),
    (DT.DT_BFLOAT16, ml_dtypes.bfloat16, "bfloat16"),
    (DT.DT_UINT16, np.uint16, "uint16"),
    (DT.DT_COMPLEX128, np.complex128, "complex128"),
    (DT.DT_HALF, np.float16, "half"),
    (DT.DT_UINT32, np.uint32, "uint32"),
    (DT.DT_UINT64, np.uint64, "uint64"),
    (DT.DT_INT4, ml_dtypes.int4, "int4"),
    (DT.DT_FLOAT8_E4M3FN, ml_dtypes.float8_e4m3fn, "float8_e4m3fn"),
]


@pytest.mark.parametrize(("dtype", "np_type", "name"), NUMPY_DTYPES)
def test_dtype_tables_agree(dtype: int, np_type: Any, name: str) -> None:
    assert tensors.numpy_dtype(dtype) == np.dtype(np_type)
    assert tensors.dtype_name(dtype) == name
    assert tensors.dtype_of(np.zeros(2, np_type)) == dtype


@pytest.mark.parametrize(
    ("dtype", "name"),
    [
        (DT.DT_STRING, "string"),
        (DT.DT_INVALID, "INVALID"),
        (DT.DT_FLOAT_REF, "float_ref"),
        (DT.DT_QINT8, "qint8"),
        (DT.DT_RESOURCE, "resource"),
        (DT.DT_VARIANT, "variant"),
        (77, "unknown dtype enum (77)"),
    ],
)
def test_dtype_name(dtype: int, name: str) -> None:
    assert tensors.dtype_name(dtype) == name


@pytest.mark.parametrize("dtype", [DT.DT_QINT8, DT.DT_RESOURCE, DT.DT_VARIANT, DT.DT_INVALID])
def test_numpy_dtype_unimplemented(dtype: int) -> None:
    assert error_of(tensors.numpy_dtype, dtype)[0] == UNIMPLEMENTED


@pytest.mark.parametrize("array", [np.array([b"a"], object), np.array([b"a"]), np.array(["a"])])
def test_string_arrays_are_dt_string(array: np.ndarray) -> None:
    assert tensors.dtype_of(array) == DT.DT_STRING
    assert tensors.numpy_dtype(DT.DT_STRING) == np.dtype(object)


# ------------------------------------------------------------------------- parse_json


def test_parse_json_fast_path_and_leniencies() -> None:
    assert tensors.parse_json(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    doc = tensors.parse_json(b'{"a": [NaN, -NaN, Inf, -Inf, Infinity, -Infinity]} trailing [')
    assert math.isnan(doc["a"][0]) and math.isnan(doc["a"][1])
    assert doc["a"][2:] == [math.inf, -math.inf, math.inf, -math.inf]
    assert tensors.parse_json(b'{"s": "Inf -NaN", "n": Inf}') == {"s": "Inf -NaN", "n": math.inf}
    assert tensors.parse_json(b'{"a": 1}{"b": 2}') == {"a": 1}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"  \n", "JSON Parse error: The document is empty. at offset: 3"),
        (b"{", "JSON Parse error: Missing a name for object member. at offset: 1"),
        (
            b'{"a" 1}',
            "JSON Parse error: Missing a colon after a name of object member. at offset: 5",
        ),
        (b'{"a": }', "JSON Parse error: Invalid value. at offset: 6"),
        (b"x", "JSON Parse error: Invalid value. at offset: 0"),
        (
            b'{"a": 1 "b": 2}',
            "JSON Parse error: Missing a comma or '}' after an object member. at offset: 8",
        ),
        (
            b'{"a": [1 2]}',
            "JSON Parse error: Missing a comma or ']' after an array element. at offset: 9",
        ),
        (
            b'{"a": [Inf, 1 2]}',
            "JSON Parse error: Missing a comma or ']' after an array element. at offset: 14",
        ),
        (
            b'{"\xc3\xa9": 1 2}',
            "JSON Parse error: Missing a comma or '}' after an object member. at offset: 9",
        ),
        (
            b'{"a": "abc',
            "JSON Parse error: Missing a closing quotation mark in string. at offset: 10",
        ),
        (b'{"a": "\\x"}', "JSON Parse error: Invalid escape character in string. at offset: 7"),
        (b'{"a": 1.}', "JSON Parse error: Miss fraction part in number. at offset: 8"),
        (b'{"a": 1e}', "JSON Parse error: Miss exponent in number. at offset: 8"),
        (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
        (b'"x"', 'JSON Value: "x" Is not object'),
        (b"1.5", "JSON Value: 1.5 Is not object"),
        (b"null", "JSON Value: null Is not object"),
        (b"[NaN, 1]", "JSON Value: [ Is not object"),
        (
            b"[[1e21, 1e-7, 1.5e300], 0.001, -0.0, 100.0, true]",
            "JSON Value: [[1e21, 1e-7, 1.5e300], 0.001, -0.0, 100.0, true] Is not object",
        ),
    ],
)
def test_parse_json_errors(body: bytes, message: str) -> None:
    assert error_of(tensors.parse_json, body) == (INVALID, message)


@pytest.mark.parametrize(
    ("body", "offset"),
    [
        (b"[" * 100_000, 1025),  # orjson stops at its nesting limit
        (b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 1038),
        (b'{"instances": ' + b"[" * 1000 + b"NaN" + b"]" * 1000 + b"}", 1013),  # lenient path
    ],
)
def test_deep_nesting_is_a_parse_error_not_a_crash(body: bytes, offset: int) -> None:
    assert error_of(tensors.parse_json, body) == (
        INVALID,
        "JSON Parse error: Arrays and objects nested too deeply (the limit is about 1024 "
        f"levels). at offset: {offset}",
    )


def test_debug_strings_are_cut_near_256_bytes() -> None:
    _, message = error_of(tensors.parse_json, json.dumps(list(range(1000))).encode())
    debug = message.removeprefix("JSON Value: ").removesuffix(" Is not object")
    assert debug.startswith("[0, 1, 2, 3") and "]" not in debug
    assert 256 <= len(debug) < 262


def test_signature_name() -> None:
    assert tensors.signature_name_from_json({"inputs": 1}) == ""
    assert tensors.signature_name_from_json({"signature_name": "s"}) == "s"
    assert error_of(tensors.signature_name_from_json, {"signature_name": 1, "inputs": 1}) == (
        INVALID,
        (
            'JSON Value: {\n    "signature_name": 1,\n    "inputs": 1\n} not formatted correctly. '
            "'signature_name' key must be a string value."
        ),
    )


# ------------------------------------------------------------ JSON values -> tensor dtypes


def type_error(debug: str, json_type: str, dtype: str) -> tuple[Code, str]:
    return INVALID, f"JSON Value: {debug} Type: {json_type} is not of expected type: {dtype}"


B64_A = '{"b64": "YQ=="}'
B64_DEBUG = '{\n    "b64": "YQ=="\n}'
CONVERSIONS = [
    # (dtype, JSON value, expected array or (code, message))
    (
        DT.DT_FLOAT,
        "[1, -2, 1.5, 2147483648, 1e39, NaN]",
        np.array([1, -2, 1.5, 2147483648, np.inf, np.nan], np.float32),
    ),
    (DT.DT_FLOAT, "[1435774380]", np.array([1435774336], np.float32)),
    (DT.DT_FLOAT, "true", type_error("true", "True", "float")),
    (DT.DT_FLOAT, '"1"', type_error('"1"', "String", "float")),
    (DT.DT_FLOAT, "null", type_error("null", "Null", "float")),
    (DT.DT_FLOAT, B64_A, type_error(B64_DEBUG, "Object", "float")),
    (DT.DT_DOUBLE, "[0.1, 3, 18446744073709551616]", np.array([0.1, 3, 2.0**64], np.float64)),
    (DT.DT_DOUBLE, "[false]", type_error("false", "False", "double")),
    (DT.DT_INT32, "[1, -2147483648, 2147483647]", np.array([1, -(2**31), 2**31 - 1], np.int32)),
    (DT.DT_INT32, "[1.0]", type_error("1.0", "Number", "int32")),
    (DT.DT_INT32, "[2147483648]", type_error("2147483648", "Number", "int32")),
    (DT.DT_INT32, "[NaN]", type_error("", "Number", "int32")),
    (DT.DT_INT32, "[true]", type_error("true", "True", "int32")),
    (DT.DT_INT16, "[7, -70000]", np.array([7, -70000], np.int32).astype(np.int16)),
    (DT.DT_INT8, "[300, -1]", np.array([44, -1], np.int8)),
    (DT.DT_UINT8, "[255, -1, 256]", np.array([255, 255, 0], np.uint8)),
    (DT.DT_UINT8, "[1.5]", type_error("1.5", "Number", "uint8")),
    (
        DT.DT_INT64,
        "[-9223372036854775808, 9223372036854775807]",
        np.array([-(2**63), 2**63 - 1], np.int64),
    ),
    (DT.DT_INT64, "[9223372036854775808]", type_error("9223372036854775808", "Number", "int64")),
    (DT.DT_UINT32, "[0, 4294967295]", np.array([0, 2**32 - 1], np.uint32)),
    (DT.DT_UINT32, "[-1]", type_error("-1", "Number", "uint32")),
    (DT.DT_UINT32, "[4294967296]", type_error("4294967296", "Number", "uint32")),
    (DT.DT_UINT64, "[18446744073709551615]", np.array([2**64 - 1], np.uint64)),
    (DT.DT_UINT64, "[-1]", type_error("-1", "Number", "uint64")),
    (DT.DT_BOOL, "[true, false]", np.array([True, False])),
    (DT.DT_BOOL, "[1]", type_error("1", "Number", "bool")),
    (
        DT.DT_STRING,
        '["a", "\\u00e9", ' + B64_A + ', {"b64": "Yg"}]',
        np.array([b"a", "é".encode(), b"a", b"b"], object),
    ),
    (DT.DT_STRING, "[1]", type_error("1", "Number", "string")),
    (
        DT.DT_STRING,
        '[{"b64": 1}]',
        (INVALID, 'JSON Value: {\n    "b64": 1\n} not formatted correctly for base64 data'),
    ),
    (
        DT.DT_STRING,
        '[{"b64": "YQ==", "x": 1}]',
        (
            INVALID,
            (
                'JSON Value: {\n    "b64": "YQ==",\n'
                '    "x": 1\n} not formatted correctly for '
                "base64 data"
            ),
        ),
    ),
    (DT.DT_STRING, '[{"b64": "Y"}]', (INVALID, "Unable to base64 decode")),
    (DT.DT_HALF, "[1]", (UNIMPLEMENTED, "Conversion of JSON Value: 1 to type: half")),
    (DT.DT_BFLOAT16, "[1]", (UNIMPLEMENTED, "Conversion of JSON Value: 1 to type: bfloat16")),
    (DT.DT_UINT16, "[1]", (UNIMPLEMENTED, "Conversion of JSON Value: 1 to type: uint16")),
    (DT.DT_COMPLEX64, "[1]", (UNIMPLEMENTED, "Conversion of JSON Value: 1 to type: complex64")),
    (DT.DT_HALF, B64_A, type_error(B64_DEBUG, "Object", "half")),
    (DT.DT_HALF, "[]", np.zeros(0, np.float16)),
]


@pytest.mark.parametrize(("dtype", "value", "expected"), CONVERSIONS)
def test_json_conversion_by_dtype(dtype: int, value: str, expected: Any) -> None:
    if isinstance(expected, np.ndarray):
        assert_array(column(value, dtype), expected)
        if expected.size:  # the same values as rows
            assert_array(predict(f'{{"instances": {value}}}', specs(x=dtype))[0]["x"], expected)
    else:
        assert error_of(column, value, dtype) == expected


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("", b""),
        ("YWJj", b"abc"),
        ("YQ", b"a"),
        ("YQ==", b"a"),
        ("YWI=", b"ab"),
        ("YWI", b"ab"),
        ("Y Q = =", b"a"),
        ("YQ\n==\n", b"a"),
        ("YQ..", b"a"),
        ("YR==", b"a"),
        ("YQ=", None),
        ("Y", None),
        ("YQ==YQ==", None),
        ("-_8=", None),
        ("YQ===", None),
        ("é", None),
    ],
)
def test_base64_follows_absl(encoded: str, decoded: bytes | None) -> None:
    body = json.dumps({"inputs": {"b64": encoded}})
    if decoded is None:
        assert error_of(predict, body, specs(x=DT.DT_STRING)) == (
            INVALID,
            "Unable to base64 decode",
        )
    else:
        assert predict(body, specs(x=DT.DT_STRING))[0]["x"][()] == decoded


def test_invalid_utf8_inside_strings_is_kept_as_bytes() -> None:
    array = predict(b'{"inputs": ["\xff\xfe", "ok"]}', specs(x=DT.DT_STRING))[0]["x"]
    assert array.tolist() == [b"\xff\xfe", b"ok"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[[1, 2], [3]]", "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ("[[], [1]]", "Encountered list at unexpected size: 1 at level: 1 expected size: 0"),
        (
            "[[1, 2], 3]",
            "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
        ("[1, [2]]", "Encountered list at unexpected level: 1 expected < 1"),
        ('[[1, "a"], [2]]', 'JSON Value: "a" Type: String is not of expected type: float'),
        (
            '[[1, 2], [3, {"k": [1, 2]}]]',
            'JSON Value: {\n    "k": [1, 2]\n} Type: Object is not of expected type: float',
        ),
    ],
)
def test_ragged_and_misplaced_values(value: str, message: str) -> None:
    assert error_of(column, value, DT.DT_FLOAT) == (INVALID, message)


# ------------------------------------------------------------------- row and columnar


def test_columnar_shapes() -> None:
    assert_array(column("2.5", DT.DT_FLOAT), np.array(2.5, np.float32))
    assert_array(column("[]", DT.DT_FLOAT), np.zeros(0, np.float32))
    assert_array(column("[[], []]", DT.DT_INT32), np.zeros((2, 0), np.int32))
    assert_array(column(B64_A, DT.DT_STRING), np.array(b"a", object))
    assert_array(column("[[[1], [2]]]", DT.DT_INT64), np.array([[[1], [2]]], np.int64))


def test_columnar_named_inputs() -> None:
    body = '{"inputs": {"a": [1, 2, 3], "b": [[' + B64_A + ']], "ignored": null}}'
    arrays, row_format = predict(body, specs(a=DT.DT_INT32, b=DT.DT_STRING))
    assert row_format is False
    assert_array(arrays["a"], np.array([1, 2, 3], np.int32))
    assert_array(arrays["b"], np.array([[b"a"]], object))
    assert list(arrays) == ["a", "b"]


def test_row_format() -> None:
    arrays, row_format = predict('{"instances": [[1], [2]]}', specs(x=DT.DT_FLOAT))
    assert row_format is True
    assert_array(arrays["x"], np.array([[1], [2]], np.float32))
    assert_array(
        predict('{"instances": [3]}', specs(x=DT.DT_FLOAT))[0]["x"], np.array([3], np.float32)
    )
    single_named = '{"instances": [{"x": [1, 2]}, {"x": [3, 4]}]}'
    assert_array(
        predict(single_named, specs(x=DT.DT_INT32))[0]["x"], np.array([[1, 2], [3, 4]], np.int32)
    )
    b64_rows = '{"instances": [' + B64_A + ', {"b64": "Yg"}, "c"]}'
    assert_array(
        predict(b64_rows, specs(x=DT.DT_STRING))[0]["x"], np.array([b"a", b"b", b"c"], object)
    )
    multi = '{"instances": [{"a": 1, "b": "x"}, {"b": {"b64": "eQ=="}, "a": 2}]}'
    arrays = predict(multi, specs(a=DT.DT_INT32, b=DT.DT_STRING))[0]
    assert_array(arrays["a"], np.array([1, 2], np.int32))
    assert_array(arrays["b"], np.array([b"x", b"y"], object))


def test_row_format_through_the_exact_walk() -> None:
    body = b'{"instances": [{"a": 1, "b": "\xff"}, {"a": 2, "b": "x"}]}'
    arrays = predict(body, specs(a=DT.DT_INT32, b=DT.DT_STRING))[0]
    assert_array(arrays["a"], np.array([1, 2], np.int32))
    assert_array(arrays["b"], np.array([b"\xff", b"x"], object))


def instances_error(index: int, inner: str, key: str = "", code: str = "INVALID_ARGUMENT") -> str:
    where = f" key: {key}" if key else ""
    return f"Failed to process element: {index}{where} of 'instances' list. Error: {code}: {inner}"


AB = specs(a=DT.DT_INT32, b=DT.DT_INT32)
X = specs(x=DT.DT_FLOAT)
REQUEST_ERRORS = [
    (
        '{"instances": [1], "inputs": [1]}',
        X,
        INVALID,
        (
            'JSON Value: {\n    "instances": [1],\n    "inputs": [1]\n} Not formatted correctly '
            "expecting only one of 'inputs' or 'instances' keys to exist "
        ),
    ),
    (
        '{"instances": 1}',
        X,
        INVALID,
        "JSON Value: {\n    \"instances\": 1\n} Expecting 'instances' to be an list/array",
    ),
    (
        '{"instances": []}',
        X,
        INVALID,
        "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
    ),
    ('{"foo": 1}', X, INVALID, "Missing 'inputs' or 'instances' key"),
    ('{"inputs": 1}', {}, INVALID, "Failed to get input map for signature: DEFAULT"),
    (
        '{"signature_name": "s", "inputs": 1}',
        {},
        INVALID,
        "Failed to get input map for signature: s",
    ),
    (
        '{"instances": [[1], [2, 3]]}',
        X,
        INVALID,
        instances_error(1, "Expecting tensor size: 1 but got: 2"),
    ),
    (
        '{"instances": [[1, 2], [[3], [4]]]}',
        X,
        INVALID,
        instances_error(1, "Expecting shape [2] but got: [2,1]"),
    ),
    ('{"instances": [[1], 2]}', X, INVALID, instances_error(1, "Expecting shape [1] but got: []")),
    (
        '{"instances": [1, true]}',
        X,
        INVALID,
        instances_error(1, "JSON Value: true Type: True is not of expected type: float"),
    ),
    (
        '{"instances": [[1, 2], [3]]}',
        X,
        INVALID,
        instances_error(1, "Expecting tensor size: 2 but got: 1"),
    ),
    (
        '{"instances": [[[1], 2]]}',
        X,
        INVALID,
        instances_error(
            0, "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"
        ),
    ),
    (
        '{"instances": [1]}',
        specs(x=DT.DT_HALF),
        INVALID,
        instances_error(0, "Conversion of JSON Value: 1 to type: half", code="UNIMPLEMENTED"),
    ),
    (
        '{"instances": [1, {"a": 1}]}',
        X,
        INVALID,
        "Expecting value/list but got object at item 1 of input list",
    ),
    (
        '{"instances": [1, 2]}',
        AB,
        INVALID,
        (
            "instances is a plain list, but expecting list of "
            "objects as multiple input tensors required as per "
            "tensorinfo_map"
        ),
    ),
    (
        '{"instances": [{"a": 1, "b": 2}, 3]}',
        AB,
        INVALID,
        "Expecting object but got list at item 1 of input list",
    ),
    (
        '{"instances": [{"a": 1, "c": 2}]}',
        AB,
        INVALID,
        instances_error(0, "JSON object: does not have named input: c", key="c"),
    ),
    (
        '{"instances": [{"a": 1}]}',
        AB,
        INVALID,
        (
            "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"a\": 1\n} keys "
            "must be equal to: a,b"
        ),
    ),
    (
        '{"instances": [{"a": 1, "b": 2}, {"a": 1.5, "b": 2}]}',
        AB,
        INVALID,
        instances_error(1, "JSON Value: 1.5 Type: Number is not of expected type: int32", key="a"),
    ),
    (
        '{"instances": [{"a": [1], "b": 2}, {"b": 2, "a": [1, 2]}]}',
        AB,
        INVALID,
        instances_error(1, "Expecting tensor size: 1 but got: 2", key="a"),
    ),
    (
        '{"inputs": [1, 2]}',
        AB,
        INVALID,
        (
            "inputs is a plain value/list, but expecting an object "
            "as multiple input tensors required as per tensorinfo_map"
        ),
    ),
    ('{"inputs": {"a": 1}}', AB, INVALID, "Missing named input: b in 'inputs' object."),
    (
        '{"inputs": [1]}',
        specs(x=DT.DT_HALF),
        UNIMPLEMENTED,
        "Conversion of JSON Value: 1 to type: half",
    ),
]


@pytest.mark.parametrize(("body", "inputs", "code", "message"), REQUEST_ERRORS)
def test_predict_request_errors(
    body: str, inputs: dict[str, TensorSpec], code: Code, message: str
) -> None:
    assert error_of(predict, body, inputs) == (code, message)


# -------------------------------------------------------------------- tensors -> JSON


def columnar_json(array: np.ndarray, alias: str = "y") -> str:
    return tensors.predict_outputs_to_json({alias: array}, False).decode()


FLOAT_TEXTS = [
    (3.0, "3.0"),
    (0.1, "0.1"),
    (3.4999998, "3.49999976"),
    (9e6, "9e+06"),
    (3e-5, "3e-05"),
    (999999.0, "999999.0"),
    (555557.5, "555557.5"),
    (1e6, "1e+06"),
    (100000.0, "100000.0"),
    (1234567.0, "1234567.0"),
    (16777216.0, "16777216.0"),
    (2.0000002, "2.00000024"),
    (-0.0, "-0.0"),
    (0.0, "0.0"),
    (1e-45, "1.4013e-45"),
    (3.4028235e38, "3.40282347e+38"),
    (np.nan, "NaN"),
    (np.inf, "Infinity"),
    (-np.inf, "-Infinity"),
]
DOUBLE_TEXTS = [
    (1 / 3, "0.33333333333333331"),
    (0.1, "0.1"),
    (3.0, "3.0"),
    (1e300, "1e+300"),
    (3.4999998, "3.4999997999999999"),
    (123456789.0, "123456789.0"),
    (1e16, "1e+16"),
    (2.0**53 + 2, "9007199254740994.0"),
    (5e-324, "4.94066e-324"),
    (0.3, "0.3"),
]


@pytest.mark.parametrize(("value", "text"), FLOAT_TEXTS)
def test_float32_rendering(value: float, text: str) -> None:
    assert columnar_json(np.array([value], np.float32)) == '{"outputs":[' + text + "]}"


@pytest.mark.parametrize(("value", "text"), DOUBLE_TEXTS)
def test_float64_rendering(value: float, text: str) -> None:
    assert columnar_json(np.array(value, np.float64)) == '{"outputs":' + text + "}"


def write_decimal(value: float, is_double: bool) -> str:
    """json_tensor.cc WriteDecimal, one value at a time."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    back = float(text) if is_double else float(np.float32(text))
    if back != value:
        text = f"{value:.17g}" if is_double else f"{value:.9g}"
    return text if "." in text or "e" in text else text + ".0"


def random_floats(np_type: Any) -> np.ndarray:
    """Any bit pattern, quarters (exact in decimal), and values in [0, 1)."""
    rng = np.random.default_rng(7)
    int_type = np.uint32 if np_type is np.float32 else np.uint64
    bits = rng.integers(0, np.iinfo(int_type).max, 3000, dtype=int_type, endpoint=True)
    quarters = (rng.integers(-(10**7), 10**7, 500) / 4).astype(np_type)
    return np.concatenate([bits.view(np_type), quarters, rng.random(500).astype(np_type)])


def rendered(values: np.ndarray) -> list[str]:
    return columnar_json(values).removeprefix('{"outputs":[').removesuffix("]}").split(",")


@pytest.mark.parametrize("np_type", [np.float32, np.float64])
def test_float_rendering_matches_write_decimal_on_random_bits(np_type: Any) -> None:
    values = random_floats(np_type)  # one large array: rendered in bulk
    assert rendered(values) == [write_decimal(v, np_type is np.float64) for v in values.tolist()]


@pytest.mark.parametrize("np_type", [np.float32, np.float64])
def test_small_arrays_render_value_by_value_like_write_decimal(np_type: Any) -> None:
    for chunk in np.split(random_floats(np_type), 500):  # 8 values each: one at a time
        assert rendered(chunk) == [write_decimal(v, np_type is np.float64) for v in chunk.tolist()]


@pytest.mark.parametrize(
    ("array", "text"),
    [
        (np.array([1, -2], np.int32), "[1,-2]"),
        (np.array([[-128, 127]], np.int8), "[[-128,127]]"),
        (np.array([255], np.uint8), "[255]"),
        (np.array([-3], np.int16), "[-3]"),
        (np.array([-(2**63)], np.int64), "[-9223372036854775808]"),
        (np.array([2**32 - 1], np.uint32), "[4294967295]"),
        (np.array([2**64 - 1], np.uint64), "[18446744073709551615]"),
        (np.array([[True, False]]), "[[true,false]]"),
        (np.array(7, np.int64), "7"),
        (np.array([b"ab", b'q"\n', b"\xff"], object), '["ab","q\\"\\n","\ufffd"]'),
        (np.array(["é"]), '["é"]'),
        (np.zeros((2, 0, 3), np.float32), "[[],[]]"),
        (np.zeros(0, np.float16), "[]"),
    ],
)
def test_value_rendering(array: np.ndarray, text: str) -> None:
    assert columnar_json(array) == '{"outputs":' + text + "}"


def test_bytes_outputs_are_base64() -> None:
    array = np.array([[b"abc", b"\xff"]], object)
    assert columnar_json(array, "y_bytes") == '{"outputs":[[{"b64":"YWJj"},{"b64":"/w=="}]]}'
    assert columnar_json(np.array([1], np.int32), "n_bytes") == '{"outputs":[1]}'


@pytest.mark.parametrize(
    ("dtype", "name"),
    [
        (np.float16, "half"),
        (ml_dtypes.bfloat16, "bfloat16"),
        (np.complex64, "complex64"),
        (np.uint16, "uint16"),
    ],
)
def test_unwritable_output_types(dtype: Any, name: str) -> None:
    message = f"Failed to write JSON value for tensor type: {name}"
    assert error_of(columnar_json, np.ones(2, dtype)) == (INVALID, message)


def test_row_and_columnar_layouts() -> None:
    y = np.array([[3.0], [3.5]], np.float32)
    z = np.array([[1, 2], [3, 4]], np.int64)
    render = tensors.predict_outputs_to_json
    assert render({"y": y}, True) == b'{"predictions":[[3.0],[3.5]]}'
    assert render({"z": z, "y": y}, True) == (
        b'{"predictions":[{"y":[3.0],"z":[1,2]},{"y":[3.5],"z":[3,4]}]}'
    )
    assert render({"z": z, "y": y}, False) == b'{"outputs":{"y":[[3.0],[3.5]],"z":[[1,2],[3,4]]}}'
    assert render({"y": np.zeros((0, 2), np.float32)}, True) == b'{"predictions":[]}'
    assert render({"y": np.zeros(0), "z": np.zeros((0, 3))}, True) == b'{"predictions":[]}'
    assert render({"y": np.array(2.0, np.float32)}, False) == b'{"outputs":2.0}'
    assert json.loads(render({"y": np.array([np.nan])}, True))["predictions"][0] != 0


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (
            {"y": np.ones(2), "z": np.ones(1)},
            "Tensor name: z has inconsistent batch size: 1 expecting: 2",
        ),
        ({"y": np.float32(2.0)}, "Tensor name: y has no shape information "),
        ({}, "Cannot convert empty tensor map to JSON"),
    ],
)
def test_row_format_output_errors(outputs: dict[str, Any], message: str) -> None:
    outputs = {k: np.asarray(v) for k, v in outputs.items()}
    assert error_of(tensors.predict_outputs_to_json, outputs, True) == (INVALID, message)


def test_classification_and_regression_json() -> None:
    result = classification_pb2.ClassificationResult()
    first = result.classifications.add()
    first.classes.add(label="a", score=0.1)
    first.classes.add(label="b", score=3.4999998)
    result.classifications.add().classes.add(score=3.0)
    assert tensors.classification_result_to_json(result) == (
        b'{"results":[[["a",0.1],["b",3.49999976]],[["",3.0]]]}'
    )
    regression = regression_pb2.RegressionResult()
    for value in (3.0, 0.1, float("nan")):
        regression.regressions.add(value=value)
    assert tensors.regression_result_to_json(regression) == b'{"results":[3.0,0.1,NaN]}'
    assert error_of(
        tensors.classification_result_to_json, classification_pb2.ClassificationResult()
    ) == (INVALID, "Cannot convert empty ClassificationResults to JSON")
    assert error_of(tensors.regression_result_to_json, regression_pb2.RegressionResult()) == (
        INVALID,
        "Cannot convert empty RegressionResults to JSON",
    )


def test_error_json() -> None:
    assert tensors.error_json('bad "x"') == b'{"error":"bad \\"x\\""}'
    assert json.loads(tensors.error_json("raw \udcff")) == {"error": "raw ?"}


# ----------------------------------------------------------- classify / regress input


def features_of(example: Any) -> dict[str, tuple[str | None, list[Any]]]:
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = (kind, list(getattr(feature, kind).value) if kind else [])
    return out


def test_input_from_json_examples() -> None:
    doc = {
        "examples": [
            {
                "x": 2.0,
                "s": "a",
                "i": 3,
                "t": [True, False],
                "l": [1.0, 2.5],
                "b": {"b64": "YQ=="},
                "e": [],
                "big": 18446744073709551616.0,
            }
        ]
    }
    request_input = tensors.input_from_json(doc)
    assert request_input.WhichOneof("kind") == "example_list"
    assert features_of(request_input.example_list.examples[0]) == {
        "x": ("float_list", [2.0]),
        "s": ("bytes_list", [b"a"]),
        "i": ("int64_list", [3]),
        "t": ("int64_list", [1, 0]),
        "l": ("float_list", [1.0, 2.5]),
        "b": ("bytes_list", [b"a"]),
        "e": (None, []),
        "big": ("float_list", [2.0**64]),
    }


def test_input_from_json_with_context() -> None:
    request_input = tensors.input_from_json({"context": {"c": [1, 2]}, "examples": [{}, {"x": 1}]})
    with_context = request_input.example_list_with_context
    assert request_input.WhichOneof("kind") == "example_list_with_context"
    assert features_of(with_context.context) == {"c": ("int64_list", [1, 2])}
    assert [features_of(e) for e in with_context.examples] == [{}, {"x": ("int64_list", [1])}]
    empty = tensors.input_from_json({"context": {}, "examples": [{}]})
    assert empty.example_list_with_context.HasField("context")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"signature_name": "s"},
            (
                'JSON Value: {\n    "signature_name": "s"\n} When method is '
                "classify, key 'examples' is expected and was not found"
            ),
        ),
        (
            {"examples": {}},
            "JSON Value: {\n    \"examples\": {}\n} Expecting 'examples' value to be an list/array",
        ),
        (
            {"examples": []},
            "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array",
        ),
        ({"examples": [[1]]}, "Example must be JSON object but got JSON Array"),
        ({"context": 1, "examples": [{}]}, "Example must be JSON object but got JSON Number"),
        ({"examples": [{"x": None}]}, "Feature: x has element with unexpected JSON type: Null"),
        ({"examples": [{"x": [[1]]}]}, "Feature: x has element with unexpected JSON type: Array"),
        (
            {"examples": [{"x": {"a": 1}}]},
            "Feature: x has element with unexpected JSON type: Object",
        ),
        (
            {"examples": [{"x": [1, 2.0]}]},
            "Unexpected element type in feature: x expecting type: int64",
        ),
        (
            {"examples": [{"x": [2.0, "a"]}]},
            "Unexpected element type in feature: x expecting type: float",
        ),
        (
            {"examples": [{"x": ["a", True]}]},
            "Unexpected element type in feature: x expecting type: bytes",
        ),
        (
            {"examples": [{"x": [2**63]}]},
            "Feature: x has uint64_t element. Only int64_t is supported.",
        ),
        (
            {"examples": [{"x": [1.5, 2**63]}]},
            "Unexpected element type in feature: x expecting type: float",
        ),
        ({"examples": [{"x": {"b64": "Y"}}]}, "Unable to base64 decode"),
    ],
)
def test_input_from_json_errors(doc: dict[str, Any], message: str) -> None:
    assert error_of(tensors.input_from_json, doc) == (INVALID, message)


# ----------------------------------------------------------------------- TensorProto


@pytest.fixture(scope="module")
def tf() -> Any:
    return pytest.importorskip("tensorflow")


def proto(
    dtype: int, dims: list[int] | None, unknown_rank: bool = False, **fields: Any
) -> tensor_pb2.TensorProto:
    shape = {"dim": [{"size": d} for d in dims or []], "unknown_rank": unknown_rank}
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, **fields)


FROM_PROTO = [
    proto(DT.DT_FLOAT, [2, 2], float_val=[1, 2, 3, 4]),
    proto(DT.DT_FLOAT, None, float_val=[7]),
    proto(DT.DT_FLOAT, [2], unknown_rank=True, float_val=[1, 2]),
    proto(DT.DT_FLOAT, [0], float_val=[1, 2]),
    proto(DT.DT_FLOAT, [1], tensor_content=np.float32([1.5]).tobytes(), float_val=[9]),
    proto(DT.DT_DOUBLE, [2], double_val=[0.1]),
    proto(DT.DT_INT8, [3], int_val=[300, -200, 5]),
    proto(DT.DT_UINT8, [2], int_val=[300, -1]),
    proto(DT.DT_UINT16, [2], int_val=[70000, 5]),
    proto(DT.DT_INT16, [1], int_val=[-5]),
    proto(DT.DT_INT32, [2, 1], tensor_content=np.int32([5, -6]).tobytes()),
    proto(DT.DT_INT64, [2], int64_val=[-(2**63)]),
    proto(DT.DT_UINT32, [2], uint32_val=[2**32 - 1, 1]),
    proto(DT.DT_UINT64, [1], uint64_val=[2**64 - 1]),
    proto(DT.DT_BOOL, [3], bool_val=[True]),
    proto(DT.DT_STRING, [2], tensor_content=b"\x01\x02abc"),
    proto(DT.DT_HALF, [2], half_val=[0x3C00, 0x4000]),
    proto(DT.DT_BFLOAT16, [3], half_val=[0x3F80]),
    proto(DT.DT_HALF, [2], tensor_content=np.float16([1, -2]).tobytes()),
    proto(DT.DT_COMPLEX64, [2], scomplex_val=[1, 2, 3]),
    proto(DT.DT_COMPLEX128, [2], dcomplex_val=[1, 2, 3, 4]),
    proto(DT.DT_COMPLEX64, [1], tensor_content=np.complex64([1 + 2j]).tobytes()),
]


@pytest.mark.parametrize("tensor", FROM_PROTO, ids=lambda t: str(t).replace("\n", " ")[:60])
def test_array_from_proto_matches_tensor_from_proto(tf: Any, tensor: Any) -> None:
    dtype = tf.dtypes.as_dtype(tensor.dtype)
    expected = tf.io.parse_tensor(tensor.SerializeToString(), dtype).numpy()
    assert_array(tensors.array_from_proto(tensor), np.asarray(expected))


@pytest.mark.parametrize(
    ("tensor", "code"),
    [
        (proto(DT.DT_FLOAT, [-1], float_val=[1]), INVALID),
        (proto(DT.DT_FLOAT, [2**40, 2**40, 0]), INVALID),
        (proto(DT.DT_FLOAT, [2], tensor_content=b"\0" * 12), INVALID),
        (proto(DT.DT_STRING, [2], tensor_content=b"\x01\x05abc"), INVALID),
        (proto(DT.DT_INVALID, [1], float_val=[1]), INVALID),
        (proto(99, [1], float_val=[1]), INVALID),
        (proto(DT.DT_FLOAT_REF, [1], float_val=[1]), INVALID),
        (proto(DT.DT_QINT8, [1], int_val=[1]), UNIMPLEMENTED),
    ],
)
def test_array_from_proto_rejects(tf: Any, tensor: Any, code: Code) -> None:  # as TF does
    assert error_of(tensors.array_from_proto, tensor)[0] == code
    if code == INVALID:
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.io.parse_tensor(tensor.SerializeToString(), tf.float32)


@pytest.mark.parametrize(
    "tensor",
    [
        proto(DT.DT_FLOAT, [3], float_val=[1, 2]),
        proto(DT.DT_FLOAT, [2], float_val=[1, 2, 3]),
        proto(DT.DT_FLOAT, [3]),
        proto(DT.DT_FLOAT, [600_000_000]),  # 20 bytes claiming 2.4 GB
        proto(DT.DT_STRING, [3], string_val=[b"a", b"b"]),
        proto(DT.DT_STRING, [100_000_000]),
        proto(DT.DT_COMPLEX128, [3], dcomplex_val=[1, 2, 3, 4]),
    ],
    ids=lambda t: str(t).replace("\n", " ")[:60],
)
def test_values_must_match_the_shape_where_tensorflow_would_pad(tf: Any, tensor: Any) -> None:
    code, message = error_of(tensors.array_from_proto, tensor)
    assert code == INVALID and "values for its shape" in message
    if tensor.tensor_shape.dim[0].size < 1000:  # TensorFlow pads (zeros, or the last value)
        tf.io.parse_tensor(tensor.SerializeToString(), tf.dtypes.as_dtype(tensor.dtype))


def test_one_value_fills_the_shape_as_tf_make_tensor_proto_writes_it(tf: Any) -> None:
    tensor = tf.make_tensor_proto(2.5, shape=[2, 3], dtype=tf.float32)
    assert len(tensor.float_val) == 1
    assert_array(tensors.array_from_proto(tensor), np.full((2, 3), 2.5, np.float32))


def test_the_budget_is_taken_before_anything_is_allocated() -> None:
    from aserve.tensors.budget import Budget

    claim = proto(DT.DT_FLOAT, [600_000_000], float_val=[1.0])  # one value fills the shape
    with pytest.raises(ServingError) as elements:
        tensors.array_from_proto(claim, Budget(max_elements=2**26))
    assert elements.value.code is INVALID and "--max_request_elements" in elements.value.message
    with pytest.raises(ServingError) as size:
        tensors.array_from_proto(claim, Budget(max_elements=2**40, max_bytes=2**30))
    assert (size.value.code, size.value.http) == (Code.RESOURCE_EXHAUSTED, 413)
    budget = Budget(max_elements=5)
    tensors.array_from_proto(proto(DT.DT_FLOAT, [3], float_val=[1, 2, 3]), budget)
    with pytest.raises(ServingError):  # the budget is the request's, across its tensors
        tensors.array_from_proto(proto(DT.DT_FLOAT, [3], float_val=[1, 2, 3]), budget)


ARRAYS = [
    np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    np.array([0.1, -1e300]),
    np.array([[1, -2]], np.int32),
    np.array([-128, 127], np.int8),
    np.array([0, 255], np.uint8),
    np.array([-3], np.int16),
    np.array([65535], np.uint16),
    np.array([-(2**63)], np.int64),
    np.array([2**32 - 1], np.uint32),
    np.array([2**64 - 1], np.uint64),
    np.array([[True], [False]]),
    np.array([1.5, -2], np.float16),
    np.array([1.5, 3], ml_dtypes.bfloat16),
    np.array([1 + 2j], np.complex64),
    np.array([[1 - 2j, 3j]], np.complex128),
    np.array([b"a", b"\xff", b""], object),
    np.array(2.5, np.float32),
    np.zeros((0, 3), np.float32),
    np.arange(12, dtype=np.float64).reshape(3, 4).T,
]


@pytest.mark.parametrize("as_content", [False, True])
@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_array_to_proto_round_trips_through_tensorflow(
    tf: Any, array: np.ndarray, as_content: bool
) -> None:
    tensor = tensors.array_to_proto(array, as_content=as_content)
    assert [d.size for d in tensor.tensor_shape.dim] == list(array.shape)
    assert_array(tensors.array_from_proto(tensor), array)
    dtype = tf.dtypes.as_dtype(tensor.dtype)
    assert_array(np.asarray(tf.io.parse_tensor(tensor.SerializeToString(), dtype).numpy()), array)
    if as_content:  # AsProtoTensorContent is what tf.io.serialize_tensor writes
        expected = tensor_pb2.TensorProto.FromString(tf.io.serialize_tensor(array).numpy())
        assert tensor == expected
    assert_array(tensors.array_from_proto(tf.make_tensor_proto(array)), array)
    if array.dtype != ml_dtypes.bfloat16:
        assert_array(np.asarray(tf.make_ndarray(tensor)), array)


@pytest.mark.parametrize("as_content", [False, True])
@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_array_to_proto_fills_a_map_entry_in_place(array: np.ndarray, as_content: bool) -> None:
    response = predict_pb2.PredictResponse()
    entry = response.outputs["y"]
    returned = tensors.array_to_proto(array, as_content=as_content, into=entry)
    assert returned is entry
    assert response.outputs["y"] == tensors.array_to_proto(array, as_content=as_content)


@pytest.mark.parametrize("as_content", [False, True])
@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_tensor_wire_is_the_serialized_array_to_proto(array: np.ndarray, as_content: bool) -> None:
    wire = tensor_wire(array, as_content=as_content)
    direct = array.dtype.kind in "fcb" and array.dtype != ml_dtypes.bfloat16 or as_content
    if array.dtype == object or not direct or array.dtype == np.float16 and not as_content:
        assert wire is None  # strings and the varint fields go through the protobuf runtime
        return
    assert wire is not None
    assert tensor_pb2.TensorProto.FromString(wire) == tensors.array_to_proto(
        array, as_content=as_content
    )


@pytest.mark.parametrize("as_content", [False, True])
@pytest.mark.parametrize(
    ("name", "signature", "version"),
    [("m", "", 3), ("", "sig", 0), ("ü", "serving_default", 2**40)],
)
def test_predict_response_wire_parses_as_the_message(
    name: str, signature: str, version: int, as_content: bool
) -> None:
    from aserve.grpc_api import _echo, _predict_response_wire

    requested = predict_pb2.PredictRequest().model_spec
    requested.name, requested.signature_name = name, signature
    outputs = {"y": np.array([[1.5], [-2]], np.float32), "z": np.zeros(0), "": np.array(True)}
    wire = _predict_response_wire(requested, version, outputs, as_content)
    assert wire is not None
    expected = predict_pb2.PredictResponse()
    _echo(expected.model_spec, requested, version)
    for alias, array in outputs.items():
        tensors.array_to_proto(array, as_content=as_content, into=expected.outputs[alias])
    assert predict_pb2.PredictResponse.FromString(wire) == expected
    strings = {"s": np.array([b"a"], object)}
    assert _predict_response_wire(requested, version, strings, as_content) is None


@pytest.mark.parametrize(
    ("array", "field", "values"),
    [
        (np.array([1.5, 2], np.float32), "float_val", [1.5, 2.0]),
        (np.array([0.1]), "double_val", [0.1]),
        (np.array([-1, 2], np.int8), "int_val", [-1, 2]),
        (np.array([65535], np.uint16), "int_val", [65535]),
        (np.array([1.0, -2.0], np.float16), "half_val", [0x3C00, 0xC000]),
        (np.array([1.0], ml_dtypes.bfloat16), "half_val", [0x3F80]),
        (np.array([1 + 2j], np.complex64), "scomplex_val", [1.0, 2.0]),
        (np.array([True, False]), "bool_val", [True, False]),
        (np.array([5], np.int64), "int64_val", [5]),
        (np.array([5], np.uint32), "uint32_val", [5]),
        (np.array([5], np.uint64), "uint64_val", [5]),
        (np.array(["é", "x"]), "string_val", ["é".encode(), b"x"]),
        (np.array([b"a", "b"], object), "string_val", [b"a", b"b"]),
        (np.array([1.0], ml_dtypes.float8_e4m3fn), "float8_val", b"\x38"),
    ],
)
def test_array_to_proto_field_layout(array: np.ndarray, field: str, values: Any) -> None:
    tensor = tensors.array_to_proto(array)
    assert tensor.dtype == tensors.dtype_of(array)
    assert not tensor.tensor_content
    stored = getattr(tensor, field)
    assert (stored if isinstance(values, bytes) else list(stored)) == values
    if field == "string_val":
        array = np.array([v.encode() if isinstance(v, str) else v for v in array.tolist()], object)
    assert_array(tensors.array_from_proto(tensor), array)
    content = tensors.array_to_proto(array, as_content=True)
    assert bool(content.tensor_content) == (array.dtype.kind not in "OU")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_text_is_the_same_element_by_element_and_vectorised(dtype: type) -> None:
    tricky = [
        3.4999998,
        0.1,
        1e-5,
        9e6,
        999999.0,
        555557.5,
        np.nan,
        np.inf,
        -np.inf,
        3.0,
        1 / 3,
        -0.0,
    ]
    large = np.array(tricky * 3, dtype)  # above the element-by-element threshold
    one_by_one = ",".join(
        tensors.predict_outputs_to_json({"y": np.array(v, dtype)}, False).decode()[11:-1]
        for v in large.tolist()
    )
    assert tensors.predict_outputs_to_json({"y": large}, False).decode() == (
        '{"outputs":[' + one_by_one + "]}"
    )

"""JSON text as TF Serving reads and quotes it: rapidjson-compatible parsing and error texts.

Requests are parsed with orjson; only when that fails does the lenient path run (bare
``NaN``/``Infinity``/``Inf`` tokens, trailing bytes ignored), and a real syntax error is
reported with rapidjson's message and offset. JSON values quoted in error messages are
printed like rapidjson's PrettyWriter with single-line arrays, cut at 256 bytes.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from bisect import bisect_right
from typing import Any, Final

import orjson

from aserve.errors import ServingError, invalid_argument
from aserve.tensors.dtypes import dtype_name

# -------------------------------------------------- JSON values as TF prints them in errors

_DEBUG_LIMIT: Final = 256  # kMaxJsonDebugStringBytes
_ESCAPES: Final = {i: f"\\u{i:04X}" for i in range(32)} | {
    8: "\\b",
    9: "\\t",
    10: "\\n",
    12: "\\f",
    13: "\\r",
    34: '\\"',
    92: "\\\\",
}
_JSON_TYPES: Final = {
    type(None): "Null",
    dict: "Object",
    list: "Array",
    str: "String",
    int: "Number",
    float: "Number",
}


class _Stop(Exception):
    """The debug writer hit its size limit or a non-finite double (rapidjson stops there)."""


class _DebugWriter:
    """rapidjson PrettyWriter with kFormatSingleLineArray behind TF's JsonWriterWithLimit."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def emit(self, text: str) -> None:
        if self.size >= _DEBUG_LIMIT:
            raise _Stop
        self.parts.append(text)
        self.size += len(text)

    def value(self, val: Any, depth: int, prefix: str) -> None:
        if type(val) is dict:
            self.emit(prefix + "{")
            indent = "\n" + "    " * (depth + 1)
            for i, (key, item) in enumerate(val.items()):
                self.emit(("," if i else "") + indent + _string_text(key))
                self.value(item, depth + 1, ": ")
            self.emit(("\n" + "    " * depth if val else "") + "}")
        elif type(val) is list:
            self.emit(prefix + "[")
            for i, item in enumerate(val):
                self.value(item, depth + 1, ", " if i else "")
            self.emit("]")
        else:
            text = _scalar_text(val)
            self.emit(prefix + (text or ""))
            if text is None:
                raise _Stop


def debug_text(val: Any) -> str:
    """TF's JsonValueToDebugString (cut at 256 characters rather than bytes)."""
    writer = _DebugWriter()
    with contextlib.suppress(_Stop):
        writer.value(val, 0, "")
    return "".join(writer.parts)


def _string_text(text: str) -> str:
    return '"' + text.translate(_ESCAPES) + '"'


def _scalar_text(val: Any) -> str | None:
    if val is None or type(val) is bool:
        return {None: "null", True: "true", False: "false"}[val]
    if type(val) is str:
        return _string_text(val)
    if type(val) is int:
        return str(val)
    return _double_text(val) if math.isfinite(val) else None


def _double_text(d: float) -> str:
    """rapidjson's Writer::Double (Grisu shortest digits, then Prettify)."""
    if d == 0:
        return "-0.0" if math.copysign(1.0, d) < 0 else "0.0"
    mantissa, _, exponent = repr(abs(d)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    k = int(exponent or 0) - len(fraction) + len(digits) - len(digits.rstrip("0"))
    digits = digits.rstrip("0")
    n, kk = len(digits), len(digits) + k
    sign = "-" if d < 0 else ""
    if k >= 0 and kk <= 21:
        return f"{sign}{digits}{'0' * k}.0"
    if 0 < kk <= 21:
        return f"{sign}{digits[:kk]}.{digits[kk:]}"
    if -6 < kk <= 0:
        return f"{sign}0.{'0' * -kk}{digits}"
    mantissa = digits if n == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{sign}{mantissa}e{kk - 1}"


def json_type(val: Any) -> str:
    if type(val) is bool:
        return "True" if val else "False"
    return _JSON_TYPES[type(val)]


def format_error(val: Any, message: str) -> ServingError:
    return invalid_argument(f"JSON Value: {debug_text(val)} {message}")


def type_error(val: Any, dtype: int) -> ServingError:
    return format_error(val, f"Type: {json_type(val)} is not of expected type: {dtype_name(dtype)}")


# ------------------------------------------------------------------------- parsing

_WHITESPACE: Final = " \t\n\r"
MAX_DEPTH: Final = 1024  # orjson's nesting limit; deeper documents are refused


class _NumberTooBig(Exception):
    """A JSON number no double can hold (rapidjson's kParseErrorNumberTooBig)."""


def _json_int(text: str) -> int | float:
    """Integers as rapidjson reads them: 64-bit ones exactly, longer ones as doubles.

    Python's own int() would refuse more than 4,300 digits with a ValueError (a 500), and a
    400-digit integer would later overflow a float conversion.
    """
    if len(text) <= 20:
        value = int(text)
        if -(2**63) <= value < 2**64:
            return value
    number = float(text)
    if math.isinf(number):
        raise _NumberTooBig(text)
    return number


_DECODER: Final = json.JSONDecoder(parse_int=_json_int)
_NONFINITE: Final = re.compile(r'"(?:[^"\\]|\\.)*"|-?(?:Infinity|Inf|NaN)')
_STRUCTURE: Final = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_NUMBER_BEFORE: Final = re.compile(r"(?<![\w.+-])-?\d+(\.\d+)?$")
_PARSE_MESSAGES: Final = {  # Python's json messages -> rapidjson's GetParseError_En
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}


def parse_json(body: bytes) -> dict[str, Any]:
    """Parse a request body as TF Serving does; the top level must be an object.

    rapidjson leniencies kept: bare NaN/Inf/Infinity tokens and bytes after the value.
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if e.msg == "depth limit exceeded":
            raise _too_deep(e.pos) from None
        doc = _parse_lenient(bytes(body).decode("utf-8", "surrogateescape"))
    if type(doc) is not dict:
        raise format_error(doc, "Is not object")
    return doc


def _parse_lenient(original: str) -> Any:
    text, shifts = _rewrite_nonfinite(original)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        if start == len(text):
            raise json.JSONDecodeError("The document is empty.", text, start)
        return _DECODER.raw_decode(text, start)[0]
    except RecursionError:  # Python's parser nests less deeply than orjson
        raise _too_deep(_deepest(original)) from None
    except _NumberTooBig as e:
        offset = len(original[: max(original.find(str(e)), 0)].encode("utf-8", "surrogateescape"))
        raise invalid_argument(
            f"JSON Parse error: Number too big to be stored in double. at offset: {offset}"
        ) from None
    except json.JSONDecodeError as err:
        message, pos = _rapidjson_error(err, text)
        ends = [end for end, _ in shifts]
        index = bisect_right(ends, pos)
        pos -= shifts[index - 1][1] if index else 0
        offset = len(original[:pos].encode("utf-8", "surrogateescape"))
        raise invalid_argument(f"JSON Parse error: {message} at offset: {offset}") from None


def _too_deep(offset: int) -> ServingError:
    return invalid_argument(
        f"JSON Parse error: Arrays and objects nested too deeply (the limit is about "
        f"{MAX_DEPTH} levels). at offset: {offset}"
    )


def _deepest(text: str) -> int:
    """The byte offset where ``text`` first reaches its deepest nesting."""
    depth, deepest, where = 0, 0, 0
    for token in _STRUCTURE.finditer(text):
        if token.group() in ("[", "{"):
            depth += 1
            if depth > deepest:
                deepest, where = depth, token.start()
        elif token.group() in ("]", "}"):
            depth -= 1
    return len(text[:where].encode("utf-8", "surrogateescape"))


def _rewrite_nonfinite(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Spell rapidjson's Inf/-Inf/-NaN the way Python's json reads them.

    Returns the new text and (end in new text, total growth so far) per rewrite.
    """
    if "-NaN" not in text and re.search(r"Inf(?!inity)", text) is None:
        return text, []
    parts, shifts, last, growth = [], [], 0, 0
    for match in _NONFINITE.finditer(text):
        token = match.group()
        new = "NaN" if token.endswith("NaN") else "-Infinity" if token[0] == "-" else "Infinity"
        if token[0] == '"' or token == new:
            continue
        parts += [text[last : match.start()], new]
        last, growth = match.end(), growth + len(new) - len(token)
        shifts.append((match.end() + growth, growth))
    return "".join(parts) + text[last:], shifts


def _rapidjson_error(err: json.JSONDecodeError, text: str) -> tuple[str, int]:
    message = _PARSE_MESSAGES.get(err.msg, err.msg)
    if err.msg.startswith("Unterminated string"):
        return message, len(text)
    if err.msg != "Expecting ',' delimiter":
        return message, err.pos
    pos, char = err.pos, err.doc[err.pos : err.pos + 1]
    number = _NUMBER_BEFORE.search(text, 0, pos)
    if number and char == "." and not number.group(1):
        return "Miss fraction part in number.", pos + 1
    if number and char in ("e", "E"):
        return "Miss exponent in number.", pos + 1 + (text[pos + 1 : pos + 2] in ("+", "-"))
    stack: list[str] = []
    for token in _STRUCTURE.finditer(text, 0, pos):
        if token.group() in ("[", "{"):
            stack.append(token.group())
        elif token.group() in ("]", "}") and stack:
            stack.pop()
    if stack and stack[-1] == "{":
        return "Missing a comma or '}' after an object member.", pos
    return "Missing a comma or ']' after an array element.", pos

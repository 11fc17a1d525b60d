"""One error type for the whole server, mapped once to HTTP and once to gRPC.

Every failure a client can see is a :class:`ServingError` carrying a canonical
status code (the same vocabulary as absl/gRPC status) and TF Serving's message
text. The HTTP front end turns it into ``{"error": message}`` with the HTTP
status of :func:`http_status_of` (TF Serving's table); the gRPC front end aborts
the call with the same code (:func:`aserve.grpc_calls.grpc_code`) and the
message cut at 1024 characters. Anything else a
request raises becomes one in :meth:`aserve.service.Service.failed`.
"""

from __future__ import annotations

import enum
from typing import Final


class Code(enum.IntEnum):
    """Canonical status codes (``tensorflow.error.Code`` / ``grpc.StatusCode``)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ServingError(Exception):
    """A request or load failure with a canonical code and a client-facing message.

    ``http`` overrides the HTTP status of ``code`` for the few answers HTTP has its own
    status for (413 for a body over the limit), and ``headers`` are HTTP headers the answer
    carries (``WWW-Authenticate``, ``Retry-After``); gRPC always sends just ``code``.
    ``refused`` names why the server refused a request it could have served ("overloaded",
    "unauthenticated", "too_large", ...), for the refusal metrics; "" for other failures.
    """

    def __init__(
        self,
        code: Code,
        message: str,
        *,
        http: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        refused: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http = http
        self.headers = headers
        self.refused = refused

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def invalid_argument(message: str) -> ServingError:
    return ServingError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(Code.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(Code.FAILED_PRECONDITION, message)


# TF Serving's ToHTTPStatusCode (model_servers/http_server.cc).
_HTTP_STATUS: Final[dict[Code, int]] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


def http_status(code: Code) -> int:
    return _HTTP_STATUS.get(code, 500)


def http_status_of(error: ServingError) -> int:
    """The HTTP status of ``error``: its own, else its code's."""
    return error.http or http_status(error.code)

import pytest

from aserve.errors import Code, ServingError, http_status, http_status_of
from aserve.grpc_calls import grpc_code, grpc_message


@pytest.mark.parametrize(
    ("code", "http"),
    [
        (Code.OK, 200),
        (Code.CANCELLED, 499),
        (Code.UNKNOWN, 500),
        (Code.INVALID_ARGUMENT, 400),
        (Code.DEADLINE_EXCEEDED, 504),
        (Code.NOT_FOUND, 404),
        (Code.ALREADY_EXISTS, 409),
        (Code.PERMISSION_DENIED, 403),
        (Code.RESOURCE_EXHAUSTED, 429),
        (Code.FAILED_PRECONDITION, 400),
        (Code.ABORTED, 409),
        (Code.OUT_OF_RANGE, 400),
        (Code.UNIMPLEMENTED, 501),
        (Code.INTERNAL, 500),
        (Code.UNAVAILABLE, 503),
        (Code.DATA_LOSS, 500),
        (Code.UNAUTHENTICATED, 401),
    ],
)
def test_every_code_maps_to_tf_serving_http_status_and_same_grpc_code(
    code: Code, http: int
) -> None:
    assert http_status(code) == http
    assert grpc_code(code).value[0] == int(code)


def test_grpc_messages_are_cut_at_1024_characters() -> None:
    assert grpc_message("x" * 1024) == "x" * 1024
    assert grpc_message("x" * 1025) == "x" * 1024 + "...TRUNCATED"


def test_an_error_may_carry_its_own_http_status() -> None:
    too_large = ServingError(Code.RESOURCE_EXHAUSTED, "body too large", http=413)
    assert http_status_of(too_large) == 413
    assert http_status_of(ServingError(Code.RESOURCE_EXHAUSTED, "queue full")) == 429

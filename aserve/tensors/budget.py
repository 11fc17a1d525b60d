"""How much one request may decode: a budget of tensor elements and bytes.

Every decoder takes from the request's budget *before* it allocates, so a 20-byte
TensorProto that claims a shape of 600 million floats is refused at once instead of
allocating 2.4 GB: more elements than ``--max_request_elements`` is INVALID_ARGUMENT
(HTTP 400), more bytes than ``--max_request_bytes`` RESOURCE_EXHAUSTED (HTTP 413).
"""

from __future__ import annotations

from typing import Final

from aserve.errors import Code, ServingError

DEFAULT_MAX_ELEMENTS: Final = 2**26  # 67,108,864: 14 batches of 32 224x224x3 images
DEFAULT_MAX_BYTES: Final = 2**30  # 1 GiB of decoded tensors per request
STRING_ELEMENT_BYTES: Final = 8  # a string element costs its pointer beside its bytes


class Budget:
    __slots__ = ("_elements", "_bytes", "_max_elements", "_max_bytes")

    def __init__(
        self, max_elements: int = DEFAULT_MAX_ELEMENTS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self._elements = self._max_elements = max_elements
        self._bytes = self._max_bytes = max_bytes

    def take(self, elements: int, nbytes: int) -> None:
        """Spend ``elements`` and ``nbytes``; refuse the request if it runs out."""
        self._elements -= elements
        if self._elements < 0:
            raise ServingError(
                Code.INVALID_ARGUMENT,
                f"The request's tensors have more than {self._max_elements} elements "
                "(--max_request_elements)",
                refused="too_large",
            )
        self._bytes -= nbytes
        if self._bytes < 0:
            raise ServingError(
                Code.RESOURCE_EXHAUSTED,
                f"The request's tensors need more than {self._max_bytes} bytes "
                "(--max_request_bytes)",
                http=413,
                refused="too_large",
            )


UNLIMITED: Final = Budget(2**62, 2**62)

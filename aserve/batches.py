"""Merging requests into one batch and splitting its outputs back: pure, no asyncio, no TF.

These run in the worker thread that runs the batch (:func:`run_batch`), and follow TF
Serving's BatchingSession: inputs concatenated along dimension 0; with
``pad_variable_length_inputs`` every dimension after the first padded up to the largest in
the batch with the tensor's first element; a batch padded up to an allowed size by
repeating the first row of its last request; outputs that are not batch-major refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from aserve.errors import invalid_argument

Feeds = Mapping[str, np.ndarray]


class Model(Protocol):
    signatures: Mapping[str, Any]

    def run(
        self, feeds: Feeds, fetches: Sequence[str], *, timeout_ms: int = 0
    ) -> list[np.ndarray]: ...


def batch_size(feeds: Feeds) -> int | None:
    """The common first dimension of ``feeds``; None when they cannot be batched."""
    if len(feeds) == 1:
        (array,) = feeds.values()
        return array.shape[0] if array.ndim else None
    sizes = {array.shape[0] if array.ndim else None for array in feeds.values()}
    if len(sizes) != 1 or None in sizes:
        return None
    return sizes.pop()


def compatibility(feeds: Feeds, *, pad: bool) -> tuple[Any, ...]:
    """Requests with equal keys can share a batch."""
    if len(feeds) == 1:  # the common case, without sorting
        ((name, a),) = feeds.items()
        return ((name, a.ndim, a.dtype),) if pad else ((name, a.shape[1:], a.dtype),)
    if pad:
        return tuple((name, a.ndim, a.dtype) for name, a in sorted(feeds.items()))
    return tuple((name, a.shape[1:], a.dtype) for name, a in sorted(feeds.items()))


def merge(parts: Sequence[Feeds], *, pad: bool, padded_size: int) -> dict[str, np.ndarray]:
    merged = {}
    for name in parts[0]:
        arrays = [part[name] for part in parts]
        if pad:
            arrays = _pad_to_largest(arrays)
        batch = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        if padded_size > batch.shape[0]:
            filler = np.repeat(arrays[-1][:1], padded_size - batch.shape[0], axis=0)
            batch = np.concatenate([batch, filler])
        merged[name] = batch
    return merged


def _pad_to_largest(arrays: list[np.ndarray]) -> list[np.ndarray]:
    target = np.max([a.shape[1:] for a in arrays], axis=0)
    padded = []
    for array in arrays:
        widths = [(0, 0)] + [(0, int(t - s)) for s, t in zip(array.shape[1:], target, strict=True)]
        fill = array.flat[0] if array.size else 0
        padded.append(
            np.pad(array, widths, constant_values=fill) if any(w for _, w in widths) else array
        )
    return padded


def split(
    outputs: Sequence[np.ndarray], sizes: Sequence[int], padded_size: int
) -> list[list[np.ndarray]]:
    for output in outputs:
        if output.ndim == 0 or output.shape[0] != padded_size:
            raise invalid_argument(
                "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                "dimension sizes of the input tensors"
            )
    bounds = np.cumsum([0, *sizes]).tolist()
    return [[o[a:b] for o in outputs] for a, b in zip(bounds, bounds[1:], strict=False)]


def run_batch(
    model: Model,
    parts: Sequence[Feeds],
    fetches: Sequence[str],
    *,
    pad: bool,
    padded_size: int,
    timeout_ms: int,
) -> list[list[np.ndarray]]:
    sizes = [batch_size(part) or 0 for part in parts]
    feeds = merge(parts, pad=pad, padded_size=padded_size)
    return split(model.run(feeds, fetches, timeout_ms=timeout_ms), sizes, padded_size)

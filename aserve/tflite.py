"""TensorFlow Lite models (``model.tflite``), served as TF Serving serves them.

With ``--prefer_tflite_model`` a version folder holding ``model.tflite`` loads here instead of
as a SavedModel (TF Serving's ``TfLiteSession``). The model's signatures come from, in order:

1. the SignatureDefs stored in its flatbuffer metadata (``signature_defs_metadata``: a
   FlexBuffer map of signature name -> serialized SignatureDef, as TF Serving reads them),
   tensor names fixed up as TF Serving fixes them (``"x:0"`` names the TFLite tensor ``x``);
2. else the model's own signatures (``Interpreter.get_signature_list()``), run through
   their signature runners;
3. else one ``serving_default`` predict signature made of the model's inputs and outputs,
   keyed by their tensor names without ``":0"`` (TF Serving's "Generating one").

A :class:`TfLiteModel` has the interface of :class:`aserve.loader.SavedModel` (``signatures``,
``signature_defs``, ``run``, ``close``), so the service, the batcher and warm-up use it as
they use any model. An interpreter is not thread-safe: each version holds
``--num_tflite_pools`` interpreters, and a run takes one for itself (waiting, up to its
timeout, while all are busy). With ``--num_tflite_interpreters_per_pool`` = N > 1 a request
larger than ceil(500 / N) rows is run in chunks of that size (TF Serving's split batches; here
the chunks run one after another in the request's worker thread).

Functions here block; they run in :mod:`aserve.pool` threads only.
"""

from __future__ import annotations

import functools
import os
import queue
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from aserve.errors import Code, ServingError
from aserve.signatures import DEFAULT_SIGNATURE, PREDICT_METHOD, signatures_from_meta_graph

MODEL_FILE: Final = "model.tflite"
SIGNATURE_DEFS_METADATA: Final = "signature_defs_metadata"
_INITIAL_BATCH_SIZE: Final = 500  # TF Serving's kInitialBatchSize
Feeds = Mapping[str, np.ndarray]
_RunOnce = Callable[[Feeds, Sequence[str]], list[Any]]


def has_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MODEL_FILE))


class _Interpreter:
    """One interpreter and its signature runners (used by one thread at a time)."""

    def __init__(self, content: bytes, threads: int) -> None:
        with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated" (LiteRT)
            warnings.simplefilter("ignore")
            self.interpreter = tf.lite.Interpreter(
                model_content=content, num_threads=threads or None
            )
        self.interpreter.allocate_tensors()
        self._runners: dict[str, Any] = {}

    def runner(self, key: str) -> Any:
        if key not in self._runners:
            self._runners[key] = self.interpreter.get_signature_runner(key)
        return self._runners[key]

    def run_main(self, feeds: Mapping[int, np.ndarray], fetches: Sequence[int]) -> list[Any]:
        """Feed tensors of the main subgraph by index (resizing them as needed), invoke."""
        interpreter = self.interpreter
        resized = False
        for index, array in feeds.items():
            if tuple(interpreter.get_tensor(index).shape) != array.shape:
                interpreter.resize_tensor_input(index, list(array.shape), strict=False)
                resized = True
        if resized:
            interpreter.allocate_tensors()
        for index, array in feeds.items():
            interpreter.set_tensor(index, array)
        interpreter.invoke()
        return [interpreter.get_tensor(index) for index in fetches]


class TfLiteModel:
    """A ``model.tflite`` with a pool of interpreters. ``run`` is thread-safe."""

    def __init__(self, path: str, content: bytes, *, pools: int, chunks: int, threads: int) -> None:
        self.path = path
        self._pool: queue.SimpleQueue[_Interpreter] = queue.SimpleQueue()
        first = _Interpreter(content, threads)
        self._pool.put(first)
        for _ in range(max(pools, 1) - 1):
            self._pool.put(_Interpreter(content, threads))
        self._chunk = -(-_INITIAL_BATCH_SIZE // chunks) if chunks > 1 else 0
        meta_graph = meta_graph_pb2.MetaGraphDef()
        # tensor name -> (signature runner key or "" for the main subgraph, alias or index)
        self._routes: dict[str, dict[str, Any]] = {}
        self._build_signatures(first.interpreter, content, meta_graph)
        self.signatures = signatures_from_meta_graph(meta_graph)
        self.signature_defs = meta_graph.signature_def

    def run(
        self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str], *, timeout_ms: int = 0
    ) -> list[np.ndarray]:
        """Feed and fetch tensors by name; errors become ServingError."""
        key, routes = self._route([*feeds, *fetches])
        arrays = {name: _tflite_array(array) for name, array in feeds.items()}
        with self._interpreter(timeout_ms) as interpreter:
            once = functools.partial(_run_once, interpreter, key, routes)
            try:
                results = self._in_chunks(once, arrays, fetches)
                return [_served_array(r) for r in results]
            except (RuntimeError, ValueError) as e:
                raise ServingError(Code.INTERNAL, f"TFLite: {e}") from None

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait()
            except queue.Empty:
                return

    # -- running ----------------------------------------------------------------------------

    def _route(self, names: Sequence[str]) -> tuple[str, dict[str, Any]]:
        for key, routes in self._routes.items():
            if all(name in routes for name in names):
                return key, routes
        raise ServingError(Code.INTERNAL, f"Tensors {', '.join(names)} are not in one signature")

    @contextmanager
    def _interpreter(self, timeout_ms: int) -> Iterator[_Interpreter]:
        try:
            interpreter = self._pool.get(timeout=timeout_ms / 1000 if timeout_ms > 0 else None)
        except queue.Empty:
            raise ServingError(
                Code.DEADLINE_EXCEEDED, "Deadline exceeded while waiting for a TFLite interpreter"
            ) from None
        try:
            yield interpreter
        finally:
            self._pool.put(interpreter)

    def _in_chunks(self, once: _RunOnce, feeds: Feeds, fetches: Sequence[str]) -> list[Any]:
        """``once(feeds, fetches)``, or once per chunk of rows for a request too big for one."""
        rows = {a.shape[0] if a.ndim else -1 for a in feeds.values()}
        size = rows.pop() if len(rows) == 1 else -1
        if not self._chunk or size <= self._chunk:
            return once(feeds, fetches)
        chunk = self._chunk
        parts = [
            once({n: a[start : start + chunk] for n, a in feeds.items()}, fetches)
            for start in range(0, size, chunk)
        ]
        return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]

    # -- signatures -------------------------------------------------------------------------

    def _build_signatures(self, interpreter: Any, content: bytes, meta_graph: Any) -> None:
        stored = _stored_signature_defs(content)
        if stored:
            self._from_stored(interpreter, stored, meta_graph)
        elif interpreter.get_signature_list():
            self._from_runners(interpreter, meta_graph)
        else:
            self._generated(interpreter, meta_graph)

    def _from_stored(self, interpreter: Any, stored: dict[str, Any], meta_graph: Any) -> None:
        inputs = {d["name"]: d for d in interpreter.get_input_details()}
        outputs = {d["name"]: d for d in interpreter.get_output_details()}
        routes: dict[str, Any] = {}
        for name, signature_def in stored.items():
            target = meta_graph.signature_def[name]
            target.CopyFrom(signature_def)
            for kind, infos, known in (
                ("input", target.inputs, inputs),
                ("output", target.outputs, outputs),
            ):
                for alias, info in infos.items():
                    info.name = _fix_name(info.name, known, f"Signature {kind} {alias}")
                    routes[info.name] = known[info.name]["index"]
        self._routes[""] = routes

    def _from_runners(self, interpreter: Any, meta_graph: Any) -> None:
        for key in interpreter.get_signature_list():
            runner = interpreter.get_signature_runner(key)
            target = meta_graph.signature_def[key]
            target.method_name = PREDICT_METHOD
            routes: dict[str, Any] = {}
            for infos, details in (
                (target.inputs, runner.get_input_details()),
                (target.outputs, runner.get_output_details()),
            ):
                for alias, detail in details.items():
                    _tensor_info(infos[alias], detail)
                    routes[detail["name"]] = alias
            self._routes[key] = routes

    def _generated(self, interpreter: Any, meta_graph: Any) -> None:
        target = meta_graph.signature_def[DEFAULT_SIGNATURE]
        target.method_name = PREDICT_METHOD
        routes: dict[str, Any] = {}
        for infos, details in (
            (target.inputs, interpreter.get_input_details()),
            (target.outputs, interpreter.get_output_details()),
        ):
            for detail in details:
                _tensor_info(infos[_legacy_name(detail["name"])], detail)
                routes[detail["name"]] = detail["index"]
        self._routes[""] = routes


def _run_once(
    interpreter: _Interpreter,
    key: str,
    routes: dict[str, Any],
    feeds: Feeds,
    fetches: Sequence[str],
) -> list[Any]:
    """One invocation: through signature runner ``key``, or ("") the main subgraph."""
    if key:
        outputs = interpreter.runner(key)(**{routes[n]: a for n, a in feeds.items()})
        return [outputs[routes[name]] for name in fetches]
    indices = {routes[name]: array for name, array in feeds.items()}
    return interpreter.run_main(indices, [routes[name] for name in fetches])


def load(path: str, *, pools: int = 1, chunks: int = 1, threads: int = 0) -> TfLiteModel:
    """Load ``<path>/model.tflite``. Raises ServingError."""
    try:
        with open(os.path.join(path, MODEL_FILE), "rb") as f:
            content = f.read()
    except OSError as e:
        raise ServingError(Code.NOT_FOUND, f"{e.strerror}: {e.filename}") from None
    try:
        return TfLiteModel(path, content, pools=pools, chunks=chunks, threads=threads)
    except ServingError:
        raise
    except (RuntimeError, ValueError) as e:
        raise ServingError(Code.INVALID_ARGUMENT, f"Cannot load TFLite model {path}: {e}") from None


def _stored_signature_defs(content: bytes) -> dict[str, Any]:
    """The SignatureDefs in the model's ``signature_defs_metadata`` (TF Serving's reader)."""
    from flatbuffers import flexbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        metadata = model.Metadata(i)
        if metadata.Name() != SIGNATURE_DEFS_METADATA.encode():
            continue
        data = model.Buffers(metadata.Buffer()).DataAsNumpy().tobytes()
        try:
            entries = flexbuffers.GetRoot(data).AsMap
            return {
                key.AsKey: meta_graph_pb2.SignatureDef.FromString(value.AsStringBytes)
                for key, value in zip(entries.Keys, entries.Values, strict=True)
            }
        except Exception as e:
            raise ServingError(
                Code.INVALID_ARGUMENT, f"Invalid SignatureDefs found in TfLite model: {e}"
            ) from None
    return {}


def _legacy_name(name: str) -> str:
    """TF tensor names end in ``:0``; early TFLite converters dropped that suffix."""
    return name.split(":", 1)[0]


def _fix_name(name: str, known: Mapping[str, Any], context: str) -> str:
    if name in known:
        return name
    if _legacy_name(name) in known:
        return _legacy_name(name)
    raise ServingError(
        Code.INTERNAL, f"{context} references an unknown tensor: Unknown tensor '{name}'."
    )


def _tensor_info(info: Any, detail: Mapping[str, Any]) -> None:
    info.name = detail["name"]
    info.dtype = tf.as_dtype(detail["dtype"]).as_datatype_enum
    shape = detail.get("shape_signature")
    for size in (detail["shape"] if shape is None or not len(shape) else shape).tolist():
        info.tensor_shape.dim.add(size=size)


def _tflite_array(array: np.ndarray) -> np.ndarray:
    """TFLite takes strings as numpy bytes arrays; aserve's codec holds them as objects."""
    return array.astype(np.bytes_) if array.dtype == object else array


def _served_array(result: Any) -> np.ndarray:
    array = np.asarray(result)
    return array.astype(object) if array.dtype.kind == "S" else array

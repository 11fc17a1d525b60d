"""Loading SavedModels and running them: with :mod:`aserve.tflite`, the only modules that call
TensorFlow.

Every SavedModel is loaded with the TF1 loader into its own ``tf.compat.v1.Session``
and run through the session's C-level run call (REFERENCE §8.3). That is how
TF Serving itself runs models, and it matters:

* TF1 graphs that ``tf.saved_model.load`` rejects load fine (``half_plus_three``
  with unset shapes, ``counter`` with reference-typed outputs);
* inputs are fed without checking them against the signature's declared shape,
  exactly as TF Serving does (only the dtype is checked, by the kernel);
* one call costs ~25 µs of overhead instead of ~200-500 µs for a TF2 signature call, and
  ~7 µs for graphs without loops or blocking ops, which run in the calling worker thread
  (``RunOptions.inter_op_thread_pool = -1``) instead of hopping to TF's inter-op pool. Such
  runs cannot be cut short by a deadline, but they are bounded; graphs that loop or block
  (while loops, queues) keep the pool, where the request's timeout stops them.

``tensorflow.python.client.pywrap_tf_session`` is private API; TensorFlow is
pinned in ``pyproject.toml`` and the integration tests cover this path.

Functions here block; they run in :mod:`aserve.pool` threads only.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.client import pywrap_tf_session as tf_session

from aserve import tflite
from aserve.errors import Code, ServingError
from aserve.signatures import Signature, signatures_from_meta_graph


@dataclass(frozen=True, slots=True)
class LoadOptions:
    tags: tuple[str, ...] = ("serve",)
    intra_op_threads: int = 0  # 0: TensorFlow decides
    inter_op_threads: int = 0
    device: str = ""  # "" keeps the SavedModel's placement; "/device:GPU:0" moves the graph there
    gpu_memory_fraction: float = 0.0
    # --tensorflow_session_config_file: this ConfigProto is used as it is (TF Serving's rule)
    config_file_proto: config_pb2.ConfigProto | None = None
    # --prefer_tflite_model: a version folder with model.tflite loads as TFLite (aserve.tflite)
    prefer_tflite: bool = False
    tflite_pools: int = 1
    tflite_interpreters_per_pool: int = 1

    def session_config(self) -> config_pb2.ConfigProto:
        if self.config_file_proto is not None:
            return self.config_file_proto
        config = config_pb2.ConfigProto(
            allow_soft_placement=True,  # GPU-pinned graphs still load on a CPU-only host
            intra_op_parallelism_threads=self.intra_op_threads,
            inter_op_parallelism_threads=self.inter_op_threads,
        )
        if self.gpu_memory_fraction > 0:
            config.gpu_options.per_process_gpu_memory_fraction = self.gpu_memory_fraction
        return config


class SavedModel:
    """A SavedModel loaded into its own session. ``run`` is thread-safe."""

    def __init__(self, path: str, session: Any, meta_graph: Any) -> None:
        self.path = path
        self.signatures: Mapping[str, Signature] = signatures_from_meta_graph(meta_graph)
        self.signature_defs = meta_graph.signature_def  # proto map, for metadata responses
        self._session = session
        self._endpoints = _endpoints(session.graph, self.signatures.values())
        self.runs_in_caller_thread = not _may_block(meta_graph.graph_def)
        self._caller_thread = (
            _options_buffer(config_pb2.RunOptions(inter_op_thread_pool=-1))
            if self.runs_in_caller_thread
            else None
        )

    def run(
        self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str], *, timeout_ms: int = 0
    ) -> list[np.ndarray]:
        """Feed graph tensors by name and fetch others; errors become ServingError."""
        try:
            feed = {self._endpoint(name): array for name, array in feeds.items()}
            fetch = [self._endpoint(name) for name in fetches]
        except KeyError as e:
            raise ServingError(Code.INTERNAL, f"Tensor {e.args[0]} is not in the graph") from None
        options = self._caller_thread or _run_options(timeout_ms)
        try:
            results = tf_session.TF_SessionRun_wrapper(
                self._session._session, options, feed, fetch, [], None
            )
        except tf.errors.OpError as e:
            raise from_tf_error(e) from None
        finally:
            if options is not None and options is not self._caller_thread:
                tf_session.TF_DeleteBuffer(options)
        return [np.asarray(r) for r in results]

    def close(self) -> None:
        self._session.close()
        if self._caller_thread is not None:
            tf_session.TF_DeleteBuffer(self._caller_thread)
            self._caller_thread = None

    def _endpoint(self, name: str) -> Any:
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            endpoint = self._session.graph.get_tensor_by_name(name)._as_tf_output()
        return endpoint


Model = SavedModel | tflite.TfLiteModel  # what a loaded version is


def load(path: str, options: LoadOptions) -> Model:
    """Load the model in ``path`` (a version folder): a SavedModel, or with
    ``prefer_tflite`` its ``model.tflite`` when there is one. Raises ServingError."""
    if options.prefer_tflite and tflite.has_model(path):
        return tflite.load(
            path,
            pools=options.tflite_pools,
            chunks=options.tflite_interpreters_per_pool,
            threads=options.intra_op_threads,
        )
    _check_layout(path)
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=options.session_config())
    placement = graph.device(options.device) if options.device else contextlib.nullcontext()
    try:
        with graph.as_default(), placement:
            meta_graph = tf.compat.v1.saved_model.loader.load(
                session, list(options.tags), path, clear_devices=bool(options.device)
            )
        return SavedModel(path, session, meta_graph)
    except BaseException as e:
        session.close()
        raise _load_error(e, path, options) from None


def register_ops(library_paths: Sequence[str] = ()) -> list[str]:
    """Register custom ops before any model loads: TensorFlow Text's when it is installed
    (TF Serving links them into its binary), then each op library in ``library_paths``
    (``tf.load_op_library``). Returns what was registered; raises ServingError."""
    registered = []
    if importlib.util.find_spec("tensorflow_text") is not None:
        try:
            importlib.import_module("tensorflow_text")
        except Exception as e:  # built for another TensorFlow: its ops cannot register
            raise ServingError(
                Code.FAILED_PRECONDITION, f"tensorflow_text is installed but cannot load: {e}"
            ) from None
        registered.append("tensorflow_text")
    for path in library_paths:
        try:
            tf.load_op_library(path)
        except (tf.errors.OpError, OSError) as e:
            message = e.message if isinstance(e, tf.errors.OpError) else str(e)
            raise ServingError(
                Code.NOT_FOUND, f"cannot load the op library {path}: {message}"
            ) from None
        registered.append(path)
    return registered


def from_tf_error(error: tf.errors.OpError) -> ServingError:
    return ServingError(Code(error.error_code), error.message)


def _check_layout(path: str) -> None:
    try:
        entries = set(os.listdir(path))
    except PermissionError:
        raise ServingError(
            Code.PERMISSION_DENIED,
            f"Permission denied: the server cannot read the version folder {path}",
        ) from None
    except OSError:
        entries = set()
    if "export.meta" in entries:
        raise ServingError(Code.UNIMPLEMENTED, "Session Bundle is deprecated and removed.")
    if not entries & {"saved_model.pb", "saved_model.pbtxt"}:
        raise ServingError(
            Code.NOT_FOUND,
            "Specified file path does not appear to contain a SavedModel bundle "
            f"(should have a file called `saved_model.pb`)\nSpecified file path: {path}",
        )


def _load_error(error: BaseException, path: str, options: LoadOptions) -> ServingError:
    if isinstance(error, ServingError):
        return error
    if isinstance(error, tf.errors.OpError):
        return from_tf_error(error)
    if isinstance(error, RuntimeError) and "could not be found in SavedModel" in str(error):
        tags = ", ".join(options.tags)
        return ServingError(
            Code.NOT_FOUND,
            f"Could not find meta graph def matching supplied tags: {{ {tags} }}. "
            "To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
            "`saved_model_cli`",
        )
    if isinstance(error, OSError):
        return ServingError(Code.NOT_FOUND, f"{error} (loading {path})")
    return ServingError(Code.UNKNOWN, f"{type(error).__name__}: {error} (loading {path})")


def _endpoints(graph: Any, signatures: Any) -> dict[str, Any]:
    endpoints = {}
    for signature in signatures:
        for spec in (*signature.inputs.values(), *signature.outputs.values()):
            with contextlib.suppress(KeyError, ValueError):
                endpoints[spec.name] = graph.get_tensor_by_name(spec.name)._as_tf_output()
    return endpoints


def _run_options(timeout_ms: int) -> Any:
    if timeout_ms <= 0:
        return None
    return _options_buffer(config_pb2.RunOptions(timeout_in_ms=timeout_ms))


def _options_buffer(options: config_pb2.RunOptions) -> Any:
    return tf_session.TF_NewBufferFromString(options.SerializeToString())


_LOOPS = frozenset(
    {"Enter", "Exit", "NextIteration", "LoopCond", "While", "StatelessWhile", "_While"}
)
_BLOCKING = ("Queue", "Barrier", "Stage", "Iterator", "Recv")


def _may_block(graph_def: Any) -> bool:
    """Whether the graph (or a function it calls) loops or waits, so a run may never end."""
    nodes = [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]
    return any(n.op in _LOOPS or any(word in n.op for word in _BLOCKING) for n in nodes)

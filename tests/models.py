"""Every model and data file the tests use, built in code (TF1 graphs where possible: quick to
build, quick to load).

:func:`build_testdata` writes, once per test session (``tests/conftest.py``), a tree laid out
like TF Serving's test data folder (``tensorflow_serving/servables/tensorflow/testdata``), whose
models have the signatures, tensor names, dtypes and shapes of TF Serving's and compute the same
numbers ("half_plus_two": y = 0.5·x + 2, y2 = 0.5·x + 3, y3 = 0.5·x2 + 3; tf.Example inputs
have a float feature ``x``, required, and ``x2``, optional with default 0.0):

* ``saved_model_half_plus_two_cpu/00000123``: ``serving_default`` (predict: ``x`` -> ``y``,
  both [-1,1]); ``regress_x_to_y``, ``regress_x_to_y2`` and ``classify_x_to_y`` (serialized
  tf.Examples ``tf_example``, unknown rank); ``regress_x2_to_y3`` (``x2`` -> ``y3``).
* ``saved_model_half_plus_two_2_versions/00000123`` and ``/00000124``: the same, plus
  ``classify_x2_to_y3``.
* ``saved_model_half_plus_three/00000123``: y = 0.5·x + 3; ``serving_default`` (predict) and
  ``tensorflow/serving/regress``, with no shapes in the signatures.
* ``saved_model_counter/00000123``: ``get_counter``, ``incr_counter``, ``incr_counter_by``
  (input ``delta``), ``reset_counter``: a stateful float counter whose outputs are
  reference-typed (``DT_FLOAT_REF``, a v1 variable).
* ``saved_model_half_plus_two_tf2_cpu/00000123``: a native TF2 SavedModel (``tf.Module``) whose
  signatures are all predict ones: ``serving_default`` (``x`` [1], default [0.0] -> ``y``),
  ``regress_x_to_y``, ``regress_x_to_y2``, ``classify_x_to_y`` (serialized tf.Examples [-1]),
  ``regress_x2_to_y3``, ``classify_x2_to_y3`` (float [1]).
* ``batching/matrix_half_plus_two/1``: ``serving_default``: ``x`` [-1,3,3] -> ``y`` [-1,3,3].
* ``bad_half_plus_two/00000123``: the files of a legacy SessionBundle (``export``,
  ``export.meta``, ``checkpoint``), which must fail to load.
* ``generated/saved_model_half_plus_two_cpu_warmup*``: half_plus_two with an
  ``assets.extra/tf_serving_warmup_requests`` file: 4 valid records (``_warmup``), one record
  without TFRecord framing (``_not_tfrecord``), a record for an unknown signature
  (``_bad_signature``), 1001 records, one more than TF Serving allows (``_too_many_records``).
* ``bad_model_config.txt``, ``batching_config.txt``, ``monitoring_config.txt``, and
  ``half_plus_two_model_metadata.json``: :data:`HALF_PLUS_TWO_METADATA`, the REST metadata
  expected for half_plus_two served as ``default``.

Tests also build these where they need them:

* ``echo``: one signature per dtype, ``echo_<dtype>``: input ``x`` -> output ``y`` = x; plus
  ``multi`` (inputs ``a`` float [-1,2] and ``b`` float [-1] -> outputs ``sum`` = a0+a1+b and
  ``label_bytes`` (string) = "ex") and ``text`` (string ``s`` -> ``length`` int32 and
  ``upper`` string).
* ``gate``: ``serving_default``: input ``path`` (string [batch]) -> ``content`` [batch] = the
  text of the file ``path[0]``, once that file exists (it busy-waits in the graph until then).
  Lets a test hold a request, or a whole batch, inside TensorFlow for as long as it wants.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ECHO_DTYPES = (
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "string",
    "complex64",
)

ASSET = ("foo.txt", "asset-file-contents")  # the asset of TF Serving's half_plus_two models


def _save(path: Path, build: Callable[[], dict[str, Any]], *, asset: bool = False) -> Path:
    """Build a TF1 graph (``build`` returns its signatures) and save it as a SavedModel."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default(), tempfile.TemporaryDirectory() as scratch:
        if asset:
            source = Path(scratch, ASSET[0])
            source.write_text(ASSET[1])
            v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, tf.constant(str(source)))
        signatures = build()
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.builder.SavedModelBuilder(str(path))
            builder.add_meta_graph_and_variables(
                session,
                ["serve"],
                signature_def_map=signatures,
                assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
            )
            builder.save()
    return path


def _signature(method: str, inputs: dict[str, Any], outputs: dict[str, Any]) -> Any:
    """A SignatureDef of graph tensors (or of ready-made TensorInfo protos)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2

    def info(tensor: Any) -> Any:
        if isinstance(tensor, meta_graph_pb2.TensorInfo):
            return tensor
        return tf.compat.v1.saved_model.utils.build_tensor_info(tensor)

    return tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
        {key: info(t) for key, t in inputs.items()},
        {key: info(t) for key, t in outputs.items()},
        f"tensorflow/serving/{method}",
    )


def _variables(**values: float) -> list[Any]:
    """v1 (reference) variables, like those of the TF1 graphs TF Serving's tests use."""
    import tensorflow as tf

    return [
        tf.compat.v1.Variable(value, name=name, use_resource=False)
        for name, value in values.items()
    ]


def _parse_examples(examples: Any, keys: tuple[str, ...]) -> list[Any]:
    """The v1 ``ParseExample`` op, as ``ParseExample/ParseExample`` (so its errors name the
    node TF Serving's do): float features [1] each; ``x2`` defaults to 0.0, others are
    required. Its outputs are [batch, 1] (the op needs a vector, so the rank is known even when
    the placeholder's is not)."""
    import tensorflow as tf

    defaults = {"x2": [0.0]}
    with tf.name_scope("ParseExample"):
        parsed = tf.raw_ops.ParseExample(
            serialized=examples,
            names=tf.constant([], tf.string),
            sparse_keys=[],
            dense_keys=[tf.constant(key) for key in keys],
            dense_defaults=[tf.constant(defaults.get(key, []), tf.float32) for key in keys],
            sparse_types=[],
            dense_shapes=[[1]] * len(keys),
            name="ParseExample",
        )
    return list(parsed.dense_values)


def _half_plus_two_signatures(classify_x2: bool) -> dict[str, Any]:
    import tensorflow as tf

    a, b, c = _variables(a=0.5, b=2.0, c=3.0)
    examples = tf.compat.v1.placeholder(tf.string, name="tf_example")  # shape not set
    parsed_x, parsed_x2 = _parse_examples(examples, ("x", "x2"))
    x = tf.identity(parsed_x, name="x")
    y = tf.identity(a * x + b, name="y")
    y2 = tf.identity(a * x + c, name="y2")
    x2 = tf.identity(parsed_x2, name="x2")
    y3 = tf.identity(a * x2 + c, name="y3")
    signatures = {
        "serving_default": _signature("predict", {"x": x}, {"y": y}),
        "regress_x_to_y": _signature("regress", {"inputs": examples}, {"outputs": y}),
        "regress_x_to_y2": _signature("regress", {"inputs": examples}, {"outputs": y2}),
        "regress_x2_to_y3": _signature("regress", {"inputs": x2}, {"outputs": y3}),
        "classify_x_to_y": _signature("classify", {"inputs": examples}, {"scores": y}),
    }
    if classify_x2:
        signatures["classify_x2_to_y3"] = _signature("classify", {"inputs": x2}, {"scores": y3})
    return signatures


def build_half_plus_two(path: Path, *, classify_x2: bool = False) -> Path:
    """TF Serving's ``saved_model_half_plus_two_cpu`` (``classify_x2``: ``..._2_versions``)."""
    return _save(path, lambda: _half_plus_two_signatures(classify_x2), asset=True)


def build_half_plus_three(path: Path) -> Path:
    """TF Serving's ``saved_model_half_plus_three``: its signatures carry no shapes, and (as
    in TF Serving's file) the regress input ``tf_example``, a string tensor, says DT_FLOAT."""
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    def unshaped(tensor: Any, dtype: int = types_pb2.DT_FLOAT) -> Any:
        return meta_graph_pb2.TensorInfo(name=tensor.name, dtype=dtype)

    def build() -> dict[str, Any]:
        a, b = _variables(a=0.5, b=3.0)
        examples = tf.compat.v1.placeholder(tf.string, name="tf_example")
        x = tf.identity(_parse_examples(examples, ("x",))[0], name="x")
        y = tf.add(a * x, b, name="y")
        return {
            "serving_default": _signature("predict", {"x": unshaped(x)}, {"y": unshaped(y)}),
            "tensorflow/serving/regress": _signature(
                "regress",
                {"inputs": unshaped(examples)},
                {"outputs": unshaped(tf.identity(y, name="Identity"))},
            ),
        }

    return _save(path, build, asset=True)


def build_counter(path: Path) -> Path:
    """TF Serving's ``saved_model_counter``: every signature returns the counter's new value."""
    import tensorflow as tf

    def build() -> dict[str, Any]:
        (counter,) = _variables(counter=0.0)
        with tf.name_scope("incr_counter_op"):
            incr = counter.assign_add(1.0)
        delta = tf.compat.v1.placeholder(tf.float32, name="delta")
        with tf.name_scope("incr_counter_by_op"):
            incr_by = counter.assign_add(delta)
        with tf.name_scope("reset_counter_op"):
            reset = counter.assign(0.0)
        return {
            "get_counter": _signature("predict", {}, {"output": counter}),
            "incr_counter": _signature("predict", {}, {"output": incr}),
            "incr_counter_by": _signature("predict", {"delta": delta}, {"output": incr_by}),
            "reset_counter": _signature("predict", {}, {"output": reset}),
        }

    return _save(path, build)


def build_matrix_half_plus_two(path: Path) -> Path:
    """TF Serving's ``batching/matrix_half_plus_two``: y = 0.5·x + 2, elementwise."""
    import tensorflow as tf

    def build() -> dict[str, Any]:
        x = tf.compat.v1.placeholder(tf.float32, shape=[None, 3, 3], name="x")
        y = tf.add(0.5 * x, 2.0, name="y")
        return {"serving_default": _signature("predict", {"x": x}, {"y": y})}

    return _save(path, build)


def build_half_plus_two_tf2(path: Path) -> Path:
    """TF Serving's ``saved_model_half_plus_two_tf2_cpu``, a SavedModel of ``tf.function``s."""
    import tensorflow as tf

    floats = tf.TensorSpec([1], tf.float32)
    examples = tf.TensorSpec([None], tf.string)

    class HalfPlusTwo(tf.Module):
        def __init__(self, asset: str) -> None:
            super().__init__()
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(2.0, name="b")
            self.c = tf.Variable(3.0, name="c")
            self.asset = tf.saved_model.Asset(asset)

        def _x(self, inputs: tf.Tensor) -> tf.Tensor:
            features = {"x": tf.io.FixedLenFeature([1], tf.float32)}
            return tf.io.parse_example(inputs, features)["x"]

        @tf.function(input_signature=[floats])
        def predict(self, x: tf.Tensor = tf.constant([0.0])) -> dict[str, tf.Tensor]:  # noqa: B008
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[examples])
        def regress_xy(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"outputs": self.a * self._x(inputs) + self.b}

        @tf.function(input_signature=[examples])
        def regress_xy2(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"outputs": self.a * self._x(inputs) + self.c}

        @tf.function(input_signature=[examples])
        def classify_xy(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"scores": self.a * self._x(inputs) + self.b}

        @tf.function(input_signature=[floats])
        def regress_x2y3(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"outputs": self.a * inputs + self.c}

        @tf.function(input_signature=[floats])
        def classify_x2y3(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"scores": self.a * inputs + self.c}

    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch, ASSET[0])
        source.write_text(ASSET[1])
        module = HalfPlusTwo(str(source))
        signatures = {
            "serving_default": module.predict,
            "regress_x_to_y": module.regress_xy,
            "regress_x_to_y2": module.regress_xy2,
            "classify_x_to_y": module.classify_xy,
            "regress_x2_to_y3": module.regress_x2y3,
            "classify_x2_to_y3": module.classify_x2y3,
        }
        tf.saved_model.save(module, str(path), signatures=signatures)
    return path


def build_session_bundle(path: Path) -> Path:
    """The files a legacy SessionBundle export has (their contents do not matter: a server must
    refuse the layout before reading them)."""
    path.mkdir(parents=True)
    (path / "export").write_bytes(b"not a real SessionBundle checkpoint\n")
    (path / "export.meta").write_bytes(b"not a real SessionBundle MetaGraphDef\n")
    (path / "checkpoint").write_text(
        'model_checkpoint_path: "export"\nall_model_checkpoint_paths: "export"\n'
    )
    return path


def warmup_records(signature: str = "serving_default") -> list[bytes]:
    """Serialized PredictionLogs: predict ``signature`` with x=[[2.0]]; for the default
    signature also regress (``regress_x_to_y``), classify (``classify_x_to_y``) and a
    multi_inference of both, on one tf.Example x=2.0."""
    from tensorflow.core.example import example_pb2, feature_pb2
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import (
        classification_pb2,
        inference_pb2,
        input_pb2,
        model_pb2,
        predict_pb2,
        prediction_log_pb2,
        regression_pb2,
    )

    def spec(name: str) -> Any:
        return model_pb2.ModelSpec(name="half_plus_two", signature_name=name)

    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)] * 2
    )
    x = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=[2.0])
    predict = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(
            request=predict_pb2.PredictRequest(model_spec=spec(signature), inputs={"x": x})
        )
    )
    if signature != "serving_default":
        return [predict.SerializeToString()]
    example = example_pb2.Example(
        features=feature_pb2.Features(
            feature={"x": feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[2.0]))}
        )
    )
    examples = input_pb2.Input(example_list=input_pb2.ExampleList(examples=[example]))
    tasks = [
        inference_pb2.InferenceTask(
            model_spec=spec(name), method_name=f"tensorflow/serving/{method}"
        )
        for name, method in (("regress_x_to_y", "regress"), ("classify_x_to_y", "classify"))
    ]
    logs = [
        predict,
        prediction_log_pb2.PredictionLog(
            regress_log=prediction_log_pb2.RegressLog(
                request=regression_pb2.RegressionRequest(
                    model_spec=spec("regress_x_to_y"), input=examples
                )
            )
        ),
        prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(
                request=classification_pb2.ClassificationRequest(
                    model_spec=spec("classify_x_to_y"), input=examples
                )
            )
        ),
        prediction_log_pb2.PredictionLog(
            multi_inference_log=prediction_log_pb2.MultiInferenceLog(
                request=inference_pb2.MultiInferenceRequest(tasks=tasks, input=examples)
            )
        ),
    ]
    return [log.SerializeToString() for log in logs]


def _with_warmup(version: Path, target: Path, records: list[bytes], tfrecord: bool = True) -> None:
    """Copy half_plus_two ``version`` to ``target`` with these warm-up records."""
    import tensorflow as tf

    shutil.copytree(version, target)
    warmup = target / "assets.extra" / "tf_serving_warmup_requests"
    warmup.parent.mkdir()
    if not tfrecord:
        warmup.write_bytes(b"".join(records))
        return
    with tf.io.TFRecordWriter(str(warmup)) as writer:
        for record in records:
            writer.write(record)


def _tensor(name: str, dtype: str, dims: list[int] | None) -> dict[str, Any]:
    shape: dict[str, Any] = (
        {"dim": [], "unknown_rank": True}
        if dims is None
        else {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False}
    )
    return {"dtype": dtype, "tensor_shape": shape, "name": name}


def _metadata_signature(
    method: str, inputs: dict[str, Any], outputs: dict[str, Any]
) -> dict[str, Any]:
    return {
        "inputs": inputs,
        "outputs": outputs,
        "method_name": f"tensorflow/serving/{method}",
        "defaults": {},
    }


_EXAMPLES = {"inputs": _tensor("tf_example:0", "DT_STRING", None)}
HALF_PLUS_TWO_METADATA: dict[str, Any] = {
    # GET /v1/models/default/metadata for half_plus_two, as TF Serving answers it
    # (its half_plus_two_model_metadata.json)
    "model_spec": {"name": "default", "signature_name": "", "version": "123"},
    "metadata": {
        "signature_def": {
            "signature_def": {
                "regress_x2_to_y3": _metadata_signature(
                    "regress",
                    {"inputs": _tensor("x2:0", "DT_FLOAT", [-1, 1])},
                    {"outputs": _tensor("y3:0", "DT_FLOAT", [-1, 1])},
                ),
                "serving_default": _metadata_signature(
                    "predict",
                    {"x": _tensor("x:0", "DT_FLOAT", [-1, 1])},
                    {"y": _tensor("y:0", "DT_FLOAT", [-1, 1])},
                ),
                "classify_x_to_y": _metadata_signature(
                    "classify", _EXAMPLES, {"scores": _tensor("y:0", "DT_FLOAT", [-1, 1])}
                ),
                "regress_x_to_y2": _metadata_signature(
                    "regress", _EXAMPLES, {"outputs": _tensor("y2:0", "DT_FLOAT", [-1, 1])}
                ),
                "regress_x_to_y": _metadata_signature(
                    "regress", _EXAMPLES, {"outputs": _tensor("y:0", "DT_FLOAT", [-1, 1])}
                ),
            }
        }
    },
}

CONFIG_FILES = {
    "bad_model_config.txt": "improperly formatted file",
    "batching_config.txt": (
        "max_batch_size { value: 128 }\n"
        "batch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1000000 }\n"
        "num_batch_threads { value: 8 }\n"
    ),
    "monitoring_config.txt": (
        'prometheus_config: {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n'
    ),
}


def build_testdata(root: Path) -> Path:
    """Write every model and file of the module docstring's list into ``root``."""
    import json

    half_plus_two = build_half_plus_two(root / "saved_model_half_plus_two_cpu" / "00000123")
    two_versions = root / "saved_model_half_plus_two_2_versions"
    build_half_plus_two(two_versions / "00000123", classify_x2=True)
    shutil.copytree(two_versions / "00000123", two_versions / "00000124")
    build_half_plus_three(root / "saved_model_half_plus_three" / "00000123")
    build_counter(root / "saved_model_counter" / "00000123")
    build_half_plus_two_tf2(root / "saved_model_half_plus_two_tf2_cpu" / "00000123")
    build_matrix_half_plus_two(root / "batching" / "matrix_half_plus_two" / "1")
    build_session_bundle(root / "bad_half_plus_two" / "00000123")

    warmup = root / "generated" / "saved_model_half_plus_two_cpu_warmup"
    version = "00000123"
    _with_warmup(half_plus_two, warmup / version, warmup_records())
    _with_warmup(
        half_plus_two,
        Path(f"{warmup}_not_tfrecord", version),
        warmup_records()[:1],
        tfrecord=False,
    )
    _with_warmup(
        half_plus_two,
        Path(f"{warmup}_bad_signature", version),
        warmup_records("no_such_signature"),
    )
    _with_warmup(
        half_plus_two, Path(f"{warmup}_too_many_records", version), warmup_records()[:1] * 1001
    )

    for name, text in CONFIG_FILES.items():
        (root / name).write_text(text)
    (root / "half_plus_two_model_metadata.json").write_text(
        json.dumps(HALF_PLUS_TWO_METADATA, indent=1)
    )
    return root


def build_echo(path: Path) -> Path:
    import tensorflow as tf

    predict = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def

    def build() -> dict[str, object]:
        signatures = {}
        for name in ECHO_DTYPES:
            x = tf.compat.v1.placeholder(tf.dtypes.as_dtype(name), shape=None, name=f"x_{name}")
            signatures[f"echo_{name}"] = predict({"x": x}, {"y": tf.identity(x, name=f"y_{name}")})
        a = tf.compat.v1.placeholder(tf.float32, shape=[None, 2], name="a")
        b = tf.compat.v1.placeholder(tf.float32, shape=[None], name="b")
        total = tf.add(tf.reduce_sum(a, axis=1), b, name="sum")
        label = tf.fill(tf.shape(b), "ex", name="label")
        signatures["multi"] = predict({"a": a, "b": b}, {"sum": total, "label_bytes": label})
        s = tf.compat.v1.placeholder(tf.string, shape=[None], name="s")
        signatures["text"] = predict(
            {"s": s},
            {
                "length": tf.strings.length(s, name="length"),
                "upper": tf.strings.upper(s, name="upper"),
            },
        )
        return signatures

    return _save(path, build)


def build_gate(path: Path) -> Path:
    import tensorflow as tf

    predict = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def

    def build() -> dict[str, object]:
        paths = tf.compat.v1.placeholder(tf.string, shape=[None], name="path")
        gate = paths[0]
        waited = tf.while_loop(
            lambda i: tf.equal(tf.size(tf.io.matching_files(gate)), 0),
            lambda i: i + 1,
            [tf.constant(0)],
            parallel_iterations=1,
        )
        with tf.control_dependencies(tf.nest.flatten(waited)):
            content = tf.fill(tf.shape(paths), tf.io.read_file(gate), name="content")
        return {"serving_default": predict({"path": paths}, {"content": content})}

    return _save(path, build)


# -- TFLite and TF-Text models ---------------------------------------------------------------


def build_tflite_models(root: Path) -> dict[str, Path]:
    """half_plus_two as ``model.tflite`` three ways, each in ``<root>/<name>/123/``:

    * ``tflite``: converted from a TF1 session, input ``x`` [1,1] -> ``y`` [1,1], no signature
      of its own (TF Serving's ``saved_model_half_plus_two_tflite``);
    * ``tflite_with_sigdef``: the same with input tensor ``tflite_input`` and the
      ``serving_default`` SignatureDef (``x`` -> ``tflite_input:0``, ``y`` -> ``y:0``) in the
      flatbuffer's ``signature_defs_metadata`` (``saved_model_half_plus_two_tflite_with_sigdef``);
    * ``tflite_signature``: converted from a TF2 function, with the TFLite signature
      ``serving_default`` (``x`` [-1,1] -> ``y``).
    """
    import tensorflow as tf

    paths = {}
    for name, content in (
        ("tflite", _tflite_from_session("x")),
        ("tflite_with_sigdef", _with_signature_defs(_tflite_from_session("tflite_input"))),
        ("tflite_signature", _tflite_from_function(tf)),
    ):
        version = root / name / "123"
        version.mkdir(parents=True)
        (version / "model.tflite").write_bytes(content)
        paths[name] = version.parent
    return paths


def _tflite_from_session(input_name: str) -> bytes:
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        a, b = v1.Variable(0.5, name="a"), v1.Variable(2.0, name="b")
        x = v1.placeholder(tf.float32, [1, 1], name=input_name)
        y = tf.identity(a * x + b, name="y")
        session.run(v1.global_variables_initializer())
        return bytes(v1.lite.TFLiteConverter.from_session(session, [x], [y]).convert())


def _tflite_from_function(tf: Any) -> bytes:
    class HalfPlusTwo(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32)])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"y": 0.5 * x + 2.0}

    module = HalfPlusTwo()
    function = module.serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], module)
    return bytes(converter.convert())


def _with_signature_defs(content: bytes) -> bytes:
    """``content`` plus TF Serving's signature_defs_metadata: a FlexBuffer map of signature
    name -> serialized SignatureDef (a FlexBuffer string, as TF's signature_def_util writes)."""
    from flatbuffers import flexbuffers
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for infos, alias, tensor in (
        (signature.inputs, "x", "tflite_input:0"),
        (signature.outputs, "y", "y:0"),
    ):
        infos[alias].name = tensor
        infos[alias].dtype = 1  # DT_FLOAT
        infos[alias].tensor_shape.dim.add(size=1)
        infos[alias].tensor_shape.dim.add(size=1)
    builder = flexbuffers.Builder()
    with builder.Map():
        builder.Key("serving_default")
        builder.String(signature.SerializeToString().decode("ascii"))  # sizes 1: ASCII bytes
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = list(builder.Finish())
    model.buffers.append(buffer)
    metadata = schema.MetadataT()
    metadata.name, metadata.buffer = "signature_defs_metadata", len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), metadata]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def build_whitespace_tokenizer(path: Path) -> Path:
    """A TF2 SavedModel with a TF-Text op: ``serving_default``: ``text`` (string [batch]) ->
    ``tokens`` (string [batch, max tokens], padded with "") by ``text.WhitespaceTokenizer``."""
    import tensorflow as tf
    import tensorflow_text as text

    class Tokenizer(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            self.tokenizer = text.WhitespaceTokenizer()

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, sentences: Any) -> dict[str, Any]:
            return {"tokens": self.tokenizer.tokenize(sentences).to_tensor(default_value="")}

    module = Tokenizer()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def audio_frontend_library() -> Path:
    """An op library TensorFlow ships (``AudioMicrofrontend``; TF's core registers it too)."""
    from tensorflow.lite.experimental.microfrontend.python import ops

    return Path(ops.__file__).parent / "_audio_microfrontend_op.so"


def build_audio_frontend(path: Path) -> Path:
    """``serving_default``: ``audio`` (int16 [samples] at 16 kHz) -> ``features`` (float
    [frames, 8]) by the ``AudioMicrofrontend`` op of :func:`audio_frontend_library`."""
    import tensorflow as tf
    from tensorflow.lite.experimental.microfrontend.python.ops import audio_microfrontend_op

    predict = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def

    def build() -> dict[str, object]:
        audio = tf.compat.v1.placeholder(tf.int16, [None], name="audio")
        features = audio_microfrontend_op.audio_microfrontend(
            audio, window_size=30, window_step=20, num_channels=8, out_type=tf.float32
        )
        return {"serving_default": predict({"audio": audio}, {"features": features})}

    return _save(path, build)

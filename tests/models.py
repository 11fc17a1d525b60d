"""Small SavedModels the tests build themselves (TF1 graphs: quick to build, quick to load).

* ``echo``: one signature per dtype, ``echo_<dtype>``: input ``x`` -> output ``y`` = x; plus
  ``multi`` (inputs ``a`` float [-1,2] and ``b`` float [-1] -> outputs ``sum`` = a0+a1+b and
  ``label_bytes`` (string) = "ex") and ``text`` (string ``s`` -> ``length`` int32 and
  ``upper`` string).
* ``gate``: ``serving_default``: input ``path`` (string [batch]) -> ``content`` [batch] = the
  text of the file ``path[0]``, once that file exists (it busy-waits in the graph until then).
  Lets a test hold a request, or a whole batch, inside TensorFlow for as long as it wants.
"""

from __future__ import annotations

from pathlib import Path

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


def _save(path: Path, build: object) -> Path:
    import tensorflow as tf

    with tf.Graph().as_default():
        signatures = build()  # type: ignore[operator]
        with tf.compat.v1.Session() as session:
            builder = tf.compat.v1.saved_model.builder.SavedModelBuilder(str(path))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()
    return path


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

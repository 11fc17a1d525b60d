"""Train and export the TF Serving tutorial's softmax-regression model, on bundled data.

TF Serving's tutorial (``mnist_saved_model.py``) trains ``softmax(x W + b)`` on MNIST
for ``--training_iteration`` steps and exports a SavedModel with two signatures. This
does the same on scikit-learn's ``load_digits`` (1,797 8x8 digits shipped inside the
package, so nothing is downloaded): 64 inputs scaled to [0, 1], 10 classes, plain
gradient descent on the summed cross-entropy in batches of 50, reshuffled every epoch,
and the tutorial's export, built with the TF1 graph API as there. The learning rate is
0.001, not the tutorial's 0.01: these small digits are easier than MNIST, and at 0.01
100 steps already reach ~7 % error, which would hide the version-1 / version-2 gap.
The held-out set is a stratified 30 % (540 images, seed 0). The signatures:

* ``predict_images``: input ``images`` float [None, 64] -> output ``scores`` [None, 10]
* ``serving_default``: a Classify signature, input ``inputs`` (serialized
  ``tf.Example`` with float feature ``x`` of 64 values) -> ``classes`` (string, the
  10 digits best first) and ``scores`` (their probabilities).

Fewer steps give a worse model, which is the tutorial's version-1 / version-2 story
(~11 % test error after 100 steps, ~5 % after 2000)::

    python -m loadtests.digits --steps 100 --export /tmp/digits/1
    python -m loadtests.digits --steps 2000 --export /tmp/digits/2

The held-out test images (:func:`test_set`) are what :mod:`loadtests.accuracy` sends.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = 64
CLASSES = 10
TEST_SIZE = 0.3  # 540 of the 1,797 images
SEED = 0
BATCH = 50
LEARNING_RATE = 0.001  # the tutorial's 0.01 reaches ~7 % error in 100 steps on these


@dataclass(frozen=True)
class Split:
    """Images (float32 [n, 64] in [0, 1]) and their labels (int64 [n])."""

    images: np.ndarray
    labels: np.ndarray


def _split() -> tuple[Split, Split]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=TEST_SIZE, random_state=SEED, stratify=digits.target
    )
    return Split(x_train, y_train.astype(np.int64)), Split(x_test, y_test.astype(np.int64))


def train_set() -> Split:
    return _split()[0]


def test_set() -> Split:
    """The held-out images, never seen in training; the same on every call."""
    return _split()[1]


def _batches(split: Split, seed: int = SEED) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless batches of (images, one-hot labels), reshuffled every epoch."""
    rng = np.random.default_rng(seed)
    one_hot = np.eye(CLASSES, dtype=np.float32)[split.labels]
    while True:
        order = rng.permutation(len(split.labels))
        for start in range(0, len(order) - BATCH + 1, BATCH):
            chosen = order[start : start + BATCH]
            yield split.images[chosen], one_hot[chosen]


def train_and_export(steps: int, export_dir: Path) -> float:
    """Train for ``steps`` batches, export a SavedModel version folder at ``export_dir``
    (written beside it, then renamed into place), and return the test error rate."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        graph = _build_graph(v1)
        session.run(v1.global_variables_initializer())
        batches = _batches(train_set())
        for _ in range(steps):
            images, labels = next(batches)
            session.run(graph["train"], {graph["x"]: images, graph["labels"]: labels})
        test = test_set()
        scores = session.run(graph["y"], {graph["x"]: test.images})
        _export(v1, session, graph, export_dir)
    return float(np.mean(np.argmax(scores, axis=1) != test.labels))


def _build_graph(v1: Any) -> dict[str, Any]:
    """The tutorial's graph: tf.Example parsing, softmax regression, top-k classes."""
    serialized = v1.placeholder(v1.string, name="tf_example")
    features = {"x": v1.FixedLenFeature(shape=[FEATURES], dtype=v1.float32)}
    x = v1.identity(v1.parse_example(serialized, features)["x"], name="x")
    labels = v1.placeholder(v1.float32, shape=[None, CLASSES])
    w = v1.Variable(v1.zeros([FEATURES, CLASSES]))
    b = v1.Variable(v1.zeros([CLASSES]))
    y = v1.nn.softmax(v1.matmul(x, w) + b, name="y")
    cross_entropy = -v1.reduce_sum(labels * v1.log(y + 1e-10))
    train = v1.train.GradientDescentOptimizer(LEARNING_RATE).minimize(cross_entropy)
    values, indices = v1.nn.top_k(y, CLASSES)
    table = v1.lookup.StaticHashTable(
        v1.lookup.KeyValueTensorInitializer(
            v1.range(CLASSES, dtype=v1.int64), v1.constant([str(i) for i in range(CLASSES)])
        ),
        default_value="UNKNOWN",
    )
    classes = table.lookup(v1.cast(indices, v1.int64))
    return {"serialized": serialized, "x": x, "labels": labels, "y": y, "train": train,
            "values": values, "classes": classes}  # fmt: skip


def _export(v1: Any, session: Any, graph: dict[str, Any], export_dir: Path) -> None:
    saved_model = v1.saved_model
    info = saved_model.utils.build_tensor_info
    classify = saved_model.signature_def_utils.build_signature_def(
        inputs={saved_model.signature_constants.CLASSIFY_INPUTS: info(graph["serialized"])},
        outputs={
            saved_model.signature_constants.CLASSIFY_OUTPUT_CLASSES: info(graph["classes"]),
            saved_model.signature_constants.CLASSIFY_OUTPUT_SCORES: info(graph["values"]),
        },
        method_name=saved_model.signature_constants.CLASSIFY_METHOD_NAME,
    )
    predict = saved_model.signature_def_utils.build_signature_def(
        inputs={"images": info(graph["x"])},
        outputs={"scores": info(graph["y"])},
        method_name=saved_model.signature_constants.PREDICT_METHOD_NAME,
    )
    staging = export_dir.with_name(f".{export_dir.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    builder = saved_model.builder.SavedModelBuilder(str(staging))
    builder.add_meta_graph_and_variables(
        session,
        [saved_model.tag_constants.SERVING],
        signature_def_map={
            "predict_images": predict,
            saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY: classify,
        },
        main_op=v1.tables_initializer(),
        strip_default_attrs=True,
    )
    builder.save()
    os.rename(staging, export_dir)  # a polling server sees the version whole or not at all


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.digits", description=__doc__)
    parser.add_argument("--steps", type=int, default=100, help="training iterations")
    parser.add_argument("--export", type=Path, required=True, help="version folder, e.g. /m/1")
    args = parser.parse_args(argv)
    if args.export.exists():
        parser.error(f"{args.export} exists; pick a new version number")
    args.export.parent.mkdir(parents=True, exist_ok=True)
    error = train_and_export(args.steps, args.export)
    print(f"trained {args.steps} steps; test error rate {error:.1%}; exported to {args.export}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

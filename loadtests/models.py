"""The benchmark's models, built with TensorFlow into SavedModel version folders.

* ``tiny``: half_plus_two (y = 0.5·x + 2), input ``x`` float [batch]: the per-request cost of
  the server itself, since the model costs almost nothing.
* ``cnn``: a Fashion-MNIST-sized CNN, input ``images`` float [batch, 28, 28, 1] -> ``scores``
  [batch, 10] (conv 32 -> pool -> conv 64 -> pool -> dense 128 -> dense 10).
* ``mlp``: compute-heavy, input ``x`` float [batch, 784] -> ``scores`` [batch, 10] through two
  2048-wide hidden layers.

Weights are random (seeded): the benchmark measures speed, not accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class BenchModel:
    name: str
    input_name: str
    example_shape: tuple[int, ...]  # one example, without the batch dimension
    description: str

    def example(self, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.random(self.example_shape, dtype=np.float32)

    def batch(self, size: int) -> np.ndarray:
        return np.stack([self.example(i) for i in range(size)])


MODELS = {
    "tiny": BenchModel("tiny", "x", (), "half_plus_two, 1 float in and out"),
    "cnn": BenchModel("cnn", "images", (28, 28, 1), "Fashion-MNIST-sized CNN, 28x28x1 -> 10"),
    "mlp": BenchModel("mlp", "x", (784,), "MLP 784-2048-2048-10"),
}


def build(name: str, version_dir: Path) -> Path:
    """Export model ``name`` as a SavedModel into ``version_dir`` (e.g. ``.../tiny/1``)."""
    import tensorflow as tf

    module = _BUILDERS[name]()
    tf.saved_model.save(module, str(version_dir), signatures={"serving_default": module.serve})
    return version_dir


def _tiny() -> Any:
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": 0.5 * x + 2.0}

    return HalfPlusTwo()


def _cnn() -> Any:
    import tensorflow as tf

    init = tf.random.stateless_normal

    class Cnn(tf.Module):
        def __init__(self) -> None:
            self.c1 = tf.Variable(init([3, 3, 1, 32], seed=[1, 1]) * 0.1)
            self.c2 = tf.Variable(init([3, 3, 32, 64], seed=[1, 2]) * 0.05)
            self.d1 = tf.Variable(init([7 * 7 * 64, 128], seed=[1, 3]) * 0.02)
            self.d2 = tf.Variable(init([128, 10], seed=[1, 4]) * 0.1)

        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32, name="images")])
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            h = tf.nn.relu(tf.nn.conv2d(images, self.c1, 1, "SAME"))
            h = tf.nn.max_pool2d(h, 2, 2, "SAME")
            h = tf.nn.relu(tf.nn.conv2d(h, self.c2, 1, "SAME"))
            h = tf.nn.max_pool2d(h, 2, 2, "SAME")
            h = tf.nn.relu(tf.reshape(h, [-1, 7 * 7 * 64]) @ self.d1)
            return {"scores": tf.nn.softmax(h @ self.d2)}

    return Cnn()


def _mlp() -> Any:
    import tensorflow as tf

    init = tf.random.stateless_normal

    class Mlp(tf.Module):
        def __init__(self) -> None:
            self.w1 = tf.Variable(init([784, 2048], seed=[2, 1]) * 0.03)
            self.w2 = tf.Variable(init([2048, 2048], seed=[2, 2]) * 0.02)
            self.w3 = tf.Variable(init([2048, 10], seed=[2, 3]) * 0.02)

        @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            h = tf.nn.relu(x @ self.w1)
            h = tf.nn.relu(h @ self.w2)
            return {"scores": tf.nn.softmax(h @ self.w3)}

    return Mlp()


_BUILDERS = {"tiny": _tiny, "cnn": _cnn, "mlp": _mlp}

"""The seed-001 two-circles Keras model, probed with one line: ``callbacks=[GradprobeKerasCallback(...)]``.

A deep sigmoid MLP with N(0, 1) weights (Keras 3 on the torch backend) trains through ``model.fit``;
gradprobe records every layer under its Keras name (``dense``, ``dense_1``, ...), stores the run and
its report, and diagnoses vanishing gradients. Run: ``python examples/keras_callback.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # must be set before keras is imported

import keras  # noqa: E402
from keras import Sequential  # noqa: E402
from keras.initializers import RandomNormal  # noqa: E402
from keras.layers import Dense, Input  # noqa: E402
from sklearn.datasets import make_circles  # noqa: E402

from gradprobe.integrations.keras import GradprobeKerasCallback  # noqa: E402

EPOCHS = 10  # the seed trains 100; ten show the same picture in seconds


def make_mlp(activation: str) -> Sequential:
    """The seed's make_mlp: four hidden Dense(5) layers with N(0, 1) kernels, a sigmoid output."""
    init = RandomNormal(mean=0.0, stddev=1.0)
    return Sequential([Input(shape=(2,))] + [Dense(5, activation, kernel_initializer=init) for _ in range(4)]
                      + [Dense(1, "sigmoid", kernel_initializer=init)])


def main() -> None:
    """Train the sigmoid model on the two circles with the callback and print what gradprobe found."""
    keras.utils.set_random_seed(42)
    x, y = make_circles(n_samples=1000, factor=0.5, noise=0.1, random_state=42)
    model = make_mlp("sigmoid")
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["acc"])
    probe = GradprobeKerasCallback(report=True)  # the one line gradprobe adds
    model.fit(x, y, batch_size=32, epochs=EPOCHS, callbacks=[probe], verbose=0)
    print(f"run {probe.session.run_id} in {probe.session.writer.root}")
    print(probe.diagnosis)


if __name__ == "__main__":
    main()

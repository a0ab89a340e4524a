"""Keras callback overhead: the seed-001 circles fit with and without ``GradprobeKerasCallback()`` (default cadence).

Whole ``model.fit`` wall time as a user meets it (the callback's attach, every step, the store's
writes, the diagnosis and the summary at the end), the two variants interleaved, medians over
repetitions. Run: ``KERAS_BACKEND=torch python benchmarks/bench_keras.py [--reps 7] [--epochs 20]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import make_circles  # noqa: E402

from gradprobe.integrations.keras import GradprobeKerasCallback  # noqa: E402


def _model(width: int) -> keras.Model:
    """The seed's deep sigmoid MLP (2 -> 4 x width -> 1, N(0, 1) kernels), RMSprop, fixed weights."""
    keras.utils.set_random_seed(0)
    init = keras.initializers.RandomNormal(0.0, 1.0)
    model = keras.Sequential([keras.Input((2,))] + [keras.layers.Dense(width, "sigmoid", kernel_initializer=init)
                                                    for _ in range(4)]
                             + [keras.layers.Dense(1, "sigmoid", kernel_initializer=init)])
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["acc"])
    return model


def _fit_seconds(probed: bool, epochs: int, width: int, store: str) -> tuple[float, float]:
    """Wall and process CPU seconds of one ``fit`` (CPU time is steadier on a shared machine)."""
    x, y = make_circles(n_samples=1000, factor=0.5, noise=0.1, random_state=0)
    model = _model(width)
    callbacks = [GradprobeKerasCallback(store=store)] if probed else []
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=32, epochs=epochs, callbacks=callbacks, verbose=0)
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    """Print the median fit times and the overhead as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=5, help="hidden units (the seed: 5)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("gradprobe").setLevel(logging.ERROR)  # the diagnosis is logged at every fit's end
    times: dict[str, list[tuple[float, float]]] = {"plain": [], "gradprobe": []}
    with tempfile.TemporaryDirectory() as store:
        _fit_seconds(True, 1, args.width, store)  # warm-up: imports, first-touch allocations
        for _ in range(args.reps):
            for name in ("plain", "gradprobe"):
                times[name].append(_fit_seconds(name == "gradprobe", args.epochs, args.width, store))
    out: dict[str, float] = {"epochs": args.epochs, "steps": args.epochs * 32, "width": args.width,
                             "reps": args.reps}
    for i, clock in enumerate(("wall", "cpu")):
        plain, probed = (statistics.median(t[i] for t in times[k]) for k in ("plain", "gradprobe"))
        out |= {f"plain_{clock}_s": round(plain, 4), f"gradprobe_{clock}_s": round(probed, 4),
                f"overhead_{clock}": round(probed / plain - 1, 4)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

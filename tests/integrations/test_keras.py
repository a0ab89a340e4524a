"""GradprobeKerasCallback on the seed-001 circles model: records equal a hand-written loop's p.grad and weights."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import make_circles

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere in this process
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip(f"keras was imported with the {keras.backend.backend()!r} backend", allow_module_level=True)

from gradprobe import records as R  # noqa: E402
from gradprobe.errors import GradprobeError  # noqa: E402
from gradprobe.integrations.keras import GradprobeKerasCallback  # noqa: E402
from gradprobe.store.reader import load_run  # noqa: E402

# Keras 3.15's Variable.numpy() (get_weights) calls np.array(copy=False), which numpy 2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BATCH = 32


def circles(n: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """The seed's two circles (float32)."""
    x, y = make_circles(n_samples=n, factor=0.5, noise=0.1, random_state=0)
    return x.astype("float32"), y.astype("float32")


def make_mlp(activation: str, initializer: object, seed: int) -> keras.Model:
    """The seed's make_mlp: 2 -> 4 x Dense(5, activation) -> Dense(1, sigmoid), compiled with RMSprop."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((2,))] + [
        keras.layers.Dense(5, activation, kernel_initializer=initializer) for _ in range(4)] + [
        keras.layers.Dense(1, "sigmoid", kernel_initializer=initializer)])
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["acc"])
    return model


def fit_probed(model: keras.Model, epochs: int, **kwargs: object) -> GradprobeKerasCallback:
    x, y = circles()
    callback = GradprobeKerasCallback(every=1, store=False, **kwargs)
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, callbacks=[callback], verbose=0)
    return callback


def hand_loop(model: keras.Model, epochs: int) -> list[list[dict[str, float]]]:
    """Per step, per trainable variable ``{stat: value}`` from p.grad before Keras's apply and copies around it."""
    x, y = (torch.from_numpy(a) for a in circles())
    optimizer, loss_fn = keras.optimizers.RMSprop(), keras.losses.BinaryCrossentropy()
    variables = model.trainable_weights
    steps = []
    for _ in range(epochs):
        for i in range(0, len(x), BATCH):
            model.zero_grad()
            loss = loss_fn(y[i:i + BATCH, None], model(x[i:i + BATCH], training=True))
            loss.backward()
            grads = [v.value.grad.detach().double().clone() for v in variables]
            before = [v.value.detach().double().clone() for v in variables]
            with torch.no_grad():
                optimizer.apply([v.value.grad for v in variables], variables)
            after = [v.value.detach().double() for v in variables]
            steps.append([{R.NORM: g.norm().item(), R.MEAN_ABS: g.abs().mean().item(),
                           R.MAX_ABS: g.abs().max().item(), R.MEAN: g.mean().item(),
                           R.UPDATE_RATIO: ((a - b).norm() / b.norm()).item()}
                          for g, b, a in zip(grads, before, after)])
    return steps


def test_records_equal_hand_loop_and_weight_copies() -> None:
    init = keras.initializers.RandomNormal(0.0, 1.0)
    probed, reference = make_mlp("sigmoid", init, seed=1), make_mlp("sigmoid", init, seed=1)
    for a, b in zip(probed.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)
    frame = fit_probed(probed, epochs=2).session.probe.frame()
    expected = hand_loop(reference, epochs=2)
    assert frame.step.max() + 1 == len(expected) == 20
    assert sorted(frame.layer.unique()) == ["dense", "dense_1", "dense_2", "dense_3", "dense_4"]
    names = [(v.path.split("/")[-2], v.name) for v in probed.trainable_weights]  # sequential/dense_1/kernel
    checked = 0
    for step, per_var in enumerate(expected):
        rows = frame[frame.step == step]
        for (layer, tensor), stats in zip(names, per_var):
            for stat, value in stats.items():
                kind = R.WEIGHT if stat == R.UPDATE_RATIO else R.GRAD
                got = rows[(rows.layer == layer) & (rows.tensor == tensor) & (rows.kind == kind) & (rows.stat == stat)]
                assert got.value.item() == pytest.approx(value, rel=1e-5, abs=1e-12), (step, layer, tensor, stat)
                checked += 1
    assert checked == 20 * 10 * 5
    for a, b in zip(probed.get_weights(), reference.get_weights()):  # the probe did not change training
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_names_map_to_the_same_torch_layers() -> None:
    """Step 0's gradients equal a torch nn.Sequential's with the Keras weights copied (kernel = weight.T)."""
    model = make_mlp("relu", keras.initializers.RandomNormal(0.0, 1.0), seed=2)
    dense = [layer for layer in model.layers]
    torch_net = torch.nn.Sequential()
    for i, layer in enumerate(dense):
        kernel, bias = (torch.from_numpy(w) for w in layer.get_weights())
        linear = torch.nn.Linear(*kernel.shape)
        with torch.no_grad():
            linear.weight.copy_(kernel.T)
            linear.bias.copy_(bias)
        torch_net.append(linear)
        torch_net.append(torch.nn.ReLU() if i < len(dense) - 1 else torch.nn.Sigmoid())
    x, y = (torch.from_numpy(a[:BATCH]) for a in circles())
    torch.nn.functional.binary_cross_entropy(torch_net(x), y[:, None]).backward()
    frame = fit_probed(model, epochs=1).session.probe.frame()
    grads = frame[(frame.step == 0) & (frame.kind == R.GRAD) & (frame.stat == R.NORM)]
    for layer, linear in zip(dense, torch_net[::2]):
        for tensor, param in (("kernel", linear.weight), ("bias", linear.bias)):
            got = grads[(grads.layer == layer.name) & (grads.tensor == tensor)].value.item()
            assert got == pytest.approx(param.grad.norm().item(), rel=1e-4), (layer.name, tensor)
    acts = frame[(frame.kind == R.ACTIVATION) & (frame.stat == R.DEAD_FRAC)]
    assert set(acts.layer) == {layer.name for layer in dense[:-1]}  # the ReLU family applied through the tap


def test_diagnosis_vanishing_sigmoid_healthy_glorot_relu() -> None:
    sigmoid = fit_probed(make_mlp("sigmoid", keras.initializers.RandomNormal(0.0, 1.0), seed=3), epochs=3)
    relu = fit_probed(make_mlp("relu", "glorot_uniform", seed=3), epochs=3)
    assert sigmoid.diagnosis.verdict == "vanishing"
    assert relu.diagnosis.verdict == "healthy"


def test_shadows_removed_and_refused_settings() -> None:
    model = make_mlp("relu", "glorot_uniform", seed=4)
    fit_probed(model, epochs=1)
    assert "apply" not in vars(model.optimizer) and "call" not in vars(model)
    assert all("call" not in vars(layer) for layer in model.layers)
    model.compile(optimizer=keras.optimizers.SGD(gradient_accumulation_steps=2), loss="binary_crossentropy")
    with pytest.raises(GradprobeError, match="gradient_accumulation_steps: 2"):
        fit_probed(model, epochs=1)


def test_missing_keras_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keras", None)
    monkeypatch.delitem(sys.modules, "gradprobe.integrations.keras")
    with pytest.raises(GradprobeError, match=r"pip install 'gradprobe\[keras\]'"):
        importlib.import_module("gradprobe.integrations.keras")


def test_example_runs(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(EXAMPLES / "keras_callback.py")], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "GRADPROBE_STORE": str(tmp_path)},
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "vanishing" in res.stdout and "dense_1.kernel" in res.stdout
    assert any(tmp_path.rglob("report.html"))


def test_stored_run_has_keras_names_metrics_and_summary(tmp_path: Path) -> None:
    x, y = circles()
    model = make_mlp("relu", "glorot_uniform", seed=5)
    callback = GradprobeKerasCallback(every=2, store=tmp_path)
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, validation_data=(x[:64], y[:64]),
              callbacks=[callback], verbose=0)
    run = load_run(callback.session.run_id, tmp_path)
    metrics = run.metrics()
    assert set(zip(metrics.split, metrics.metric)) == {(R.TRAIN, "loss"), (R.TRAIN, "acc"), (R.TEST, "loss"),
                                                        (R.TEST, "acc")}
    assert sorted(metrics.step.unique()) == [10, 20] and sorted(metrics.epoch.unique()) == [0, 1]
    assert sorted(set(run.frame().step)) == list(range(0, 20, 2))
    assert run.summary["weight_layers"] == [f"{layer.name}.kernel" for layer in model.layers]

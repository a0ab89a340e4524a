"""The spiral preset against an independent NumPy re-run of the CS231n notebook (seed 002).

The oracle below re-implements the notebook's data, initialisation and training loop in NumPy
float64: np.random.seed(0), randn per class, then each network's 0.1 * randn weights in turn,
full-batch gradient descent with the L2 gradient added after the heuristic is recorded.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from gradprobe import records as R
from gradprobe.data.datasets import load_dataset
from gradprobe.train.experiment import load_experiment
from gradprobe.train.runner import run_experiment

N, K, D, H = 100, 3, 2, 50
STEP, REG = 0.1, 1e-3
# The notebook's printed losses at iteration 49 000 (before that iteration's update).
PUBLISHED = {"sigmoid": 0.433092, "relu": 0.114522}


def _notebook_data() -> tuple[np.ndarray, np.ndarray]:
    x, y = np.zeros((N * K, D)), np.zeros(N * K, dtype=np.int64)
    for j in range(K):
        r = np.linspace(0.0, 1, N)
        t = np.linspace(j * 4, (j + 1) * 4, N) + np.random.randn(N) * 0.2
        x[N * j:N * (j + 1)] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[N * j:N * (j + 1)] = j
    return x, y


def _notebook_weights() -> list[np.ndarray]:
    return [0.1 * np.random.randn(D, H), 0.1 * np.random.randn(H, H), 0.1 * np.random.randn(H, K)]


def _notebook_run(kind: str, x: np.ndarray, y: np.ndarray, ws: list[np.ndarray], iters: int) -> dict[str, np.ndarray]:
    """Loss before each update and sum|dW| / sum(shape) of the data-loss gradient of W1, W2, W3."""
    w1, w2, w3 = (w.copy() for w in ws)
    b1, b2, b3 = np.zeros((1, H)), np.zeros((1, H)), np.zeros((1, K))
    n = len(y)
    act = (lambda z: np.maximum(0, z)) if kind == "relu" else (lambda z: 1 / (1 + np.exp(-z)))
    losses, heur = [], []
    for _ in range(iters):
        h1 = act(x @ w1 + b1)
        h2 = act(h1 @ w2 + b2)
        e = np.exp(h2 @ w3 + b3)
        p = e / e.sum(axis=1, keepdims=True)
        losses.append(-np.log(p[range(n), y]).sum() / n
                      + 0.5 * REG * ((w1 * w1).sum() + (w2 * w2).sum() + (w3 * w3).sum()))
        d = p.copy()
        d[range(n), y] -= 1
        d /= n
        dw3, db3 = h2.T @ d, d.sum(0, keepdims=True)
        dh2 = d @ w3.T * ((h2 > 0) if kind == "relu" else h2 * (1 - h2))
        dw2, db2 = h1.T @ dh2, dh2.sum(0)
        dh1 = dh2 @ w2.T * ((h1 > 0) if kind == "relu" else h1 * (1 - h1))
        dw1, db1 = x.T @ dh1, dh1.sum(0)
        heur.append([np.abs(g).sum() / sum(g.shape) for g in (dw1, dw2, dw3)])
        w1, w2, w3 = w1 - STEP * (dw1 + REG * w1), w2 - STEP * (dw2 + REG * w2), w3 - STEP * (dw3 + REG * w3)
        b1, b2, b3 = b1 - STEP * db1, b2 - STEP * db2, b3 - STEP * db3
    return {"loss": np.array(losses), "heur": np.array(heur)}


def _oracle(iters: int) -> dict[str, dict[str, np.ndarray]]:
    np.random.seed(0)
    x, y = _notebook_data()
    sig_w, relu_w = _notebook_weights(), _notebook_weights()  # the notebook's order: sigmoid's, then relu's
    return {"sigmoid": _notebook_run("sigmoid", x, y, sig_w, iters), "relu": _notebook_run("relu", x, y, relu_w, iters)}


def test_cs231n_generator_gives_the_notebook_points_in_order() -> None:
    np.random.seed(0)
    x, y = _notebook_data()
    data = load_dataset(load_experiment("spiral").runs[0].data)
    np.testing.assert_array_equal(data.y_train.numpy(), y)
    np.testing.assert_array_equal(data.x_train.numpy(), x.astype(np.float32))


def test_spiral_losses_and_heuristic_follow_the_notebook_step_by_step() -> None:
    iters = 300
    exp = load_experiment("spiral", [f"train.iterations={iters}", "train.eval_every=1", "record.hist_every=null"])
    oracle = _oracle(iters)
    for result in run_experiment(exp, None):
        ref = oracle[result.config.arm]
        m = result.metrics
        loss = m[(m.split == R.TRAIN) & (m.metric == R.LOSS)].sort_values("step")
        # x is stored as float32 (the notebook's float64 points rounded): relative 1e-7 drift at most
        np.testing.assert_allclose(loss.value.to_numpy()[:iters], ref["loss"], rtol=2e-7)
        f = result.frame
        heur = f[(f.kind == R.GRAD) & (f.stat == R.SUM_ABS_PER_SHAPE)]
        got = heur.pivot(index="step", columns="layer", values="value")[["layers.0", "layers.2", "layers.4"]]
        np.testing.assert_allclose(got.to_numpy(), ref["heur"], rtol=1e-5)
        assert result.summary["grad_of"] == "data_loss"


@pytest.mark.slow
def test_spiral_preset_reproduces_the_published_losses() -> None:
    start = time.perf_counter()
    exp = load_experiment("spiral", ["record.every=1000", "record.hist_every=null"])  # records do not change training
    for result in run_experiment(exp, None):
        m = result.metrics
        loss = m[(m.split == R.TRAIN) & (m.metric == R.LOSS)].set_index("step").value
        # the notebook prints 6 digits, which its own NumPy reproduces (0.4330925, 0.1145216)
        assert round(float(loss[49_000]), 6) == PUBLISHED[result.config.arm]
    assert time.perf_counter() - start < 150

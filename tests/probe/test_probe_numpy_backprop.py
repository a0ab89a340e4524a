"""The probe's numbers for an MLP against a hand-written NumPy forward and backward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.probe import Probe


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_mlp(x, y, weights, biases):
    """Forward/backward of Linear-sigmoid-Linear-tanh-Linear with softmax cross-entropy (mean over batch)."""
    h0 = x @ weights[0].T + biases[0]
    a0 = sigmoid(h0)
    h1 = a0 @ weights[1].T + biases[1]
    a1 = np.tanh(h1)
    logits = a1 @ weights[2].T + biases[2]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n = x.shape[0]
    d_logits = (p - np.eye(p.shape[1])[y]) / n
    d_a1 = d_logits @ weights[2]
    d_h1 = d_a1 * (1 - a1**2)
    d_a0 = d_h1 @ weights[1]
    d_h0 = d_a0 * a0 * (1 - a0)
    grads = {
        "4.weight": d_logits.T @ a1, "4.bias": d_logits.sum(0),
        "2.weight": d_h1.T @ a0, "2.bias": d_h1.sum(0),
        "0.weight": d_h0.T @ x, "0.bias": d_h0.sum(0),
    }
    outputs = {"0": h0, "1": a0, "2": h1, "3": a1, "4": logits}
    deltas = {"0": d_h0, "1": d_a0, "2": d_h1, "3": d_a1, "4": d_logits}
    return grads, outputs, deltas


def test_mlp_matches_numpy_backprop():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.Sigmoid(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    x = torch.randn(20, 5, dtype=torch.float64)
    y = torch.randint(0, 4, (20,))
    weights = [model[i].weight.detach().numpy().copy() for i in (0, 2, 4)]
    biases = [model[i].bias.detach().numpy().copy() for i in (0, 2, 4)]
    grads, outputs, deltas = numpy_mlp(x.numpy(), y.numpy(), weights, biases)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(model, opt) as probe:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    f = probe.frame().set_index(["layer", "tensor", "kind", "stat"]).value
    for name, g in grads.items():
        layer, tensor = name.split(".")
        assert f[layer, tensor, R.GRAD, R.MEAN_ABS] == pytest.approx(np.abs(g).mean(), rel=1e-5)
        assert f[layer, tensor, R.GRAD, R.NORM] == pytest.approx(np.linalg.norm(g), rel=1e-5)
        assert f[layer, tensor, R.GRAD, R.MEAN] == pytest.approx(g.mean(), rel=1e-4, abs=1e-8)
    for layer, out in outputs.items():
        assert f[layer, "output", R.ACTIVATION, R.MEAN] == pytest.approx(out.mean(), rel=1e-5, abs=1e-9)
        assert f[layer, "output", R.ACTIVATION, R.STD] == pytest.approx(out.std(ddof=1), rel=1e-4)
    for layer, d in deltas.items():
        assert f[layer, "output", R.DELTA, R.MEAN_ABS] == pytest.approx(np.abs(d).mean(), rel=1e-5)
        assert f[layer, "output", R.DELTA, R.NORM] == pytest.approx(np.linalg.norm(d), rel=1e-5)
    sat = ((outputs["1"] <= 0.01) | (outputs["1"] >= 0.99)).mean()
    assert f["1", "output", R.ACTIVATION, R.SATURATED_FRAC] == pytest.approx(sat)
    tanh_sat = (np.abs(outputs["3"]) >= 0.98).mean()  # within 1% of the range (2) of +-1
    assert f["3", "output", R.ACTIVATION, R.SATURATED_FRAC] == pytest.approx(tanh_sat)


def test_inplace_relu_delta_and_dead_units():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(inplace=True), nn.Linear(6, 1))
    with torch.no_grad():
        model[0].bias[:2] = -100.0  # two units are dead for every input
    x = torch.randn(10, 3)
    w0, b0 = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
    w1 = model[2].weight.detach().numpy()
    h = x.numpy() @ w0.T + b0
    d_out = np.ones((10, 1)) / 10  # d mean(output) / d output
    d_relu = d_out @ w1
    d_h = d_relu * (h > 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(model, opt) as probe:
        opt.zero_grad()
        model(x).mean().backward()  # full backward hooks would raise on this in-place ReLU
        opt.step()
    f = probe.frame().set_index(["layer", "tensor", "kind", "stat"]).value
    assert f["0", "output", R.DELTA, R.MEAN_ABS] == pytest.approx(np.abs(d_h).mean(), rel=1e-5)
    assert f["1", "output", R.DELTA, R.MEAN_ABS] == pytest.approx(np.abs(d_relu).mean(), rel=1e-5)
    assert f["0", "output", R.ACTIVATION, R.MEAN] == pytest.approx(h.mean(), rel=1e-5)  # before the in-place op
    dead = (np.maximum(h, 0).max(0) <= 0).mean()
    assert dead >= 2 / 6
    assert f["1", "output", R.ACTIVATION, R.DEAD_FRAC] == pytest.approx(dead)

"""The sigmoid-decay preset against the seed's NumPy (seed 003): grid, tangent and chained product."""

from __future__ import annotations

import numpy as np

from gradprobe.theory import activation_curve, decay_chains
from gradprobe.train.experiment import load_experiment


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1 / (1 + np.exp(-x))


def test_sigmoid_decay_preset_matches_the_seed() -> None:
    cfg = load_experiment("sigmoid-decay").config.decay
    assert cfg is not None
    curve = activation_curve(cfg.activations[0], cfg.interval, cfg.points, cfg.tangent_at, cfg.tangent_span)
    x = np.linspace(-5, 5, 100)
    s = _sigmoid(x)
    np.testing.assert_allclose(curve["x"], x, rtol=0, atol=1e-15)
    np.testing.assert_allclose(curve["f"], s, rtol=1e-14)
    np.testing.assert_allclose(curve["df"], s * (1 - s), rtol=1e-12)
    x_tan, span = 0, 1.7
    data_tan = np.linspace(x_tan - span, x_tan + span)
    y_tan = _sigmoid(x_tan)
    tan = y_tan + y_tan * (1 - y_tan) * (data_tan - x_tan)
    np.testing.assert_allclose(curve["tangent_x"], data_tan, rtol=0, atol=1e-15)
    np.testing.assert_allclose(curve["tangent"], tan, rtol=1e-14)
    chains = decay_chains(cfg.activations, cfg.x, cfg.steps)
    grad = _sigmoid(0.0) * (1 - _sigmoid(0.0))
    assert [(c["activation"], c["x"]) for c in chains] == [("sigmoid", 0.0)]
    np.testing.assert_allclose(chains[0]["products"], [grad ** n for n in range(1, 7)], rtol=1e-15)
    assert chains[0]["products"][-1] == 0.000244140625  # the seed's printed step 6

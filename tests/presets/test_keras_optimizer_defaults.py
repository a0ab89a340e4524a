"""The Keras presets step as Keras's default RMSprop does (seed 001), checked against a NumPy RMSprop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradprobe.train import setup
from gradprobe.train.experiment import load_experiment


def _keras_rmsprop(w: np.ndarray, grads: list[np.ndarray]) -> np.ndarray:
    """tf.keras RMSprop(), momentum 0: rms = 0.9 rms + 0.1 g^2; w -= 0.001 g / (sqrt(rms) + 1e-7)."""
    rms = np.zeros_like(w)
    for g in grads:
        rms = 0.9 * rms + 0.1 * g * g
        w = w - 0.001 * g / (np.sqrt(rms) + 1e-7)
    return w


@pytest.mark.parametrize("preset", ["circles-deep", "circles-glorot"])
def test_rmsprop_presets_step_like_keras_defaults(preset: str) -> None:
    cfg = load_experiment(preset).runs[0].optimizer
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5, 5))
    grads = [rng.normal(scale=10.0 ** -k, size=(5, 5)) for k in (1, 3, 5, 7, 6, 2)]  # tiny ones expose epsilon
    param = torch.nn.Parameter(torch.tensor(w0))
    opt = setup.build_optimizer(cfg, torch.nn.ParameterList([param]))
    for g in grads:
        param.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(param.detach().numpy(), _keras_rmsprop(w0, grads), rtol=1e-12, atol=0)


@pytest.mark.parametrize("preset, eps", [("circles-shallow", 1e-7), ("mnist-deep", 1e-8)])
def test_adam_presets_use_the_seed_epsilon(preset: str, eps: float) -> None:
    for run in load_experiment(preset).runs:
        opt = setup.build_optimizer(run.optimizer, torch.nn.Linear(2, 2))
        assert opt.defaults["eps"] == eps and opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["lr"] == 1e-3

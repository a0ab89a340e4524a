"""The erf activation against scipy.special.erf and the derivative 2/sqrt(pi) exp(-x^2) written in NumPy."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special

from gradprobe.models import build_mlp
from gradprobe.models.activations import Erf, activation_spec
from gradprobe.models.config import ModelConfig

X = np.concatenate([np.linspace(-6.0, 6.0, 1201), [0.0, 1e-9, -1e-9, 30.0, -30.0]])


def test_erf_forward_matches_scipy() -> None:
    spec = activation_spec("erf")
    assert spec.fn is not None
    x = torch.tensor(X, dtype=torch.float64)
    np.testing.assert_allclose(spec.fn(x).numpy(), special.erf(X), rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(spec.module()(x).numpy(), special.erf(X), rtol=1e-14, atol=1e-16)
    assert type(spec.module()) is Erf


def test_erf_derivative_matches_numpy_and_autograd() -> None:
    spec = activation_spec("erf")
    assert spec.derivative is not None
    x = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    expected = 2 / math.sqrt(math.pi) * np.exp(-X**2)
    np.testing.assert_allclose(spec.derivative(x.detach()).numpy(), expected, rtol=1e-14, atol=0)
    (grad,) = torch.autograd.grad(Erf()(x).sum(), x)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-14, atol=0)
    # central difference of scipy's erf: the derivative is of the function, not merely a formula
    h = 1e-6
    fd = (special.erf(X + h) - special.erf(X - h)) / (2 * h)
    np.testing.assert_allclose(spec.derivative(x.detach()).numpy(), fd, rtol=1e-7, atol=1e-9)


def test_mlp_with_erf_puts_erf_between_layers() -> None:
    model = build_mlp(2, 1, ModelConfig(depth=2, width=3, activation="erf"), torch.Generator().manual_seed(0))
    assert [type(m).__name__ for m in model.layers] == ["Linear", "Erf", "Linear", "Erf", "Linear"]
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    h = special.erf((x @ model.layers[0].weight.T + model.layers[0].bias).detach().numpy())
    np.testing.assert_allclose(model.layers[1](model.layers[0](x)).detach().numpy(), h, rtol=1e-6, atol=1e-7)

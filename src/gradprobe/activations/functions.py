"""Constants and closed-form derivatives of the registered activations, each written once.

At kinks the derivatives follow torch's autograd convention (relu'(0) = 0, leaky_relu'(0) = alpha,
hard_sigmoid'(+-3) = 0) so they match ``torch.autograd`` exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["ERF_SLOPE", "HARD_SIGMOID_EDGE", "SELU_ALPHA", "SELU_SCALE", "SOFTPLUS_BETA", "SOFTPLUS_THRESHOLD",
           "d_elu", "d_erf", "d_gelu", "d_hard_sigmoid", "d_leaky_relu", "d_relu", "d_selu", "d_sigmoid", "d_silu",
           "d_softplus", "d_tanh", "ones"]

SELU_ALPHA = 1.6732632423543772848170429916717  # torch's nn.SELU: selu = SELU_SCALE * elu(x, SELU_ALPHA)
SELU_SCALE = 1.0507009873554804934193349852946
SOFTPLUS_BETA = 1.0  # nn.Softplus defaults
SOFTPLUS_THRESHOLD = 20.0  # nn.Softplus returns x itself above this, so its slope jumps to exactly 1
ERF_SLOPE = 2 / math.sqrt(math.pi)  # erf'(0); erf'(z) = ERF_SLOPE * exp(-z^2), torch.erf's autograd formula
HARD_SIGMOID_EDGE = 3.0  # hardsigmoid = x/6 + 1/2 on (-3, 3), flat outside


def ones(x: Tensor) -> Tensor:
    """Slope of the identity: 1 everywhere (same shape)."""
    return torch.ones_like(x)


def d_sigmoid(x: Tensor) -> Tensor:
    """sigmoid'(x) = s (1 - s)."""
    s = torch.sigmoid(x)
    return s * (1 - s)


def d_tanh(x: Tensor) -> Tensor:
    """tanh'(x) = 1 - tanh(x)^2."""
    t = torch.tanh(x)
    return 1 - t * t


def d_erf(x: Tensor) -> Tensor:
    """erf'(x) = 2/sqrt(pi) exp(-x^2)."""
    return ERF_SLOPE * torch.exp(-x * x)


def d_relu(x: Tensor) -> Tensor:
    """relu'(x): 1 for x > 0, else 0."""
    return (x > 0).to(x.dtype)


def d_leaky_relu(x: Tensor, alpha: float) -> Tensor:
    """leaky_relu'(x): 1 for x > 0, else alpha."""
    return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, alpha))


def d_elu(x: Tensor, alpha: float) -> Tensor:
    """elu'(x): 1 for x > 0, else alpha exp(x)."""
    # clamp first so exp never overflows on the branch that where() discards
    return torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(x.clamp(max=0)))


def d_selu(x: Tensor) -> Tensor:
    """selu'(x) = SELU_SCALE elu'(x; SELU_ALPHA)."""
    return SELU_SCALE * d_elu(x, SELU_ALPHA)


def d_gelu(x: Tensor) -> Tensor:
    """gelu'(x) = Phi(x) + x phi(x) (exact, not the tanh approximation)."""
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    pdf = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return cdf + x * pdf


def d_silu(x: Tensor) -> Tensor:
    """silu'(x) = s (1 + x (1 - s)), s = sigmoid(x)."""
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def d_softplus(x: Tensor) -> Tensor:
    """softplus'(x) = sigmoid(x), exactly 1 above torch's threshold."""
    return torch.where(x > SOFTPLUS_THRESHOLD, torch.ones_like(x), torch.sigmoid(x))


def d_hard_sigmoid(x: Tensor) -> Tensor:
    """hardsigmoid'(x): 1/6 on the open interval (-3, 3), else 0."""
    return ((x > -HARD_SIGMOID_EDGE) & (x < HARD_SIGMOID_EDGE)).to(x.dtype) / 6

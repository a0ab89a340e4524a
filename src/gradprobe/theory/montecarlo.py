"""Finite-width Monte Carlo check of the mean-field gradient ratio chi^(L-l).

Each sample is a fresh random MLP of width N and L pre-activation layers
``h^{l+1} = W^{l+1} phi(h^l) + b^{l+1}`` with ``W_ij ~ N(0, sigma_w^2 / N)``, ``b_i ~ N(0, sigma_b^2)``
and ``h^1 ~ N(0, q)``. A random unit vector ``u`` at ``h^L`` is back-propagated by explicit
products ``delta^l = phi'(h^l) * (W^{l+1})^T delta^{l+1}``, so ``||delta^l||^2 = ||J_l^T u||^2`` with
``J_l = dh^L / dh^l``; its mean over u is ``||J_l||_F^2 / N`` (Pennington et al. 2017 study the full
spectrum of J). This is plain tensor algebra on sampled matrices, not autograd on a user model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gradprobe.errors import GradprobeError
from gradprobe.theory.meanfield import elementwise

__all__ = ["MonteCarloConfig", "MonteCarloResult", "backprop_sq_norms", "monte_carlo_ratio"]

_Fn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class MonteCarloConfig:
    """Size of the Monte Carlo estimate."""

    width: int  # N, units per layer
    depth: int  # L, pre-activation layers h^1 .. h^L
    samples: int = 32  # M, independent random networks (the standard error is over these)
    probes: int = 8  # inputs h^1 (each with its own unit vector u) per network
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate the sizes.

        Raises:
            GradprobeError: If a size is out of range.
        """
        for field, value, low in (("width", self.width, 1), ("depth", self.depth, 1),
                                  ("mc_samples", self.samples, 2), ("probes", self.probes, 1),
                                  ("seed", self.seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise GradprobeError(
                    f"theory.{field}: {value!r} is out of range; allowed: integers >= {low}"
                )


@dataclass(frozen=True)
class MonteCarloResult:
    """Mean over networks of ``||delta^l||^2 / ||delta^L||^2`` per layer, with its standard error."""

    samples: int
    width: int
    per_layer_ratio: tuple[float, ...]  # (L,), layer 1 first; the last is 1
    stderr: tuple[float, ...]  # (L,), sample std over networks / sqrt(samples)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: ``{"samples", "width", "per_layer_ratio", "stderr"}``."""
        return {"samples": self.samples, "width": self.width,
                "per_layer_ratio": list(self.per_layer_ratio), "stderr": list(self.stderr)}


def backprop_sq_norms(derivative: _Fn, weights: list[Tensor], pre: list[Tensor], u: Tensor) -> Tensor:
    """Squared norms of ``u`` back-propagated from the last pre-activation layer to each layer.

    Args:
        derivative: Elementwise ``phi'``.
        weights: ``W^2 .. W^L``, each ``(N, N)`` (out, in), as in ``h^{l+1} = W^{l+1} phi(h^l) + b``.
        pre: Pre-activations ``h^1 .. h^L``, each ``(K, N)`` for K inputs.
        u: Errors at ``h^L``, ``(K, N)``.

    Returns:
        ``(L, K)`` tensor of ``||delta^l||^2``, layer 1 first (the last row is ``||u||^2``).
    """
    delta = u  # (K, N)
    norms = [delta.square().sum(-1)]
    for weight, h in zip(reversed(weights), reversed(pre[:-1])):
        delta = derivative(h) * (delta @ weight)  # (K, N): phi'(h^l) * (W^{l+1})^T delta^{l+1}
        norms.append(delta.square().sum(-1))
    return torch.stack(norms[::-1])  # (L, K)


def _one_network(
    fn: _Fn, derivative: _Fn, scales: tuple[float, float, float], cfg: MonteCarloConfig,
    gen: torch.Generator,
) -> Tensor:
    """Sample one network and ``cfg.probes`` inputs; return the mean ``||delta^l||^2`` per layer.

    Args:
        fn: Elementwise ``phi``.
        derivative: Elementwise ``phi'``.
        scales: Standard deviations ``(sqrt(q), sigma_w / sqrt(N), sigma_b)``.
        cfg: Width, depth and probe count.
        gen: Source of randomness.

    Returns:
        ``(L,)`` tensor, layer 1 first; the last entry is 1 because u has unit norm.
    """
    n, k = cfg.width, cfg.probes
    input_std, weight_std, bias_std = scales
    def normal(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    pre = [input_std * normal(k, n)]  # h^1: (K, N)
    weights = []
    for _ in range(cfg.depth - 1):
        weight = weight_std * normal(n, n)  # (N, N)
        bias = bias_std * normal(n)  # (N,)
        pre.append(fn(pre[-1]) @ weight.T + bias)  # (K, N)
        weights.append(weight)
    u = normal(k, n)
    u = u / u.norm(dim=-1, keepdim=True)  # (K, N), unit rows
    return backprop_sq_norms(derivative, weights, pre, u).mean(-1)  # (L,)


def monte_carlo_ratio(
    activation: str, sigma_w2: float, sigma_b2: float, q: float, cfg: MonteCarloConfig
) -> MonteCarloResult:
    """Estimate ``E||delta^l||^2 / E||delta^L||^2`` over random networks of finite width.

    Args:
        activation: Elementwise activation spec.
        sigma_w2: ``N * Var(W_ij)``, >= 0.
        sigma_b2: ``Var(b_i)``, >= 0.
        q: Variance of the first pre-activation (q* to compare with chi^(L-l)); a finite number.
        cfg: Width, depth, number of networks, probes and seed.

    Returns:
        Per-layer mean over networks and its standard error (std with ddof 1 / sqrt(M)).
        Overflowing products are kept as inf/nan: they are data, not errors.

    Raises:
        GradprobeError: On a bad activation or a negative or non-finite variance.
    """
    spec = elementwise(activation)
    fn, derivative = spec.fn, spec.derivative
    assert fn is not None and derivative is not None  # elementwise() checked them
    if not all(math.isfinite(v) and v >= 0 for v in (sigma_w2, sigma_b2, q)):
        raise GradprobeError(
            f"theory.monte_carlo: sigma_w2={sigma_w2!r}, sigma_b2={sigma_b2!r}, q={q!r}; "
            "allowed: finite numbers >= 0"
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    scales = (math.sqrt(q), math.sqrt(sigma_w2 / cfg.width), math.sqrt(sigma_b2))
    per_net = torch.stack(
        [_one_network(fn, derivative, scales, cfg, gen) for _ in range(cfg.samples)]
    )  # (M, L)
    mean = per_net.mean(0)  # (L,)
    stderr = per_net.std(0, correction=1) / math.sqrt(cfg.samples)  # (L,)
    return MonteCarloResult(cfg.samples, cfg.width, tuple(mean.tolist()), tuple(stderr.tolist()))

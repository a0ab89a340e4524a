"""Monte Carlo gradient ratios: explicit backprop vs torch.autograd / jacrev, and vs mean field."""

from __future__ import annotations

import math

import pytest
import torch

from gradprobe import theory
from gradprobe.models import activation_spec
from gradprobe.theory.montecarlo import MonteCarloConfig, backprop_sq_norms, monte_carlo_ratio


def _random_net(n: int, depth: int, k: int, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(n, n, generator=gen, dtype=torch.float64) / math.sqrt(n) for _ in range(depth - 1)]
    biases = [0.1 * torch.randn(n, generator=gen, dtype=torch.float64) for _ in range(depth - 1)]
    h1 = torch.randn(k, n, generator=gen, dtype=torch.float64)
    return weights, biases, h1


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_backprop_sq_norms_match_autograd(activation: str) -> None:
    spec = activation_spec(activation)
    weights, biases, h1 = _random_net(n=7, depth=4, k=3, seed=1)
    h1 = h1.requires_grad_(True)
    pre = [h1]
    for w, b in zip(weights, biases):
        h = spec.fn(pre[-1]) @ w.T + b
        h.retain_grad()
        pre.append(h)
    u = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (pre[-1] * u).sum().backward()
    expected = torch.stack([h.grad.square().sum(-1) for h in pre])  # (L, K)
    got = backprop_sq_norms(spec.derivative, weights, [h.detach() for h in pre], u)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_mean_over_unit_vectors_is_frobenius_norm_of_jacobian() -> None:
    spec = activation_spec("tanh")
    weights, biases, h1 = _random_net(n=6, depth=3, k=1, seed=3)

    def forward(x: torch.Tensor) -> torch.Tensor:  # h^1 -> h^L, (N,) -> (N,)
        for w, b in zip(weights, biases):
            x = torch.tanh(x) @ w.T + b
        return x

    jac = torch.func.jacrev(forward)(h1[0])  # (N, N) = dh^L / dh^1
    pre = [h1[0]]
    for w, b in zip(weights, biases):
        pre.append(torch.tanh(pre[-1]) @ w.T + b)
    # averaging over an orthonormal basis of u is exactly ||J||_F^2 / N
    basis = torch.eye(6, dtype=torch.float64)  # (K=N, N)
    norms = backprop_sq_norms(spec.derivative, weights, [p.expand(6, 6) for p in pre], basis)
    assert norms[0].mean().item() == pytest.approx(jac.square().sum().item() / 6, rel=1e-12)


@pytest.mark.parametrize(("activation", "sigma_w2"), [("tanh", 1.5), ("relu", 2.0)])
def test_monte_carlo_agrees_with_mean_field_for_wide_networks(activation: str, sigma_w2: float) -> None:
    result = theory.predict(activation, sigma_w2, depth=5, width=512, mc_samples=24, seed=0)
    mc = result.monte_carlo
    assert mc is not None and mc.width == 512 and mc.samples == 24
    for predicted, mean, se in zip(result.per_layer_ratio[:-1], mc.per_layer_ratio, mc.stderr):
        assert 0 < se < 0.05 * mean  # the check is sharp: a few percent
        assert abs(mean - predicted) <= 3 * se
    assert mc.per_layer_ratio[-1] == pytest.approx(1.0, rel=1e-12)


def test_monte_carlo_tells_a_wrong_chi_apart() -> None:
    # the same networks measured against sigmoid's chi: a mismatch far beyond 3 standard errors
    right = theory.predict("tanh", 1.5, depth=4, width=256, mc_samples=16)
    wrong_chi = theory.chi("sigmoid", 1.5)
    mean, se = right.monte_carlo.per_layer_ratio[0], right.monte_carlo.stderr[0]
    assert abs(mean - wrong_chi**3) > 10 * se


def test_standard_error_matches_spread_over_seeds() -> None:
    means, ses = [], []
    for seed in range(12):
        r = monte_carlo_ratio("tanh", 1.5, 0.0, theory.q_star("tanh", 1.5).q,
                              MonteCarloConfig(width=32, depth=4, samples=16, probes=2, seed=seed))
        means.append(r.per_layer_ratio[0])
        ses.append(r.stderr[0])
    spread = torch.tensor(means, dtype=torch.float64).std().item()
    typical_se = sum(ses) / len(ses)
    assert 0.5 < spread / typical_se < 2.0


def test_same_seed_same_estimate() -> None:
    a = theory.predict("relu", 2.0, depth=3, width=16, mc_samples=4, seed=7).to_dict()
    b = theory.predict("relu", 2.0, depth=3, width=16, mc_samples=4, seed=7).to_dict()
    c = theory.predict("relu", 2.0, depth=3, width=16, mc_samples=4, seed=8).to_dict()
    assert a == b and a["monte_carlo"] != c["monte_carlo"]
    assert set(a["monte_carlo"]) == {"samples", "width", "per_layer_ratio", "stderr"}

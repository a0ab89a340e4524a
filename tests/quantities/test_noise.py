"""Gradient SNR and the simple noise scale against per-example gradients from a loop over single examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe.quantities import (
    gradient_snr,
    noise_scale_from_microbatches,
    per_example_grads,
    simple_noise_scale,
)
from gradprobe.quantities.noise import MODEL_KEY

N = 24  # examples in the fixed dataset


def _setup(seed: int = 0, task: str = "classify") -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """A 4-8-3 tanh MLP in float64 and a fixed dataset of N examples."""
    torch.manual_seed(seed)
    out = 3 if task == "classify" else 1
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, out)).double()
    x = torch.randn(N, 4, dtype=torch.float64)
    if task == "classify":
        return model, nn.CrossEntropyLoss(), x, torch.randint(0, 3, (N,))
    return model, nn.MSELoss(), x, torch.randn(N, 1, dtype=torch.float64)


def _loop_grads(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """Oracle: ``{name: (N, D)}`` per-example gradients from p.grad, one backward per example."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    rows: dict[str, list[np.ndarray]] = {n: [] for n, _ in named}
    for i in range(x.shape[0]):
        model.zero_grad()
        loss_fn(model(x[i:i + 1]), y[i:i + 1]).backward()
        for n, p in named:
            assert p.grad is not None
            rows[n].append(p.grad.detach().numpy().ravel().copy())
    model.zero_grad(set_to_none=True)
    return {n: np.stack(r) for n, r in rows.items()}


def _population(g: np.ndarray) -> tuple[float, float]:
    """``(|G|^2, tr(Sigma))`` of per-example gradients ``(N, D)``: ||mean||^2 and mean ||g_i - mean||^2."""
    mean = g.mean(0)
    return float(mean @ mean), float(((g - mean) ** 2).sum(1).mean())


@pytest.mark.parametrize("task", ["classify", "regress"])
def test_per_example_grads_match_the_loop(task: str) -> None:
    model, loss_fn, x, y = _setup(1, task)
    want = _loop_grads(model, loss_fn, x, y)
    got = per_example_grads(model, loss_fn, x, y)
    assert list(got) == list(want)
    for name, g in got.items():
        np.testing.assert_allclose(g.reshape(N, -1).numpy(), want[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("task", ["classify", "regress"])
def test_gradient_snr_matches_the_loop(task: str) -> None:
    model, loss_fn, x, y = _setup(2, task)
    model[0].bias.requires_grad_(False)  # frozen parameters are not reported
    want = {n: np.divide(*_population(g)) for n, g in _loop_grads(model, loss_fn, x, y).items()}
    got = gradient_snr(model, loss_fn, x, y)
    assert list(got) == ["0.weight", "2.weight", "2.bias"]
    np.testing.assert_allclose([got[n] for n in want], list(want.values()), rtol=1e-9)


def test_gradient_snr_of_identical_examples_is_infinite() -> None:
    model, loss_fn, x, y = _setup(3)
    got = gradient_snr(model, loss_fn, x[:1].repeat(4, 1), y[:1].repeat(4))  # a mean of 4 copies is exact
    assert all(v == float("inf") for v in got.values())
    got = gradient_snr(model, loss_fn, x[:1].repeat(5, 1), y[:1].repeat(5))  # rounding leaves ~eps deviations
    assert all(v > 1e20 for v in got.values())


def test_gradient_snr_needs_two_examples() -> None:
    model, loss_fn, x, y = _setup()
    with pytest.raises(ValueError, match="at least 2"):
        gradient_snr(model, loss_fn, x[:1], y[:1])


def test_simple_noise_scale_inverts_exact_expectations() -> None:
    model, loss_fn, x, y = _setup(4)
    grad_sq, trace = _population(np.concatenate(list(_loop_grads(model, loss_fn, x, y).values()), axis=1))
    b_small, b_big = 3, 12
    expected = [grad_sq + trace / b for b in (b_small, b_big)]  # E|G_b|^2 for b i.i.d. examples
    b_simple, g2, s = simple_noise_scale(expected[0], expected[1], b_small, b_big)
    assert (g2, s, b_simple) == pytest.approx((grad_sq, trace, trace / grad_sq), rel=1e-12)
    # elementwise on tensors, e.g. per-layer vectors
    t = simple_noise_scale(torch.tensor([expected[0], 2.0], dtype=torch.float64),
                           torch.tensor([expected[1], 1.0], dtype=torch.float64), b_small, b_big)
    assert float(t[1][0]) == pytest.approx(grad_sq, rel=1e-12)


@pytest.mark.parametrize(("b_small", "b_big"), [(0, 4), (4, 4), (8, 4)])
def test_simple_noise_scale_rejects_bad_sizes(b_small: int, b_big: int) -> None:
    with pytest.raises(ValueError, match="0 < b_small < b_big"):
        simple_noise_scale(1.0, 0.5, b_small, b_big)


def test_microbatch_helper_matches_the_hand_estimator() -> None:
    model, loss_fn, x, y = _setup(5)
    per = _loop_grads(model, loss_fn, x, y)
    idx = torch.randint(0, N, (4, 3), generator=torch.Generator().manual_seed(0))  # K=4 micro-batches of b=3
    got = noise_scale_from_microbatches(model, loss_fn, [(x[i], y[i]) for i in idx])
    assert all(p.grad is None for p in model.parameters())
    small, big = {}, {}
    for name, g in per.items():
        micro = np.stack([g[i.numpy()].mean(0) for i in idx])  # (K, D) micro-batch gradients
        small[name] = float((micro**2).sum(1).mean())
        big[name] = float((micro.mean(0) ** 2).sum())
    small[MODEL_KEY], big[MODEL_KEY] = sum(small.values()), sum(big.values())
    assert list(got) == [*per, MODEL_KEY]
    for name in got:
        want = simple_noise_scale(small[name], big[name], 3, 12)
        assert tuple(got[name]) == pytest.approx(want, rel=1e-9)


def test_microbatch_estimates_converge_to_the_population() -> None:
    model, loss_fn, x, y = _setup(6)
    per = _loop_grads(model, loss_fn, x, y)
    want = {n: _population(g) for n, g in per.items()}
    want[MODEL_KEY] = _population(np.concatenate(list(per.values()), axis=1))
    gen = torch.Generator().manual_seed(1)
    draws = []
    naive = []  # ||G_big||^2 itself, biased up by tr(Sigma) / 8: the test must be able to tell it apart
    for _ in range(1500):  # each draw: K=4 micro-batches of b=2, sampled with replacement
        idx = torch.randint(0, N, (4, 2), generator=gen)
        draws.append(noise_scale_from_microbatches(model, loss_fn, [(x[i], y[i]) for i in idx]))
        naive.append(float(sum(((per[n][idx.reshape(-1).numpy()].mean(0)) ** 2).sum() for n in per)))
    naive_err = abs(np.mean(naive) - want[MODEL_KEY][0]) / (np.std(naive, ddof=1) / np.sqrt(len(naive)))
    assert naive_err > 10
    for name, (grad_sq, trace) in want.items():
        for part, truth in (("grad_sq", grad_sq), ("trace_sigma", trace)):
            est = np.array([getattr(d[name], part) for d in draws])
            stderr = est.std(ddof=1) / np.sqrt(len(est))
            assert abs(est.mean() - truth) < 4 * stderr, (name, part, est.mean(), truth, stderr)


@pytest.mark.parametrize("sizes", [[3], [3, 2]])
def test_microbatch_sizes_are_validated(sizes: list[int]) -> None:
    model, loss_fn, x, y = _setup()
    with pytest.raises(ValueError, match="same size"):
        noise_scale_from_microbatches(model, loss_fn, [(x[:s], y[:s]) for s in sizes])

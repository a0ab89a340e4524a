"""B_simple from gradient-accumulation micro-batches, against the estimator by hand from per-example gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.errors import GradprobeError
from gradprobe.noise_scale import micro_batch_noise
from gradprobe.probe import Probe

K, B = 4, 8  # micro-batches per step, examples per micro-batch


def make() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3))


def per_example(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """``{name: (N, numel)}`` float64 gradients of each example's loss alone, one backward per example."""
    rows: dict[str, list[np.ndarray]] = {n: [] for n, _ in model.named_parameters()}
    for xi, yi in zip(x, y):
        model.zero_grad()
        nn.functional.cross_entropy(model(xi[None]), yi[None]).backward()
        for n, p in model.named_parameters():
            rows[n].append(p.grad.double().numpy().ravel().copy())
    model.zero_grad()
    return {n: np.stack(r) for n, r in rows.items()}


def by_hand(grads: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """McCandlish et al.'s estimator from per-example gradients in K micro-batches of B, per tensor and model."""
    small, big = {}, {}
    for n, g in grads.items():
        micro = g.reshape(K, B, -1).mean(1)  # (K, numel): each micro-batch's mean gradient
        small[n] = float((micro**2).sum(1).mean())
        big[n] = float((micro.mean(0) ** 2).sum())
    small[""], big[""] = sum(small.values()), sum(big.values())
    out = {}
    for n in small:
        g2 = (K * B * big[n] - B * small[n]) / (K * B - B)
        tr = (small[n] - big[n]) / (1 / B - 1 / (K * B))
        out[n] = {R.B_SIMPLE: tr / g2, R.GRAD_SQ: g2, R.TRACE_SIGMA: tr, R.GRAD_SQ_SMALL: small[n],
                  R.GRAD_SQ_BIG: big[n], R.B_SMALL: B, R.B_BIG: K * B}
    return out


def test_micro_batch_noise_matches_per_example_estimator() -> None:
    model = make()
    reference = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(3)
    expected = []
    with Probe(model, opt, every=2) as probe:
        noise = micro_batch_noise(probe, B)
        for _ in range(4):
            x, y = torch.randn(K * B, 5, generator=g), torch.randint(0, 3, (K * B,), generator=g)
            expected.append(by_hand(per_example(reference, x, y)))
            ref_opt.zero_grad()
            nn.functional.cross_entropy(reference(x), y).backward()
            ref_opt.step()
            opt.zero_grad()
            for k in range(K):  # gradient accumulation, each loss averaged over K
                part = slice(k * B, (k + 1) * B)
                (nn.functional.cross_entropy(model(x[part]), y[part]) / K).backward()
            opt.step()
        noise.detach()
    frame = probe.frame()
    rows = frame[frame.kind == R.NOISE]
    assert sorted(set(rows.step)) == [0, 2]  # the probe's cadence
    assert set(rows.stat) == set(R.NOISE_STATS)
    for step in (0, 2):
        for (layer, tensor), group in rows[rows.step == step].groupby(["layer", "tensor"]):
            name = f"{layer}.{tensor}" if layer else ""
            assert tensor == (R.MODEL_TENSOR if not layer else tensor)
            got = group.set_index("stat").value
            for stat, value in expected[step][name].items():
                assert got[stat] == pytest.approx(value, rel=1e-4, abs=1e-12), (step, name, stat)
    assert len(rows[rows.step == 0]) == (len(list(model.parameters())) + 1) * len(R.NOISE_STATS)


def test_one_backward_per_step_records_no_noise_and_bad_batch_size_is_refused() -> None:
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(model, opt) as probe:
        noise = micro_batch_noise(probe, B)
        for _ in range(2):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(B, 5)), torch.zeros(B, dtype=torch.long)).backward()
            opt.step()
        noise.detach()
        with pytest.raises(GradprobeError, match="batch_size: 0 is not a positive int"):
            micro_batch_noise(probe, 0)
    frame = probe.frame()
    assert not (frame.kind == R.NOISE).any() and (frame.kind == R.GRAD).any()

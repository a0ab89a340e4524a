"""The pass whose backward reaches the optimizer step is recorded, and repeated calls are pooled (issue 10, item 9).

Oracles are NumPy statistics of outputs and of their gradients captured with ``retain_grad``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.probe import Probe, ProbeOptions


def np_stats(a: np.ndarray) -> dict[str, float]:
    a = a.astype(np.float64).ravel()
    return {R.MEAN: a.mean(), R.MEAN_ABS: np.abs(a).mean(), R.STD: a.std(ddof=1), R.NORM: np.sqrt((a * a).sum()),
            R.MAX_ABS: np.abs(a).max()}


def recorded(frame, layer: str, kind: str, step: int = 0) -> dict[str, float]:
    sel = frame[(frame.step == step) & (frame.layer == layer) & (frame.kind == kind)]
    assert not sel.duplicated("stat").any()
    return sel.set_index("stat").value.to_dict()


def check(got: dict[str, float], expected: dict[str, float]) -> None:
    for stat, value in expected.items():
        assert got[stat] == pytest.approx(value, rel=1e-5, abs=1e-8), stat


STATS = (R.MEAN, R.MEAN_ABS, R.STD, R.NORM, R.MAX_ABS)


def test_validation_pass_with_grad_before_training_is_not_recorded() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x_val, x_train = torch.randn(40, 5) * 10 + 3, torch.randn(16, 5)
    y = torch.randint(0, 2, (16,))
    options = ProbeOptions(activation_stats=STATS + (R.DEAD_FRAC,), delta_stats=STATS)
    with Probe(model, opt, options=options) as probe:
        opt.zero_grad()
        model(x_val)  # a validation pass with grad on: no backward reaches it
        hidden = model[1](model[0](x_train))
        hidden.retain_grad()
        nn.functional.cross_entropy(model[2](hidden), y).backward()
        opt.step()
    frame = probe.frame()
    check(recorded(frame, "1", R.ACTIVATION), np_stats(hidden.detach().numpy()))
    check(recorded(frame, "1", R.DELTA), np_stats(hidden.grad.numpy()))
    dead = (hidden.detach().numpy() <= 0).all(axis=0).mean()
    assert recorded(frame, "1", R.ACTIVATION)[R.DEAD_FRAC] == pytest.approx(dead)


class Shared(nn.Module):
    """One Linear + ReLU applied twice, to different inputs: two calls per step of each module."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.act, self.head = nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor, keep: list[torch.Tensor]) -> torch.Tensor:
        outs = []
        for x in (a, b):
            h = self.act(self.lin(x))
            h.retain_grad()
            keep.append(h)
            outs.append(self.head(h).sum())
        return outs[0] + 3 * outs[1]


def test_module_called_twice_is_pooled_like_a_concatenation() -> None:
    torch.manual_seed(1)
    model = Shared()
    with torch.no_grad():
        model.lin.bias[:2] = -torch.tensor([0.2, 50.0])  # unit 1 dead in both calls, unit 0 in only one
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    a, b = torch.randn(10, 6), torch.randn(7, 6) + torch.tensor([-9.0, 0, 0, 0, 0, 0])
    options = ProbeOptions(activation_stats=STATS + (R.DEAD_FRAC,), delta_stats=STATS)
    keep: list[torch.Tensor] = []
    with Probe(model, opt, options=options) as probe:
        opt.zero_grad()
        model(a, b, keep).backward()
        opt.step()
    frame = probe.frame()
    outs = [h.detach().numpy() for h in keep]
    check(recorded(frame, "act", R.ACTIVATION), np_stats(np.concatenate(outs)))
    check(recorded(frame, "act", R.DELTA), np_stats(np.concatenate([h.grad.numpy() for h in keep])))
    masks = [(o <= 0).all(axis=0) for o in outs]
    expected = (masks[0] & masks[1]).mean()
    assert expected != masks[0].mean() or expected != masks[1].mean()  # AND differs from either call alone
    assert recorded(frame, "act", R.ACTIVATION)[R.DEAD_FRAC] == pytest.approx(expected)

"""Constructed cases for the diagnosis: real models, a real Probe, and an independent record from p.grad."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe.probe import Probe


def mlp(act: type[nn.Module], depth: int, width: int, init: Callable[[torch.Tensor], object] | None = None,
        d_in: int = 8, seed: int = 0) -> nn.Sequential:
    """``Linear, act, ..., Linear(width, 1)``: weights ``{2i}.weight``, activations ``{2i+1}``."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    fan = d_in
    for _ in range(depth):
        layers += [nn.Linear(fan, width), act()]
        fan = width
    layers.append(nn.Linear(fan, 1))
    model = nn.Sequential(*layers)
    if init is not None:
        for m in model:
            if isinstance(m, nn.Linear):
                init(m.weight)
                nn.init.zeros_(m.bias)
    return model


@dataclass
class Record:
    """What the test itself saw at every step, straight from p.grad, the weights and retained outputs."""

    grad: dict[str, list[float]] = field(default_factory=dict)  # mean |p.grad| per weight
    delta: dict[str, list[float]] = field(default_factory=dict)  # mean |dL/d output| per module index
    dead: dict[str, list[float]] = field(default_factory=dict)
    saturated: dict[str, list[float]] = field(default_factory=dict)  # tanh outputs within 0.02 of +-1
    update: dict[str, list[float]] = field(default_factory=dict)  # ||w_after - w_before|| / ||w_before||
    nonfinite_step: int | None = None

    def add(self, table: dict[str, list[float]], key: str, value: float) -> None:
        table.setdefault(key, []).append(value)


def train(model: nn.Sequential, opt: torch.optim.Optimizer, steps: int = 40, poison: int | None = None,
          seed: int = 0) -> tuple[Probe, Record]:
    """Train on a fixed synthetic task, with a probe attached, recording the oracle numbers alongside.

    ``poison``: at this step, set one weight of module 2 to NaN before the forward pass.
    """
    g = torch.Generator().manual_seed(seed)
    x_all = torch.randn(256, model[0].in_features, generator=g)
    y_all = ((x_all[:, 0] * x_all[:, 1] + x_all[:, 2]) > 0).float().unsqueeze(1)
    rec = Record()
    weights = [(n, p) for n, p in model.named_parameters() if p.dim() >= 2]
    with Probe(model, opt) as probe:
        for step in range(steps):
            if poison == step:
                with torch.no_grad():
                    model[2].weight[0, 0] = float("nan")
            idx = torch.arange(step * 64, (step + 1) * 64) % len(x_all)
            h, outs = x_all[idx], []
            for module in model:  # the same forward as model(x), keeping every module output
                h = module(h)
                h.retain_grad()
                outs.append(h)
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(h, y_all[idx])
            loss.backward()
            for i, out in enumerate(outs):
                rec.add(rec.delta, str(i), float(out.grad.abs().mean()))
                if isinstance(model[i], nn.ReLU):
                    rec.add(rec.dead, str(i), float((out.detach().amax(dim=0) <= 0).float().mean()))
                if isinstance(model[i], nn.Tanh):
                    rec.add(rec.saturated, str(i), float((out.detach().abs() >= 1 - 0.01 * 2).float().mean()))
            for name, p in weights:
                rec.add(rec.grad, name, float(p.grad.abs().mean()))
                if rec.nonfinite_step is None and not torch.isfinite(p.grad).all():
                    rec.nonfinite_step = step
            before = [p.detach().clone() for _, p in weights]
            opt.step()
            for (name, p), b in zip(weights, before):
                rec.add(rec.update, name, float((p.detach() - b).norm() / b.norm()))
    return probe, rec


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median over steps of num/den (the oracle of the flow rules' whole-run median)."""
    return float(np.median(np.asarray(num) / np.asarray(den)))


def last_window(values: list[float], fraction: float = 0.2, minimum: int = 5) -> list[float]:
    """The last max(minimum, ceil(fraction * n)) values, as the state rules use."""
    n = max(minimum, int(np.ceil(fraction * len(values))))
    return values[-n:]


@dataclass(frozen=True)
class Helpers:
    mlp: Callable[..., nn.Sequential] = mlp
    train: Callable[..., tuple[Probe, Record]] = train
    median_ratio: Callable[[list[float], list[float]], float] = median_ratio
    last_window: Callable[..., list[float]] = last_window


@pytest.fixture
def cases() -> Helpers:
    """Builders of the constructed cases and their oracle numbers."""
    return Helpers()

"""dead_frac is defined by the activation's derivative, not by output <= 0 (issue 10, item 6).

The oracle is the derivative of each activation written out in NumPy here: a unit is dead when
f'(x) is 0 (flat regions) or below DEAD_TOLERANCE in magnitude (smooth tails) for every example.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.diagnose.dead_units import LEAKY
from gradprobe.probe import Probe
from gradprobe.quantities.activation_stats import DEAD_TOLERANCE

_ERF = np.vectorize(math.erf)
_ALPHA, _SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _sig(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _mish(x: np.ndarray) -> np.ndarray:
    t = np.tanh(np.log1p(np.exp(x)))
    return t + x * _sig(x) * (1 - t * t)


# (module, f'(x) in NumPy, True if f' is exactly 0 on its flat region, False if it only decays)
CASES = {
    "relu": (nn.ReLU(), lambda x: (x > 0) * 1.0, True),
    "relu6": (nn.ReLU6(), lambda x: ((x > 0) & (x < 6)) * 1.0, True),
    "hardtanh": (nn.Hardtanh(-2.0, 3.0), lambda x: ((x > -2) & (x < 3)) * 1.0, True),
    "hardsigmoid": (nn.Hardsigmoid(), lambda x: ((x > -3) & (x < 3)) / 6.0, True),
    "hardswish": (nn.Hardswish(), lambda x: np.where(x < -3, 0.0, np.where(x <= 3, x / 3 + 0.5, 1.0)), True),
    "elu": (nn.ELU(alpha=0.7), lambda x: np.where(x > 0, 1.0, 0.7 * np.exp(x)), False),
    "selu": (nn.SELU(), lambda x: _SCALE * np.where(x > 0, 1.0, _ALPHA * np.exp(x)), False),
    "celu": (nn.CELU(alpha=2.0), lambda x: np.where(x > 0, 1.0, np.exp(x / 2.0)), False),
    "gelu": (nn.GELU(), lambda x: 0.5 * (1 + _ERF(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi),
             False),
    "silu": (nn.SiLU(), lambda x: _sig(x) * (1 + x * (1 - _sig(x))), False),
    "mish": (nn.Mish(), _mish, False),
    "softplus": (nn.Softplus(beta=2.0), lambda x: _sig(2 * x), False),
}
SHIFTS = torch.tensor([-40.0, -12.0, -9.5, -8.0, -6.0, -4.5, -3.5, -1.0, 0.0, 2.0, 5.0, 9.0, 40.0])


def _record(act: nn.Module, x: torch.Tensor) -> tuple[dict[str, float], np.ndarray]:
    """Train one step of Linear(identity, bias) -> act on inputs ``x``; the recorded stats and the act's input."""
    units = x.shape[1]
    lin = nn.Linear(units, units)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(units))
        lin.bias.zero_()
    model = nn.Sequential(lin, act)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with Probe(model, opt, modules=["1"]) as probe:
        opt.zero_grad()
        z = lin(x)
        model[1](z).square().sum().backward()
        opt.step()
    frame = probe.frame()
    stats = frame[(frame.kind == R.ACTIVATION) & (frame.layer == "1")].set_index("stat").value.to_dict()
    return stats, z.detach().double().numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_dead_frac_equals_numpy_derivative_oracle(name: str) -> None:
    act, derivative, exact = CASES[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, len(SHIFTS), generator=g) * 1.5 + SHIFTS  # (B, units): some units far in a tail
    stats, z = _record(act, x)
    slope = np.abs(derivative(z))
    flat = slope == 0 if exact else slope < DEAD_TOLERANCE
    expected = flat.all(axis=0).mean()
    assert 0 < expected < 1  # the case separates dead from live units
    assert stats[R.DEAD_FRAC] == pytest.approx(expected, abs=1e-12)
    assert R.NEGATIVE_FRAC not in stats


@pytest.mark.parametrize("act", [nn.LeakyReLU(0.1), nn.PReLU(), nn.RReLU()])
def test_leaky_units_are_never_dead_and_count_negative_inputs(act: nn.Module) -> None:
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1)) - 3.0
    stats, z = _record(act, x)
    assert R.DEAD_FRAC not in stats
    assert stats[R.NEGATIVE_FRAC] == pytest.approx((z < 0).mean(), abs=1e-12)


@pytest.mark.parametrize("act", [nn.Sigmoid(), nn.Tanh()])
def test_activations_without_flat_region_record_no_dead_frac(act: nn.Module) -> None:
    stats, _ = _record(act, torch.randn(16, 4) - 20)
    assert R.DEAD_FRAC not in stats
    assert R.SATURATED_FRAC in stats


def test_dead_remedy_names_no_activation_that_can_be_dead() -> None:
    for name, (act, _, _) in CASES.items():  # every activation that records dead_frac
        assert not re.search(rf"\b{type(act).__name__}\b", LEAKY, re.IGNORECASE), name

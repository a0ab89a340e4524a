"""nan_guard names the module that produced the first non-finite value; oracles: per-module isfinite, detect_anomaly."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
import torch
from nan_oracle import first_bad_leaf
from torch import nn

import gradprobe
from gradprobe.errors import GradprobeError
from gradprobe.nan_guard import NonFiniteError, NonFiniteWarning


class LogShift(nn.Module):
    """``log(x - 10)``: finite while every input exceeds 10, NaN from the first step one does not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x - 10)


class SqrtAtZero(nn.Module):
    """Finite forward (adds 0), NaN backward: sqrt'(0) = 1/0, times a zero gradient, gives 0/0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0 * torch.sqrt(x - x.detach())


def _identity_linear(n: int) -> nn.Linear:
    layer = nn.Linear(n, n)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(n))
        layer.bias.zero_()
    return layer


def _forward_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(_identity_linear(3), nn.ReLU(), LogShift(), nn.Linear(3, 1))


def _batch(step: int, gen: torch.Generator) -> torch.Tensor:
    """Inputs above 20 (log finite) before step 3, below 10 (log NaN) from step 3 on."""
    return torch.rand(8, 3, generator=gen) + (20.0 if step < 3 else 5.0)


def _train(model: nn.Module, steps: int, batch: Any, guard: Any = None) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        opt.zero_grad()
        model(batch(step, gen)).square().mean().backward()
        opt.step()



def test_forward_culprit_named_with_step_and_input_stats() -> None:
    model = _forward_model()
    with pytest.raises(NonFiniteError) as info, gradprobe.nan_guard(model):
        _train(model, 6, _batch)
    err = info.value
    assert (err.module, err.phase, err.step, err.source) == ("2", "forward", 3, "module")
    assert "\n" not in str(err) and "'2'" in str(err) and "step 3" in str(err)
    (stats,) = err.input_stats
    assert stats.shape == (8, 3) and 5.0 <= stats.min <= stats.max < 10.0  # the negative log argument
    # oracle: isfinite on every module's output, on the same batch; detect_anomaly does not raise in forward
    x = _batch(3, torch.Generator().manual_seed(0))
    assert first_bad_leaf(model, x) == err.module
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with torch.autograd.detect_anomaly(check_nan=True):
            out = model(x)  # no error: anomaly mode checks backward outputs only
    assert not torch.isfinite(out).all()


def _node_owners(model: nn.Module, x: torch.Tensor) -> dict[str, str]:
    """Autograd node name -> leaf module whose forward created it (walks each output's graph down to its input)."""
    owners: dict[str, str] = {}

    def hook(name: str, module: nn.Module, args: Any, out: torch.Tensor) -> None:
        stop = {a.grad_fn for a in args if isinstance(a, torch.Tensor)}
        todo = [out.grad_fn]
        while todo:
            node = todo.pop()
            if node is None or node in stop or type(node).__name__ == "AccumulateGrad":
                continue
            owners.setdefault(type(node).__name__, name)
            todo.extend(n for n, _ in node.next_functions)

    hooks = [m.register_forward_hook(lambda m, a, o, n=n: hook(n, m, a, o))
             for n, m in model.named_modules() if not list(m.children())]
    model(x)
    for h in hooks:
        h.remove()
    return owners


def test_backward_culprit_agrees_with_detect_anomaly() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), SqrtAtZero(), nn.Linear(6, 2))
    x = torch.randn(5, 4)
    with pytest.raises(NonFiniteError) as info, gradprobe.nan_guard(model):
        _train(model, 1, lambda step, gen: x)
    err = info.value
    assert (err.module, err.phase, err.step, err.source) == ("2", "backward", 0, "module")
    assert err.input_stats and all(s.shape == (5, 6) for s in err.input_stats)  # its finite output gradient
    # reference: the node detect_anomaly names, mapped to the module whose forward created it
    model.zero_grad()
    with warnings.catch_warnings(record=True) as caught, pytest.raises(RuntimeError) as anomaly:
        warnings.simplefilter("always")
        with torch.autograd.detect_anomaly():
            model(x).square().mean().backward()
    assert any("Error detected in" in str(w.message) for w in caught)
    node = re.search(r"Function '(\w+)' returned nan", str(anomaly.value))
    assert node is not None
    assert _node_owners(model, x)[node.group(1)] == err.module


def test_finite_training_is_untouched() -> None:
    def run(guarded: bool) -> list[torch.Tensor]:
        model = _forward_model()
        batch = lambda step, gen: torch.rand(8, 3, generator=gen) + 20.0  # noqa: E731
        if guarded:
            with gradprobe.nan_guard(model) as guard:
                _train(model, 5, batch)
            assert guard.error is None and guard.step == 5
        else:
            _train(model, 5, batch)
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run(False), run(True)):
        assert torch.equal(a, b)


def test_nan_in_data_blamed_on_data() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))

    def batch(step: int, gen: torch.Generator) -> torch.Tensor:
        x = torch.randn(8, 3, generator=gen)
        if step == 2:
            x[1, 2] = float("nan")
        return x

    with pytest.raises(NonFiniteError) as info, gradprobe.nan_guard(model):
        _train(model, 4, batch)
    err = info.value
    assert (err.module, err.source, err.phase, err.step) == (None, "data", "forward", 2)
    assert "input data" in str(err) and "'0'" in str(err)


def test_warn_continues_and_every_skips() -> None:
    model = _forward_model()
    with pytest.warns(NonFiniteWarning, match="'2'"), gradprobe.nan_guard(model, action="warn") as guard:
        _train(model, 6, _batch)
    assert guard.error is not None and guard.step == 6
    model = _forward_model()
    with pytest.raises(NonFiniteError) as info, gradprobe.nan_guard(model, every=2):  # step 3 is not checked
        _train(model, 6, _batch)
    assert info.value.step == 4


@pytest.mark.parametrize("kwargs, field", [({"model": 3}, "model"), ({"action": "stop"}, "action"),
                                           ({"every": 0}, "every"), ({"optimizer": "adam"}, "optimizer")])
def test_bad_arguments_rejected_at_construction(kwargs: dict[str, Any], field: str) -> None:
    args = {"model": nn.Linear(2, 2), **kwargs}
    with pytest.raises(GradprobeError, match=field):
        gradprobe.nan_guard(**args)

"""Probe(nan_guard=True): the culprit of the first NaN, the same as detect_anomaly's and a per-module isfinite oracle's.

The guard's replay of a failing step must not leak into the probe's own records: the frame of a probe
with the guard equals the frame of one without it, NaN for NaN.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import pandas as pd
import pytest
import torch
from nan_oracle import first_bad_leaf
from torch import nn

from gradprobe import Probe
from gradprobe.data.datasets import load_dataset
from gradprobe.nan_guard import NonFiniteWarning, nan_guard
from gradprobe.train.experiment import load_experiment
from gradprobe.train.loop import Trainer

Batch = Callable[[int], torch.Tensor]


class LogShift(nn.Module):
    """``log(x - 10)``: NaN as soon as an input is below 10."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x - 10)


class SqrtAtZero(nn.Module):
    """Finite forward, NaN backward: sqrt'(0) = inf times a zero gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0 * torch.sqrt(x - x.detach())


def _forward_model() -> nn.Sequential:
    torch.manual_seed(0)
    first = nn.Linear(3, 3)
    with torch.no_grad():
        first.weight.copy_(torch.eye(3))
        first.bias.zero_()
    return nn.Sequential(first, nn.ReLU(), LogShift(), nn.Linear(3, 1))


def _batch(step: int) -> torch.Tensor:
    """Inputs above 20 before step 3, between 5 and 6 (log of a negative) from step 3 on."""
    return torch.rand(8, 3, generator=torch.Generator().manual_seed(step)) + (20.0 if step < 3 else 5.0)


def _train(model: nn.Module, steps: int, batch: Batch, guard: bool) -> Probe:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the guard's NonFiniteWarning, the probe's alerts
        with Probe(model, opt, nan_guard=guard) as probe:
            for step in range(steps):
                opt.zero_grad()
                model(batch(step)).square().mean().backward()
                opt.step()
    return probe


def _train_plain(model: nn.Module, steps: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    for step in range(steps):
        opt.zero_grad()
        model(_batch(step)).square().mean().backward()
        opt.step()



def test_forward_culprit_and_records_untouched_by_the_replay() -> None:
    guarded = _forward_model()
    probe = _train(guarded, 6, _batch, guard=True)
    culprit = probe.nan_culprit
    assert culprit is not None
    assert (culprit.module, culprit.phase, culprit.step, culprit.source) == ("2", "forward", 3, "module")
    plain = _forward_model()  # the weights at step 3: three plain SGD steps
    _train_plain(plain, 3)
    x = _batch(3)
    assert culprit.module == first_bad_leaf(plain, x)
    with torch.no_grad():
        reached = plain[1](plain[0](x))  # what LogShift read at step 3
    (stats,) = culprit.input_stats
    assert (stats.min, stats.max) == pytest.approx((float(reached.min()), float(reached.max())), rel=1e-6)
    reference = _train(_forward_model(), 6, _batch, guard=False).frame()
    pd.testing.assert_frame_equal(probe.frame(), reference)  # assert_frame_equal treats NaN == NaN
    assert probe.frame()["step"].max() == 5  # the probe kept recording after the finding


def test_backward_culprit_matches_detect_anomaly_under_manual_drive() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), SqrtAtZero(), nn.Linear(6, 2))
    x = torch.randn(5, 4)
    with warnings.catch_warnings(record=True) as caught, Probe(model, drive="manual", nan_guard=True) as probe:
        warnings.simplefilter("always")
        model(x).square().mean().backward()
        probe.before_update()
        probe.after_update()
    assert [str(w.message)[:3] for w in caught if w.category is NonFiniteWarning] == ["'2'"]
    culprit = probe.nan_culprit
    assert culprit is not None and (culprit.module, culprit.phase, culprit.step) == ("2", "backward", 0)
    # detect_anomaly names the autograd node; map it to the leaf module whose forward created that node
    owners: dict[str, str] = {}

    def owner_hook(name: str, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        stop, todo = {a.grad_fn for a in args}, [out.grad_fn]
        while todo:
            node = todo.pop()
            if node is not None and node not in stop and type(node).__name__ != "AccumulateGrad":
                owners.setdefault(type(node).__name__, name)
                todo.extend(n for n, _ in node.next_functions)

    hooks = [m.register_forward_hook(lambda m, a, o, n=n: owner_hook(n, a, o))
             for n, m in model.named_modules() if n]
    with warnings.catch_warnings(), pytest.raises(RuntimeError) as anomaly:
        warnings.simplefilter("ignore")
        with torch.autograd.detect_anomaly():
            model(x).square().mean().backward()
    for h in hooks:
        h.remove()
    node = re.search(r"Function '(\w+)' returned nan", str(anomaly.value))
    assert node is not None and owners[node.group(1)] == culprit.module


def test_finite_run_has_no_culprit_and_identical_weights() -> None:
    finite: Batch = lambda step: _batch(0)  # noqa: E731  (always above 20: log finite)
    a, b = _forward_model(), _forward_model()
    assert _train(a, 4, finite, guard=True).nan_culprit is None
    assert _train(b, 4, finite, guard=False).nan_culprit is None
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_preset_runner_stores_the_culprit_in_the_summary() -> None:
    """A huge SGD step blows the run up; the summary's culprit equals a per-module trace's (no replay) answer."""
    cfg = load_experiment("circles-deep", ["train.epochs=null", "train.iterations=4", "train.batch_size=null",
                                           "record.nan_guard=true", "train.stop_on_nonfinite=false",
                                           "optimizer.name=sgd", "optimizer.lr=1e30", "model.activation=relu"]).runs[0]
    trainer = Trainer(cfg, load_dataset(cfg.data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with nan_guard(trainer.model, trainer.optimizer, action="warn", check="modules") as reference:
            result = trainer.run()
    assert reference.error is not None
    culprit = result.summary["nan_culprit"]
    want = reference.error.as_dict()
    assert {k: culprit[k] for k in ("module", "step", "phase", "source")} == {
        k: want[k] for k in ("module", "step", "phase", "source")}
    assert culprit["step"] <= result.summary["first_nonfinite_loss_step"]


def test_overflowing_gradient_sum_is_not_a_finding() -> None:
    """Every gradient entry is 3e38 (finite) but their float32 sum is inf: re-checked exactly, nothing reported."""
    model = nn.Linear(1, 4, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with Probe(model, opt, nan_guard=True) as probe:
        opt.zero_grad()
        (model(torch.ones(1, 1)) * 3e38).sum().backward()
        assert model.weight.grad is not None and bool(torch.isfinite(model.weight.grad).all())
        assert not torch.isfinite(model.weight.grad.sum())  # the cheap check does fire
        opt.step()
    assert probe.nan_culprit is None

"""``watch`` in two lines, thresholds as configuration, and the wording of numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradprobe.watcher as watch_module
from gradprobe.diagnose import Thresholds
from gradprobe.diagnose.engine import diagnose
from gradprobe.diagnose.evidence import bare, pct, sci, times
from gradprobe.errors import GradprobeError


def _loop(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 15) -> None:
    torch.manual_seed(1)
    x, y = torch.randn(64, 8), torch.rand(64, 1).round()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        opt.step()


def test_watch_prints_the_diagnosis_at_exit(cases, capsys) -> None:
    model = cases.mlp(nn.Sigmoid, 8, 8, init=lambda w: nn.init.normal_(w, 0.0, 1.0))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with watch_module.watch(model) as probe:
        _loop(model, opt)
    printed = capsys.readouterr().err
    again = diagnose(probe)
    assert printed.startswith(f"gradprobe diagnosis: {again.verdict}") and again.verdict == "vanishing"
    assert "0.weight" in printed and probe.step_count == 15
    assert all(not m._forward_hooks for m in model.modules())  # detached at exit: no hooks left


def test_watch_is_quiet_when_asked_and_detaches_after_an_exception(cases, capsys) -> None:
    model = cases.mlp(nn.ReLU, 2, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="stop"), watch_module.watch(model, print_diagnosis=False) as probe:
        _loop(model, opt, steps=3)
        raise RuntimeError("stop")
    assert capsys.readouterr().err == "" and all(not m._forward_hooks for m in model.modules())
    assert diagnose(probe).verdict == "healthy"


def test_thresholds_change_the_outcome(cases) -> None:
    model = cases.mlp(nn.Sigmoid, 8, 8, init=lambda w: nn.init.normal_(w, 0.0, 1.0))
    probe, rec = cases.train(model, torch.optim.SGD(model.parameters(), lr=0.5), steps=20)
    ratio = cases.median_ratio(rec.delta["0"], rec.delta["15"])
    assert diagnose(probe).layer("0.weight").verdict == "vanishing"
    looser = Thresholds(vanishing_ratio=ratio / 2)
    assert diagnose(probe, looser).layer("0.weight").verdict == "healthy"


@pytest.mark.parametrize("field, value", [("vanishing_ratio", 1.5), ("exploding_ratio", 0.5), ("dead_fraction", 0.0),
                                          ("stalled_ratio", float("nan")), ("min_window", 0), ("window_fraction", 2)])
def test_bad_thresholds_name_field_and_value(field, value) -> None:
    with pytest.raises(GradprobeError, match=f"thresholds.{field}: {value!r}"):
        Thresholds(**{field: value})


def test_replace_ignores_unset_and_rejects_unknown() -> None:
    assert Thresholds().replace(vanishing_ratio=None, dead_fraction=0.3).dead_fraction == 0.3
    with pytest.raises(GradprobeError, match="'vanish' is not a threshold"):
        Thresholds().replace(vanish=0.1)


def test_number_wording() -> None:
    words = (bare(1 / 34), bare(1 / 5.6), bare(7.2), bare(1.5e8), bare(0.0))
    assert words == ("1/34", "1/5.6", "7.2x", "1.5e+08x", "0")
    assert (times(1 / 34), times(12.0), times(0.0)) == ("1/34 of", "12 times", "zero times")
    assert (sci(2.1e-5), pct(0.62)) == ("2.1e-05", "62%")

"""``unstable`` is judged from counts of NaN/Inf entries, not from statistics that are themselves NaN/Inf."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.diagnose.engine import diagnose
from gradprobe.probe import Probe

LAYERS = ("0", "2")


def _frame(bad_step: int, counted: int, with_counts: bool = True) -> pd.DataFrame:
    """Tidy grad stats of two weight layers over 10 steps; at ``bad_step`` layer 0's mean_abs and norm are Inf."""
    rows = []
    for step in range(10):
        for layer in LAYERS:
            value = 1e-2 * (1 + 0.1 * step)
            bad = step == bad_step and layer == "0"
            rows += [(step, layer, "weight", R.GRAD, R.MEAN_ABS, math.inf if bad else value),
                     (step, layer, "weight", R.GRAD, R.NORM, math.inf if bad else 10 * value)]
            if with_counts:
                rows.append((step, layer, "weight", R.GRAD, R.NONFINITE, float(counted if bad else 0)))
    return pd.DataFrame(rows, columns=list(R.STAT_COLUMNS))


def test_infinite_statistic_with_zero_count_is_not_unstable() -> None:
    result = diagnose(_frame(bad_step=4, counted=0))
    assert result.verdict != "unstable" and all(e.verdict != "unstable" for e in result.layers)
    assert any("0.weight's grad (1 steps)" in note and note.startswith("not unstable") for note in result.notes)


def test_counted_nonfinite_entries_are_unstable_from_their_step() -> None:
    result = diagnose(_frame(bad_step=4, counted=3))
    assert result.verdict == "unstable"
    entry = result.layer("0.weight")
    assert entry.verdict == "unstable" and entry.numbers == {"first_step": 4, "nonfinite_steps": 1}
    assert "from step 4" in entry.evidence and not any(n.startswith("not unstable") for n in result.notes)


def test_statistics_without_counts_are_not_judged_but_named() -> None:
    result = diagnose(_frame(bad_step=4, counted=0, with_counts=False))
    assert result.verdict != "unstable"
    assert any("no nonfinite count was recorded" in note and "0.weight's grad" in note for note in result.notes)


def _net(dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype)


def _train(model: nn.Sequential, steps: int, log_zero_at: int | None = None) -> tuple[Probe, int | None]:
    """SGD on a fixed task; at ``log_zero_at`` the loss is log(0 * output), whose gradient is NaN."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    dtype = model[0].weight.dtype
    x, y = torch.randn(64, 4, generator=g, dtype=dtype), torch.rand(64, 1, generator=g, dtype=dtype)
    first_bad = None
    with Probe(model, opt, every=1) as probe:
        for step in range(steps):
            opt.zero_grad()
            out = model(x)
            loss = nn.functional.mse_loss(out, y)
            if step == log_zero_at:
                loss = torch.log(out.sum() * 0)
            loss.backward()
            bad = any(not bool(torch.isfinite(p.grad).all()) for p in model.parameters())
            if bad and first_bad is None:
                first_bad = step
            opt.step()
    return probe, first_bad


@pytest.mark.parametrize(("dtype", "weight"), [(torch.float32, 1e20), (torch.float64, 1e200)])
def test_huge_finite_weights_are_not_unstable(dtype: torch.dtype, weight: float) -> None:
    model = _net(dtype)
    with torch.no_grad():
        model[0].weight.fill_(weight)  # finite; their squares overflow float32 (1e20) or even float64 (1e200)
    probe, first_bad = _train(model, steps=12)
    assert first_bad is None  # the oracle: every gradient entry stayed finite
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    frame = probe.frame()
    counts = frame[frame["stat"] == R.NONFINITE]
    assert len(counts) and (counts["value"] == 0).all()
    result = diagnose(probe)
    assert result.verdict != "unstable" and all(e.verdict != "unstable" for e in result.layers)


def test_log_of_zero_is_still_unstable_at_its_step() -> None:
    probe, first_bad = _train(_net(), steps=12, log_zero_at=5)
    assert first_bad == 5
    result = diagnose(probe)
    assert result.verdict == "unstable"
    steps = [e.numbers["first_step"] for e in result.layers if e.verdict == "unstable"]
    assert steps and min(steps) == 5

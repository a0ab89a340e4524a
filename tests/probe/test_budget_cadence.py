"""``Probe(budget=...)``: the probe times itself with an injected clock and records what the budget allows.

A fake clock advances only when the test says: ``STEP`` per training step, and per recorded step
either a cost inside the probe (its parameter statistics) or a cost outside it (a forward hook
standing for the dispatch of the probe's hooks, which no timer inside the probe sees). The
expected schedule is the rule of :mod:`gradprobe.budget` worked out by hand.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.budget import MAX_GAP, REBASE
from gradprobe.errors import GradprobeError
from gradprobe.probe import Probe, ProbeOptions

STEP = 1.0  # fake seconds of training per step


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(steps: int, inside: float = 0.0, outside: float = 0.0, **cadence: Any) -> tuple[Probe, list[int]]:
    """Train ``steps`` steps; each recorded step costs ``inside`` in the probe's statistics, ``outside`` in a hook."""
    clock = FakeClock()
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(model, opt, clock=clock, modules=[], alerts=False,
                  options=ProbeOptions(flush_every=10**6, structure=False), **cadence)
    stats = probe._params.stats

    def timed_stats(step: int) -> Any:  # the probe's own work on a recorded step, inside its timed hooks
        clock.now += inside
        return stats(step)

    probe._params.stats = timed_stats  # type: ignore[method-assign]

    def dispatch(module: nn.Module, args: Any, output: Any) -> None:
        if probe.due:  # what the probe's hooks cost outside its own code when it records
            clock.now += outside

    model.register_forward_hook(dispatch)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        clock.now += STEP
        opt.step()
    probe.detach()
    frame = probe.frame()
    return probe, sorted(frame[frame["kind"] == R.GRAD]["step"].unique().tolist())


def _expected(cost: float, budget: float, steps: int) -> list[int]:
    """Forced steps; no other record until an unrecorded step was timed and at least one in REBASE steps;
    else a record while charged + cost <= budget * (wall + cost), each record charged ``cost``."""
    now = charged = 0.0
    last = timed = None
    out = []
    for s in range(steps):
        if s & (s - 1) == 0 or last is None or s - last >= MAX_GAP:
            due = True
        elif timed is None or s - timed > REBASE:
            due = False
        else:
            due = charged + cost <= budget * (now + cost)
        if due:
            out.append(s)
            last, charged = s, charged + cost
        else:
            timed = s
        now += STEP + (cost if due else 0.0)
    return out


def test_cheap_probe_records_every_step_but_its_reference_steps() -> None:
    probe, recorded = _run(250, inside=0.001, budget=0.02)
    assert recorded == [s for s in range(250) if s not in (3, 104, 205)]
    assert recorded == _expected(0.001, 0.02, 250)
    assert probe.cost == pytest.approx({"budget": 0.02, "overhead": 0.247 / 250.247, "recorded_steps": 247,
                                        "steps": 250})


def test_expensive_probe_records_rarely_as_the_clock_arithmetic_says() -> None:
    probe, recorded = _run(3000, inside=0.5, budget=0.02)
    assert recorded == _expected(0.5, 0.02, 3000)
    # between forced records, gaps are about cost / (budget * STEP) = 25 steps, never denser
    assert 3000 / 25 * 0.8 < len(recorded) < 3000 / 25 + 12 + 3
    assert {0, 1, 2, 4, 1024, 2048} <= set(recorded)
    cost = probe.cost
    assert cost["recorded_steps"] == len(recorded) and cost["steps"] == 3000
    assert cost["overhead"] == pytest.approx(0.5 * len(recorded) / (3000 + 0.5 * len(recorded)))
    assert cost["overhead"] <= 0.02 * 1.01


def test_hook_dispatch_outside_the_probe_is_charged_too() -> None:
    # No time passes inside the probe's code: a budget that timed only its hooks would record every step.
    probe, recorded = _run(3000, outside=0.5, budget=0.02)
    assert recorded == _expected(0.5, 0.02, 3000)
    assert len(recorded) < 3000 / 20
    assert probe.cost["overhead"] == pytest.approx(0.5 * len(recorded) / (3000 + 0.5 * len(recorded)))


def test_fixed_cadence_reports_its_recorded_steps_excess() -> None:
    probe, recorded = _run(200, outside=0.3, every=10)
    assert recorded == list(range(0, 200, 10))
    assert probe.cost == pytest.approx({"budget": None, "overhead": 20 * 0.3 / (200 + 20 * 0.3),
                                        "recorded_steps": 20, "steps": 200})


def test_very_expensive_probe_keeps_only_forced_steps() -> None:
    _, recorded = _run(2500, inside=100.0, budget=0.02)
    assert recorded == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2024, 2048]
    assert np.diff(recorded).max() <= MAX_GAP


def test_budget_and_every_are_one_cadence() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(GradprobeError, match="pass one cadence"):
        Probe(model, every=5, budget=0.02)
    with pytest.raises(GradprobeError, match="budget: 2"):
        Probe(model, budget=2)

"""``Probe(budget=...)``: the probe times itself with an injected clock and records what the budget allows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.budget import MAX_GAP
from gradprobe.errors import GradprobeError
from gradprobe.probe import Probe, ProbeOptions

STEP = 1.0  # fake seconds of training per step


class FakeClock:
    """Time advances only when the test says: STEP per training step, ``cost`` per flush (the probe's work)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(cost: float, budget: float, steps: int) -> tuple[Probe, list[int]]:
    clock = FakeClock()

    def sink(stats: pd.DataFrame, hist: pd.DataFrame) -> None:
        clock.now += cost  # flush_every=1: one flush per recorded step, inside the probe's timed hooks

    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(model, opt, budget=budget, clock=clock, modules=[], sink=sink,
                  options=ProbeOptions(flush_every=1, structure=False))
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        clock.now += STEP
        opt.step()
    probe.detach()
    frame = probe.frame()
    recorded = sorted(frame[frame["kind"] == R.GRAD]["step"].unique().tolist())
    return probe, recorded


def _expected(cost: float, budget: float, steps: int) -> list[int]:
    """The rule worked out by hand: forced steps, then records while spent + cost <= budget * (wall + cost)."""
    now = spent = 0.0
    last: int | None = None
    out = []
    for s in range(steps):
        now += STEP
        forced = s == 0 or (s & (s - 1)) == 0 or last is None or s - last >= MAX_GAP
        if forced or (last is not None and spent + cost <= budget * (now + cost)):
            out.append(s)
            last = s
            now += cost
            spent += cost
    return out


def test_cheap_probe_records_every_step() -> None:
    probe, recorded = _run(cost=0.001, budget=0.02, steps=100)
    assert recorded == list(range(100))
    assert probe.cost == pytest.approx({"budget": 0.02, "overhead": 0.1 / 100.1, "recorded_steps": 100,
                                        "steps": 100})


def test_expensive_probe_records_rarely_as_the_clock_arithmetic_says() -> None:
    probe, recorded = _run(cost=0.5, budget=0.02, steps=3000)
    expected = _expected(0.5, 0.02, 3000)
    assert recorded == expected
    # between forced records, gaps are about cost / (budget * STEP) = 25 steps, never denser
    assert 3000 / 25 * 0.8 < len(recorded) < 3000 / 25 + 12 + 3
    assert {0, 1, 2, 4, 1024, 2048} <= set(recorded)
    cost = probe.cost
    assert cost["recorded_steps"] == len(recorded) and cost["steps"] == 3000
    assert cost["overhead"] == pytest.approx(0.5 * len(recorded) / (3000 + 0.5 * len(recorded)))
    assert cost["overhead"] <= 0.02 * 1.01


def test_very_expensive_probe_keeps_only_forced_steps() -> None:
    _, recorded = _run(cost=100.0, budget=0.02, steps=2500)
    assert recorded == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2024, 2048]
    assert np.diff(recorded).max() <= MAX_GAP


def test_budget_and_every_are_one_cadence() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(GradprobeError, match="pass one cadence"):
        Probe(model, every=5, budget=0.02)
    with pytest.raises(GradprobeError, match="budget: 2"):
        Probe(model, budget=2)

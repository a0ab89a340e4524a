"""GradScaler overflow as data: the skipped step, its scale and the culprit parameter; diagnose: note vs unstable.

The culprit is checked against a reference loop without a probe: the same model, data, scaler and forced
overflow, reading which ``p.grad`` hold Inf/NaN right after ``scaler.unscale_``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.diagnose.engine import diagnose
from gradprobe.diagnose.verdicts import UNSTABLE
from gradprobe.plots import loss_scale
from gradprobe.probe import Probe, Sink
from gradprobe.report.figures import save_figures
from gradprobe.store.reader import Run
from gradprobe.store.writer import RunWriter

BLOW = float("inf")  # dL/d(output of module 2) times this: Inf/NaN in fp16 and bf16 alike (bf16 spans fp32's range)


def make() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))


def train(dtype: torch.dtype, steps: int, overflow: set[int], probed: bool, sink: Sink | None = None):
    """Train ``steps`` steps; at steps in ``overflow`` the error entering module 2's output is blown up.

    Returns the probe (or None) and, per step, ``(scale, names of parameters whose grad holds NaN/Inf after
    unscale_, {name: count of NaN/Inf})``.
    """
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    g = torch.Generator().manual_seed(1)
    seen = []
    probe = Probe(model, opt, scaler=scaler, sink=sink) if probed else None
    for step in range(steps):
        x = torch.randn(16, 8, generator=g)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            h = model[2](model[1](model[0](x)))
            if step in overflow:
                h.register_hook(lambda grad: grad * BLOW)
            loss = model[4](model[3](h)).float().square().mean()
        scale = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        bad = {n: int((~torch.isfinite(p.grad)).sum()) for n, p in model.named_parameters()
               if not torch.isfinite(p.grad).all()}
        seen.append((scale, list(bad), bad))
        scaler.step(opt)
        scaler.update()
    if probe is not None:
        probe.detach()
    return probe, seen


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_skipped_step_records_scale_and_culprit(dtype: torch.dtype) -> None:
    probe, seen = train(dtype, 6, {3}, probed=True)
    _, reference = train(dtype, 6, {3}, probed=False)
    assert [s for s, _, _ in seen] == [s for s, _, _ in reference]  # the probe changed nothing
    frame = probe.frame()
    steps = frame[(frame.kind == R.STEP) & (frame.tensor == R.STEP_TENSOR)].pivot(
        index="step", columns="stat", values="value")
    assert list(steps[R.SKIPPED]) == [float(bool(bad)) for _, bad, _ in reference] == [0, 0, 0, 1, 0, 0]
    assert list(steps[R.LOSS_SCALE]) == [s for s, _, _ in reference]
    culprit = frame[frame.stat == R.FIRST_NONFINITE_GRAD]
    assert len(culprit) == 1 and int(culprit.step.iloc[0]) == 3
    _, names, counts = reference[3]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]  # the blown-up error reaches modules 2 and 0
    row = culprit.iloc[0]
    assert f"{row.layer}.{row.tensor}" == names[-1]  # nearest the output: first in backward order
    assert row.value == counts[names[-1]]
    assert set(frame.loc[frame.step == 3, "kind"]) == {R.STEP}  # no other record of the skipped step


def test_occasional_overflow_is_a_note_not_unstable() -> None:
    probe, seen = train(torch.float16, 12, {3}, probed=True)
    diagnosis = diagnose(probe)
    assert all(layer.verdict != UNSTABLE for layer in diagnosis.layers)
    note = [n for n in diagnosis.notes if n.startswith("occasional scaler overflow")]
    assert len(note) == 1
    assert "skipped 1 of 12 steps (steps 3;" in note[0] and "2.bias" in note[0]


def test_persistent_overflow_is_unstable() -> None:
    overflow = set(range(2, 16, 2))  # every other step from step 2: half of the second half skipped
    probe, seen = train(torch.float16, 16, overflow, probed=True)
    assert sum(bool(bad) for _, bad, _ in seen) == len(overflow)
    diagnosis = diagnose(probe)
    assert diagnosis.verdict == UNSTABLE
    flagged = [layer for layer in diagnosis.layers if layer.verdict == UNSTABLE]
    assert [layer.layer for layer in flagged] == ["2.weight"]  # the culprit 2.bias belongs to module 2's weight
    assert flagged[0].evidence.startswith("persistent fp16 overflow: the GradScaler skipped 7 of 16 steps")
    assert flagged[0].numbers["skipped_steps"] == 7
    assert not any(n.startswith("occasional scaler overflow") for n in diagnosis.notes)


def test_loss_scale_history_is_stored_and_drawn(tmp_path: Path) -> None:
    with RunWriter(tmp_path, "amp", config={}, env={}, meta={}) as writer:
        def sink(stats: pd.DataFrame, hists: pd.DataFrame) -> None:
            writer.add_stats(stats)

        _, seen = train(torch.float16, 8, {2, 5}, probed=True, sink=sink)
    run = Run(writer.path)
    stored = run.frame(kind=R.STEP, stat=R.LOSS_SCALE)
    assert list(stored.value) == [s for s, _, _ in seen]  # powers of two: exact in float32
    fig = loss_scale([run])
    line = fig.axes[0].lines[0]
    np.testing.assert_array_equal(line.get_ydata(), [s for s, _, _ in seen])
    crosses = fig.axes[0].lines[1]
    assert list(crosses.get_xdata()) == [2, 5]
    written = save_figures([run], tmp_path / "figures", formats=("png",))
    assert [p.name for p in written if "loss-scale" in p.name] == ["15-loss-scale.png"]

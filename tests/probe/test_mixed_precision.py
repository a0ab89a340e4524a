"""Under a GradScaler, deltas are the true (unscaled) dL/d output and skipped steps are data (issue 10, item 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe import records as R
from gradprobe.diagnose.engine import diagnose
from gradprobe.diagnose.verdicts import UNSTABLE
from gradprobe.probe import Probe, ProbeOptions

STATS = (R.MEAN_ABS, R.STD, R.NORM, R.MAX_ABS)
SCALES = (2.0**40, 2.0**12)  # fp16 overflows with the first (the step is skipped), not with the second


def np_stats(a: np.ndarray) -> dict[str, float]:
    a = a.astype(np.float64).ravel()
    return {R.MEAN_ABS: np.abs(a).mean(), R.STD: a.std(ddof=1), R.NORM: np.sqrt((a * a).sum()),
            R.MAX_ABS: np.abs(a).max()}


def make() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))


def fp32_deltas(probed: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """dL/d(output of modules 1 and 3) of an fp32 copy of ``probed`` (without its hooks), by torch.autograd.grad."""
    model = make()
    model.load_state_dict(probed.state_dict())
    h1 = model[1](model[0](x))
    h3 = model[3](model[2](h1))
    return [g.numpy() for g in torch.autograd.grad(model[4](h3).square().mean(), [h1, h3])]


def run(dtype: torch.dtype, steps: int, init_scale: float):
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, backoff_factor=SCALES[1] / SCALES[0])
    g = torch.Generator().manual_seed(1)
    seen = []
    with Probe(model, opt, scaler=scaler, options=ProbeOptions(delta_stats=STATS)) as probe:
        for _ in range(steps):
            x = torch.randn(16, 8, generator=g)
            reference = fp32_deltas(model, x)
            opt.zero_grad()
            with torch.autocast("cpu", dtype=dtype):
                h1 = model[1](model[0](x))
                h3 = model[3](model[2](h1))
                loss = model[4](h3).float().square().mean()
            h1.retain_grad()
            h3.retain_grad()
            scale = scaler.get_scale()
            scaler.scale(loss).backward()
            seen.append((scale, [h.grad.float().numpy() / scale for h in (h1, h3)], reference))
            scaler.step(opt)
            scaler.update()
    return probe, seen


def delta(frame, step: int, layer: str) -> dict[str, float]:
    sel = frame[(frame.step == step) & (frame.layer == layer) & (frame.kind == R.DELTA)]
    return sel.set_index("stat").value.to_dict()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_deltas_are_unscaled(dtype: torch.dtype) -> None:
    probe, seen = run(dtype, 3, SCALES[1])
    frame = probe.frame()
    for step, (scale, retained, reference) in enumerate(seen):
        assert scale == SCALES[1]
        for layer, got, ref in zip(("1", "3"), retained, reference):
            recorded = delta(frame, step, layer)
            for stat, value in np_stats(got).items():
                assert recorded[stat] == pytest.approx(value, rel=1e-5), (step, layer, stat)
            for stat, value in np_stats(ref).items():  # the fp32 truth, up to half-precision rounding
                assert recorded[stat] == pytest.approx(value, rel=0.05), (step, layer, stat)


def test_skipped_step_is_recorded_as_data_not_instability() -> None:
    probe, seen = run(torch.float16, 8, SCALES[0])
    frame = probe.frame()
    steps = frame[(frame.kind == R.STEP) & (frame.stat != R.FIRST_NONFINITE_GRAD)]  # the culprit row: its own layer
    assert set(steps.layer) == {""} and set(steps.tensor) == {R.STEP_TENSOR}
    table = steps.pivot(index="step", columns="stat", values="value")
    assert list(table[R.SKIPPED]) == [1.0] + [0.0] * 7
    assert list(table[R.LOSS_SCALE]) == [s for s, _, _ in seen]
    assert [s for s, _, _ in seen] == [SCALES[0]] + [SCALES[1]] * 7
    assert set(frame.loc[frame.step == 0, "kind"]) == {R.STEP}  # the skipped step keeps no other record
    assert not (frame.loc[frame.stat == R.NONFINITE, "value"] > 0).any()
    diagnosis = diagnose(probe)
    assert diagnosis.verdict != UNSTABLE
    assert all(layer.verdict != UNSTABLE for layer in diagnosis.layers)
    for layer, got in zip(("1", "3"), seen[1][1]):  # the first real step: unscaled, no skipped deltas pooled in
        assert delta(frame, 1, layer)[R.NORM] == pytest.approx(np_stats(got)[R.NORM], rel=1e-5)

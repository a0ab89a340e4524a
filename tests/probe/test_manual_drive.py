"""Manual drive (what trainer callbacks use) records what the optimizer-driven probe records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from gradprobe import Probe
from gradprobe.errors import GradprobeError


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))


def _train(manual: bool, steps: int = 6) -> tuple[pd.DataFrame, list[np.ndarray], list[float]]:
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    probe = Probe(model, drive="manual") if manual else Probe(model, opt)
    gen = torch.Generator().manual_seed(1)
    grads, ratios = [], []
    with probe:
        for _ in range(steps):
            x, y = torch.randn(16, 4, generator=gen), torch.randn(16, 1, generator=gen)
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            grads.append(model[0].weight.grad.detach().abs().mean().numpy().copy())
            before = model[2].weight.detach().clone()
            if manual:
                probe.before_update()
            opt.step()
            if manual:
                probe.after_update()
            ratios.append(float((model[2].weight.detach() - before).norm() / before.norm()))
    return probe.frame(), grads, ratios


def test_manual_drive_equals_optimizer_drive_and_the_truth() -> None:
    manual, grads, ratios = _train(manual=True)
    auto, _, _ = _train(manual=False)
    key = ["step", "layer", "tensor", "kind", "stat"]
    pd.testing.assert_frame_equal(manual.sort_values(key).reset_index(drop=True),
                                  auto.sort_values(key).reset_index(drop=True))
    rec = manual[(manual.layer == "0") & (manual.tensor == "weight") & (manual.kind == "grad")
                 & (manual.stat == "mean_abs")].sort_values("step")["value"].to_numpy()
    np.testing.assert_allclose(rec, np.array(grads, dtype=np.float64), rtol=1e-6)
    upd = manual[(manual.layer == "2") & (manual.tensor == "weight") & (manual.stat == "update_ratio")]
    np.testing.assert_allclose(upd.sort_values("step")["value"].to_numpy(), ratios, rtol=1e-5)
    assert sorted(manual["step"].unique()) == list(range(6))


def test_manual_calls_are_refused_on_an_optimizer_driven_probe_and_bad_drives_named() -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(model, opt) as probe, pytest.raises(GradprobeError, match="drive='manual'"):
        probe.before_update()
    with pytest.raises(GradprobeError, match="drive: 'hooks' is not allowed"):
        Probe(model, drive="hooks")
    with pytest.raises(GradprobeError, match="takes no optimizer"):
        Probe(model, opt, drive="manual")

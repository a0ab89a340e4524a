"""Training in eval() mode (frozen BatchNorm) records activations and deltas (issue 10, item 8)."""

from __future__ import annotations

import torch
from torch import nn

from gradprobe import records as R
from gradprobe.probe import Probe, ProbeOptions
from tests.probe.test_pass_reaching_step import STATS, check, np_stats, recorded


def test_eval_mode_training_with_frozen_batchnorm_records_deltas() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 1))
    model[1].running_mean.normal_()
    for p in model[1].parameters():
        p.requires_grad_(False)
    model.eval()  # frozen BatchNorm: running statistics, no batch statistics
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(12, 4)
    with Probe(model, opt, options=ProbeOptions(delta_stats=STATS)) as probe:
        opt.zero_grad()
        z = model[0](x)
        z.retain_grad()
        bn = model[1](z)
        bn.retain_grad()
        model[3](model[2](bn)).square().mean().backward()
        opt.step()
    frame = probe.frame()
    check(recorded(frame, "0", R.DELTA), np_stats(z.grad.numpy()))
    check(recorded(frame, "1", R.DELTA), np_stats(bn.grad.numpy()))
    check(recorded(frame, "1", R.ACTIVATION), {k: v for k, v in np_stats(bn.detach().numpy()).items()
                                               if k in (R.MEAN, R.STD)})
